"""Sphinx configuration of the generated fastpath-tcp specification.

The pages under ``_generated/`` are written at every build by the local extension
``_ext/specdocs.py`` from the live definitions in ``spec/``, ``reference/``, ``conformance/``
and ``fastpath/``; only the overview and the how-to pages are written by hand.
Build with ``fastpath docs`` or ``sphinx-build -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
for entry in (DOCS / "_ext", REPO):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

project = "fastpath-tcp"
author = "the fastpath-tcp authors"
copyright = "the fastpath-tcp authors; Apache-2.0"
release = "0.1.0"

extensions = ["sphinx.ext.graphviz", "specdocs"]

exclude_patterns = ["_build", "_ext", "README.md", "**/.gitignore"]
default_role = "literal"
nitpicky = False
pygments_style = "sphinx"

graphviz_output_format = "svg"
graphviz_dot_args = ["-Gfontname=DejaVu Sans", "-Nfontname=DejaVu Sans",
                     "-Efontname=DejaVu Sans"]

html_theme = "alabaster"
html_title = "fastpath-tcp specification"
html_static_path = ["_static"]
html_css_files = ["fastpath.css"]
html_show_sourcelink = False
html_theme_options = {
    "page_width": "min(1800px, 98vw)",
    "sidebar_width": "210px",
    "body_max_width": "none",
    "fixed_sidebar": False,
    "description": "Generated from the live spec, proofs and gateway",
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}

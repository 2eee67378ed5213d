"""``fastpath docs``: build the generated specification as HTML and say where it is.

The pages are generated from the live spec, proofs, gateway and CLI at every build (see
``docs/_ext/specgen.py``), with Sphinx's ``-W``: any warning (an unproved invariant, an
invariant the traceability matrix cannot place, a broken reference) fails the build.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import webbrowser
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
DEFAULT_OUT = DOCS / "_build" / "html"


def add(sub: Any) -> None:
    """Register ``fastpath docs`` on the CLI's subparsers."""
    p = sub.add_parser(
        "docs", help="build the generated specification (HTML) with Sphinx",
        description="Build the specification generated from the live spec, proofs and "
                    "gateway (every invariant is proved during the build) with "
                    "`sphinx-build -W`, and print where the HTML is. Exit 0 on success, "
                    "1 if the build fails, 2 if it cannot start.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="where to write the HTML (default: docs/_build/html)")
    p.add_argument("--open", action="store_true",
                   help="open the built index.html in a web browser")
    p.set_defaults(handler=run)


def _err(msg: str) -> None:
    print(f"fastpath: {msg}", file=sys.stderr, flush=True)


def build(out: Path, srcdir: Path = DOCS) -> int:
    """``sphinx-build -W -b html SRCDIR OUT``, in process; Sphinx's exit status."""
    from sphinx.cmd.build import build_main

    return build_main(["-W", "-b", "html", str(srcdir), str(out)])


def run(args: argparse.Namespace) -> int:
    srcdir = DOCS
    if not (srcdir / "conf.py").is_file():
        _err(f"error: no Sphinx sources at {srcdir} (docs/conf.py); `fastpath docs` needs a "
             f"source checkout installed with `pip install -e .` (run `bash setup.sh`)")
        return 2
    if shutil.which("dot") is None:
        _err("error: Graphviz's `dot` is not installed, and the state diagrams need it; "
             "install it (Debian: `apt-get install graphviz`, which setup.sh does) and rerun")
        return 2
    out: Path = args.out.resolve()
    try:
        status = build(out, srcdir)
    except Exception as exc:  # Sphinx normally reports and returns; this is the rest
        _err(f"error: the docs build crashed: {type(exc).__name__}: {exc}")
        return 1
    if status != 0:
        _err(f"error: the docs build failed (sphinx-build exit status {status}); warnings "
             f"are errors here (-W), and the messages above say what to fix")
        return 1
    index = out / "index.html"
    print(f"docs built: {index}")
    if args.open:
        try:
            opened = webbrowser.open(index.as_uri())
        except webbrowser.Error as exc:
            opened = False
            _err(f"cannot open a browser ({exc})")
        if not opened:
            print(f"no web browser found; open {index.as_uri()} yourself")
    return 0

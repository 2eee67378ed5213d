"""Sphinx extension: write ``_generated/`` from the live definitions before Sphinx reads.

Hooked on ``builder-inited``, so the generated pages are ordinary sources of the build. Two
config values (settable with ``-D``):

``fastpath_run_proofs`` (default ``True``)
    Prove every invariant during the build and print each result and its time. ``-D
    fastpath_run_proofs=0`` skips the ~6 s of solving while editing prose.
``fastpath_unproved_is_error`` (default ``True``)
    An invariant that does not prove is a build warning (so ``-W`` fails the build): the
    document must not go out claiming what the code does not hold.

Traceability defects (an invariant or conformance case that the matrix cannot place, an
unknown claim-1 ID, a handoff reason ``classify`` never returns) are always warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import specgen
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _generate(app: Sphinx) -> None:
    outdir = Path(app.srcdir) / specgen.GENERATED
    run = bool(app.config.fastpath_run_proofs)
    logger.info("fastpath: generating %s%s", outdir,
                " (proving every invariant)" if run else " (proofs not run)")
    report = specgen.generate(outdir, run=run)
    for problem in report.problems:
        logger.warning("fastpath spec: %s", problem, type="fastpath", subtype="trace")
    for problem in report.unproved:
        if app.config.fastpath_unproved_is_error:
            logger.warning("fastpath spec: %s", problem, type="fastpath", subtype="proof")
        else:
            logger.info("fastpath spec: %s", problem)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("fastpath_run_proofs", True, "env", bool)
    app.add_config_value("fastpath_unproved_is_error", True, "env", bool)
    app.connect("builder-inited", _generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

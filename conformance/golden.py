"""Golden captures: both legs of every case as the reference gateway produced them, kept in
``pcaps/golden/`` as regression input for the offline checker.

``python -m conformance.golden --report report.json [--out pcaps/golden]`` takes the pcaps
named in the JSON report of a ``fastpath conformance run --gateway reference --pcap-dir DIR
--json report.json``, gzips each capture (Wireshark and the checker read ``.pcap.gz`` as
is) and writes ``manifest.json``: per case and family, the two files, the path classes and
the number of connections the run saw. A test re-checks every entry: the checker must still
pass it and see the same paths, so a checker change that starts failing good traffic, or
stops seeing a handoff, shows up without a lab.

Cases whose captures exceed ``--max-bytes`` (the 10 MiB transfer) are left out of the
repository and listed in the manifest as such; regenerate them with a run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pcaps" / "golden"
MAX_BYTES = 4 << 20
"""Largest plain capture (per leg) kept in the repository."""


def collect(report: dict[str, Any], out: Path, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Copy the passing cases' captures of ``report`` into ``out``; return the manifest."""
    if report.get("gateway") != "reference":
        raise ValueError(f"golden captures come from the reference gateway, this report is "
                         f"from {report.get('gateway')!r}")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.pcap.gz"):
        old.unlink()
    entries, left_out = [], []
    for case in report["cases"]:
        if case["verdict"] != "pass":
            continue
        pcaps = {leg: Path(p) for leg, p in case.get("pcaps", {}).items()}
        if set(pcaps) != {"client", "server"}:
            raise ValueError(f"{case['id']} v{case['family']}: the report names no pcaps; "
                             f"run with --pcap-dir so they are kept")
        label = f"{case['id']}[v{case['family']}]"
        if any(p.stat().st_size > max_bytes for p in pcaps.values()):
            left_out.append(label)
            continue
        files = {}
        for leg, src in pcaps.items():
            dst = out / f"{src.name}.gz"
            with open(src, "rb") as fi, gzip.GzipFile(dst, "wb", mtime=0) as fo:
                shutil.copyfileobj(fi, fo)
            files[leg] = dst.name
        entries.append({"case": case["id"], "name": case["name"], "family": case["family"],
                        "client": files["client"], "server": files["server"],
                        "paths": sorted(case["paths"]), "connections": case["connections"],
                        "expected_path": case["expected_path"]})
    manifest = {"gateway": "reference", "capabilities": report["capabilities"],
                "entries": entries, "left_out": left_out, "max_bytes": max_bytes}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.golden", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", type=Path, required=True, help="JSON report of the run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where (pcaps/golden)")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    args = p.parse_args(argv)
    try:
        manifest = collect(json.loads(args.report.read_text()), args.out, args.max_bytes)
    except (OSError, ValueError, KeyError) as exc:
        print(f"conformance.golden: {exc}", file=sys.stderr)
        return 2
    print(f"{len(manifest['entries'])} golden case runs in {args.out}; left out (too large): "
          f"{', '.join(manifest['left_out']) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How long the whole conformance suite takes against a gateway (root: it builds a lab).

Target (issue 5): the full suite against the reference gateway in under 5 minutes on this
machine. Prints the wall time of the run split into lab/gateway setup, the cases (with the
slowest ones) and teardown, and the ratio to the 300 s budget; ``--gateway`` measures
another adapter the same way, ``-k`` a subset. One run, no repetitions: the suite is
dominated by real timers (handshakes, impairment delays, settle times), not by CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.cases import select
from conformance.runner import Runner, RunOptions, preflight

BUDGET = 300.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", default="reference")
    p.add_argument("-k", dest="pattern")
    p.add_argument("--tshark", action="store_true",
                   help="include tshark's second opinion (off: it is not part of a verdict)")
    p.add_argument("--json", type=Path, help="write the numbers here")
    args = p.parse_args(argv)
    why = preflight()
    if why:
        print(f"bench_conformance: {why}", file=sys.stderr)
        return 2
    marks: list[tuple[str, float]] = []

    def progress(msg: str) -> None:
        marks.append((msg, time.monotonic()))

    cases = select(args.pattern)
    t0 = time.monotonic()
    suite = Runner(RunOptions(gateway=args.gateway, tshark=args.tshark), progress).run(cases)
    total = time.monotonic() - t0
    first_case = next((t for m, t in marks if m.startswith("[1/")), t0)
    in_cases = sum(r.seconds for r in suite.results)
    slow = sorted(suite.results, key=lambda r: r.seconds, reverse=True)[:5]
    counts = suite.counts()
    print(f"gateway {args.gateway}: {len(suite.results)} case runs "
          f"({counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip, "
          f"{counts['error']} error)")
    print(f"  total            {total:7.1f} s   = {total / BUDGET:.2f}x of the {BUDGET:.0f} s "
          f"budget")
    print(f"  setup (lab, gw)  {first_case - t0:7.1f} s")
    print(f"  cases            {in_cases:7.1f} s   (stimulus + captures, per case)")
    print(f"  checking, rest   {total - (first_case - t0) - in_cases:7.1f} s")
    print("  slowest: " + ", ".join(f"{r.label} {r.seconds:.1f} s" for r in slow))
    if args.json:
        args.json.write_text(json.dumps({"gateway": args.gateway, "total_s": total,
                                         "budget_s": BUDGET, "ratio": total / BUDGET,
                                         "counts": counts}, indent=2) + "\n")
    return 0 if suite.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

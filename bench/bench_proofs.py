"""Time every real proof against the 30 s budget for a full ``fastpath verify``.

Each round runs every registered invariant once against the real model; the report gives the
median per proof and the median of the round totals, so one noisy round does not decide it.
A benchmark, not a test: it exits 1 only if a proof does not hold (its time would mean nothing),
never for being slow.

    .venv/bin/python bench/bench_proofs.py [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import z3

from spec.invariants import Status, all_invariants, run

BUDGET_S = 30.0
"""Target wall time for proving every invariant once (``fastpath verify``)."""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds to run (default 3)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write a JSON report here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    invs = all_invariants()
    if not invs:
        print("bench: no invariants are registered; add proofs under spec/proofs/ first",
              file=sys.stderr)
        return 2
    seconds: dict[str, list[float]] = {inv.name: [] for inv in invs}
    failed: dict[str, str] = {}
    totals: list[float] = []
    for r in range(1, args.rounds + 1):
        total = 0.0
        for inv in invs:
            res = run(inv)
            seconds[inv.name].append(res.seconds)
            total += res.seconds
            if res.status is not Status.PROVED:
                failed[inv.name] = res.status.value
        totals.append(total)
        print(f"round {r}/{args.rounds}: {total:.2f} s", file=sys.stderr, flush=True)

    medians = {name: statistics.median(ts) for name, ts in seconds.items()}
    total_median = statistics.median(totals)
    ratio = total_median / BUDGET_S
    width = max(len(n) for n in medians)
    print(f"{'invariant':<{width}}  median s")
    for name, med in sorted(medians.items(), key=lambda kv: -kv[1]):
        note = f"  ({failed[name]}!)" if name in failed else ""
        print(f"{name:<{width}}  {med:8.3f}{note}")
    print(f"total {total_median:.2f} s = {ratio:.2f}x of the {BUDGET_S:.0f} s budget "
          f"(median of {args.rounds} round{'s' if args.rounds != 1 else ''})")

    if args.json is not None:
        report = {
            "rounds": args.rounds,
            "budget_seconds": BUDGET_S,
            "total_median_seconds": round(total_median, 4),
            "budget_ratio": round(ratio, 4),
            "round_totals_seconds": [round(t, 4) for t in totals],
            "proofs": [{"name": n, "median_seconds": round(medians[n], 4),
                        "seconds": [round(t, 4) for t in seconds[n]],
                        "status": failed.get(n, "proved")} for n in medians],
            "python": platform.python_version(),
            "z3": z3.get_version_string(),
            "machine": platform.machine(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if failed:
        print(f"bench: not proved: {', '.join(failed)}; these timings are not meaningful",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

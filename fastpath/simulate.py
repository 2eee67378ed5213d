"""``fastpath simulate``: the reference gateway core on the in-memory network, scenario by
scenario (no root, no sockets), with a verdict per scenario."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reference.gateway import scenarios


def add(sub: Any) -> None:
    p = sub.add_parser("simulate", help="run the gateway core on the in-memory network",
                       description=__doc__)
    p.add_argument("names", nargs="*", metavar="SCENARIO",
                   help="scenarios to run (default: all; see --list)")
    p.add_argument("--json", action="store_true", help="print only a JSON list on stdout")
    p.add_argument("--seed", type=int, default=1, help="impairment seed (default 1)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for sc in scenarios.SCENARIOS.values():
            print(f"{sc.name:28s} {sc.expect_path:6s} {sc.expect_reason:24s} {sc.description}")
        return 0
    unknown = [n for n in args.names if n not in scenarios.SCENARIOS]
    if unknown:
        print(f"fastpath: unknown scenario(s) {', '.join(unknown)}; known: "
              f"{', '.join(scenarios.SCENARIOS)}", file=sys.stderr)
        return 2
    names = args.names or list(scenarios.SCENARIOS)

    def progress(r: scenarios.ScenarioResult) -> None:
        if not args.json:
            print(f"[{names.index(r.name) + 1}/{len(names)}] {r.name} ... {r.verdict} "
                  f"({r.seconds:.2f} s)", file=sys.stderr, flush=True)

    results = scenarios.run_all(names, seed=args.seed, progress=progress)
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=2))
    else:
        print(f"{'scenario':28s} {'path':6s} {'handoff reason':24s} {'c->s':>9s} {'s->c':>10s} "
              f"{'byte-exact':10s} verdict")
        for r in results:
            print(f"{r.name:28s} {r.path:6s} {r.reason:24s} {r.bytes_client_to_server:9d} "
                  f"{r.bytes_server_to_client:10d} {'yes' if r.byte_exact else 'NO':10s} "
                  f"{r.verdict}" + ("" if r.verdict == "pass" else f"  ({r.detail})"))
        failed = sum(r.verdict != "pass" for r in results)
        print(f"{len(results) - failed} passed, {failed} failed")
    return 0 if all(r.verdict == "pass" for r in results) else 1

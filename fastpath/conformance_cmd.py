"""``fastpath conformance``: run the two-sided conformance suite against a gateway, or check
captures of both legs offline.

* ``list``: the case catalog (ID, name, what it serves, stimulus).
* ``run --gateway NAME``: builds the lab, starts the gateway under test (``reference``,
  ``haproxy-http``, ``haproxy-tcp``, ``nginx-http``, ``nginx-stream``, ``netfilter``,
  ``command``; or ``memory``: the scripted cases against the reference core in memory, no
  root), runs the cases on IPv4 and IPv6 with captures of both legs, judges every trace,
  prints a verdict table; ``--junit``/``--json`` write reports; exit 1 if a case failed.
* ``check --client-leg A.pcap --server-leg B.pcap``: the trace checker alone, for captures
  taken anywhere (a hardware box, a production tap); ``--policy`` judges server selection.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fastpath.cli import CliError

GATEWAY_HELP = ("gateway under test: reference, haproxy-http, haproxy-tcp, nginx-http, "
                "nginx-stream, netfilter, command (with --command), or memory (scripted cases "
                "against the reference core in memory, no root)")


def add(sub: Any) -> None:
    p = sub.add_parser("conformance", help="run the conformance suite or check captures",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="conformance_command", metavar="ACTION", required=True)

    lp = csub.add_parser("list", help="list the cases")
    lp.add_argument("-k", dest="pattern", metavar="PATTERN",
                    help="only cases whose ID, name or title contains PATTERN (a,b: either)")
    lp.add_argument("--json", action="store_true", help="print JSON")
    lp.set_defaults(handler=run_list)

    rp = csub.add_parser("run", help="run the cases against a gateway (root, except memory)")
    rp.add_argument("--gateway", default="reference", metavar="NAME", help=GATEWAY_HELP)
    rp.add_argument("--command", metavar="CMD",
                    help="for --gateway command: the program to start in the gateway "
                         "namespace (shell words); see docs/conformance for its environment")
    rp.add_argument("--gateway-kernel", choices=("out", "routing"), default=None,
                    help="for --gateway command: keep the gateway namespace's kernel out of "
                         "the traffic (raw-socket gateways, default) or let it route "
                         "(kernel-socket gateways)")
    rp.add_argument("--caps", metavar="LIST",
                    help="for --gateway command: its capabilities, a comma list of l7, "
                         "splices, delayed_binding, zero_window_synack (a SYN proxy) "
                         "(default: none, i.e. an L4 proxy)")
    rp.add_argument("--policy", type=Path, metavar="FILE",
                    help="routing policy (gateway config TOML); default: "
                         "conformance/policy.toml")
    rp.add_argument("-k", dest="pattern", metavar="PATTERN",
                    help="only cases whose ID, name or title contains PATTERN (a,b: either)")
    rp.add_argument("--family", choices=("4", "6", "both"), default="both",
                    help="IP version(s) to run every case on (default both)")
    rp.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    rp.add_argument("--json", type=Path, metavar="FILE", help="write the JSON report here")
    rp.add_argument("--pcap-dir", type=Path, metavar="DIR",
                    help="keep both legs' pcaps of every case here (default: a temporary "
                         "directory, kept only if a case fails)")
    rp.add_argument("--no-tshark", dest="tshark", action="store_false",
                    help="skip tshark's second opinion")
    rp.add_argument("--lab-name", metavar="NAME", help="name of the lab (default: unique)")
    rp.set_defaults(handler=run_suite)

    cp = csub.add_parser("check", help="judge captures of both legs offline")
    cp.add_argument("--client-leg", type=Path, required=True, metavar="PCAP",
                    help="capture of the client-side link (pcap or pcapng)")
    cp.add_argument("--server-leg", type=Path, metavar="PCAP",
                    help="capture of the server-side link; without it only per-leg "
                         "properties are judged")
    cp.add_argument("--policy", type=Path, metavar="FILE",
                    help="routing policy (gateway config TOML) for cross.selection")
    cp.add_argument("--gateway-kind", metavar="NAME",
                    help="capabilities of a known kind (reference, haproxy-http, haproxy-tcp,"
                         " nginx-http, nginx-stream, netfilter); default reference")
    cp.add_argument("--caps", metavar="LIST",
                    help="capabilities as a comma list of l7, splices, delayed_binding, "
                         "zero_window_synack (overrides --gateway-kind; 'none' for an L4 "
                         "proxy)")
    cp.add_argument("--json", type=Path, metavar="FILE", help="write the JSON report here")
    cp.add_argument("--no-tshark", dest="tshark", action="store_false",
                    help="skip tshark's second opinion")
    cp.add_argument("--workers", type=int, choices=(1, 2, 3), default=None, metavar="N",
                    help="processes: 2 verifies checksums in a forked worker while the "
                         "main one decodes (the default with two or more CPUs), 1 forces "
                         "one process, 3 also runs the per-leg judges in forked children")
    cp.set_defaults(handler=run_check)


def _caps(text: str | None, kind: str | None) -> Any:
    from conformance.properties import KINDS, Capabilities

    if text is not None:
        words = {w.strip() for w in text.split(",") if w.strip()} - {"none"}
        known = {"l7", "splices", "delayed_binding", "zero_window_synack"}
        if words - known:
            raise CliError(f"unknown capabilities {', '.join(sorted(words - known))}; use a "
                           f"comma list of {', '.join(sorted(known))}, or none")
        return Capabilities(l7="l7" in words, splices="splices" in words,
                            delayed_binding="delayed_binding" in words,
                            opens_window="zero_window_synack" not in words)
    if kind is None:
        return None
    if kind not in KINDS:
        raise CliError(f"unknown gateway kind {kind!r}; use one of {', '.join(KINDS)}, or "
                       f"--caps")
    return KINDS[kind]


def run_list(args: argparse.Namespace) -> int:
    from conformance.cases import select

    cases = select(args.pattern)
    if args.json:
        print(json.dumps([{"id": c.id, "name": c.name, "title": c.title,
                           "description": c.description, "serves": list(c.serves),
                           "stimulus": c.stimulus.describe(), "kind": c.stimulus.kind,
                           "focus": list(c.focus), "needs": sorted(c.needs)}
                          for c in cases], indent=2))
        return 0
    for c in cases:
        print(f"{c.id}  {c.name:<20} {c.title}")
        print(f"      {c.stimulus.describe()}")
        print(f"      serves {', '.join(c.serves)}; judges {', '.join(c.focus)}")
    print(f"{len(cases)} cases, each on IPv4 and IPv6")
    return 0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_suite(args: argparse.Namespace) -> int:
    from conformance import report
    from conformance.cases import select
    from conformance.runner import DEFAULT_POLICY, RunOptions, preflight

    cases = select(args.pattern)
    if not cases:
        raise CliError(f"no case matches {args.pattern!r}; see `fastpath conformance list`")
    families = (4, 6) if args.family == "both" else (int(args.family),)
    caps = _caps(args.caps, None)
    if args.gateway == "command" and not args.command:
        raise CliError("--gateway command needs --command 'PROGRAM ARGS'")
    if args.gateway != "command" and (args.command or args.caps or args.gateway_kernel):
        raise CliError("--command, --caps and --gateway-kernel go with --gateway command")
    policy = args.policy or DEFAULT_POLICY
    if not policy.is_file():
        raise CliError(f"policy {policy} is not a readable file; pass --policy FILE")
    opts = RunOptions(gateway=args.gateway, families=families, policy=policy,
                      pcap_dir=args.pcap_dir, tshark=args.tshark, lab_name=args.lab_name,
                      capabilities=caps, gateway_kernel=args.gateway_kernel or "out")
    if args.command:
        import shlex

        opts.command = shlex.split(args.command)
    if args.gateway == "memory":
        from conformance.memory import MemoryRunner

        runner: Any = MemoryRunner(opts, progress=_say)
    else:
        why = preflight()
        if why:
            raise CliError(why)
        from conformance.adapters import AdapterError
        from conformance.policy import ConfigError
        from conformance.runner import Runner

        try:
            runner = Runner(opts, progress=_say)
        except (AdapterError, ConfigError) as exc:
            raise CliError(str(exc)) from None
    try:
        suite = runner.run(cases)
    except RuntimeError as exc:  # AdapterError, LabError, CaptureError: setup failed
        raise CliError(f"{exc}") from None
    print(report.render(suite))
    for note in suite.notes:
        _say(note)
    if args.json:
        report.write_json(suite, args.json)
        _say(f"JSON report: {args.json}")
    if args.junit:
        report.write_junit(suite, args.junit)
        _say(f"JUnit XML: {args.junit}")
    return 0 if suite.ok else 1


def run_check(args: argparse.Namespace) -> int:
    from conformance.checker import check_pcaps
    from conformance.pcapio import PcapError
    from conformance.policy import ConfigError, load_policy

    caps = _caps(args.caps, args.gateway_kind)
    policy = None
    if args.policy is not None:
        try:
            policy = load_policy(args.policy, l7=caps.l7 if caps is not None else True)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"cannot read policy {args.policy} ({exc.strerror or exc})") \
                from None
    for path in (args.client_leg, args.server_leg):
        if path is not None and not path.is_file():
            raise CliError(f"{path} is not a readable file")
    try:
        rep = check_pcaps(args.client_leg, args.server_leg, policy=policy, capabilities=caps,
                          tshark=args.tshark, workers=args.workers)
    except PcapError as exc:
        raise CliError(str(exc)) from None
    print(rep.render())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rep.as_json(), indent=2) + "\n")
        _say(f"JSON report: {args.json}")
    return 0 if rep.ok else 1

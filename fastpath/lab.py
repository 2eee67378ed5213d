"""``fastpath lab up|down|status``: the network-namespace lab from the shell (as root).

``up`` builds the lab (or repairs an existing one) and leaves it running for other commands;
``--hold SECONDS`` instead keeps it for at most that long and removes it on exit. Ctrl-C or
SIGTERM while building or holding removes it too. ``down`` removes it; ``status`` shows it
(exit 0 if it is fully up, 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from fastpath.cli import CliError
from reference.lab import GATEWAY_KERNELS, Lab, LabError
from reference.lab.topology import MAX_SERVERS

DEFAULT_NAME = "fplab"
"""The CLI's lab, so that ``up`` and a later ``down`` agree without ``--name``."""
MAX_HOLD = 7 * 24 * 3600.0


def add(sub: Any) -> None:
    p = sub.add_parser("lab", help="build, show or remove the network-namespace lab (root)",
                       description=__doc__)
    actions = p.add_subparsers(dest="lab_action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=DEFAULT_NAME,
                        help=f"the lab's name, prefix of its namespaces (default {DEFAULT_NAME})")
    common.add_argument("--json", action="store_true", help="print only JSON on stdout")
    up = actions.add_parser("up", parents=[common], help="build or repair the lab",
                            description="Build the lab, or repair and reconfigure an existing "
                                        "one with the same name; servers already running "
                                        "are kept.")
    up.add_argument("--servers", type=int, default=3, metavar="N",
                    help=f"number of HTTP servers, 1..{MAX_SERVERS} (default 3)")
    up.add_argument("--gateway-kernel", choices=GATEWAY_KERNELS, default="out",
                    help="'out': the gateway namespace's kernel drops everything (for the "
                         "user-space gateway); 'routing': it routes, VIP on lo (baselines). "
                         "Default out")
    up.add_argument("--impair", action="store_true",
                    help="put a seeded impairment node on each leg (transparent until "
                         "Lab.set_impairment sets loss, duplication, reordering, delay)")
    up.add_argument("--offload", choices=("on", "off"),
                    help="set TX checksum/SG/TSO/GSO on every veth end (default: leave on)")
    up.add_argument("--hold", type=float, metavar="SECONDS",
                    help="stay in the foreground at most SECONDS, then remove the lab "
                         "(Ctrl-C removes it sooner)")
    actions.add_parser("down", parents=[common], help="remove the lab (idempotent)")
    actions.add_parser("status", parents=[common], help="show the lab")
    p.set_defaults(handler=run)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so a killed ``lab up`` still takes its lab down."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _down_uninterrupted(lab: Lab) -> None:
    """A second Ctrl-C must not cut the teardown short, so both signals wait until it ends."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        lab.down()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def run(args: argparse.Namespace) -> int:
    try:
        if args.lab_action == "up":
            return _up(args)
        lab = Lab(args.name)
        if args.lab_action == "down":
            return _down(lab, args.json)
        return _status(lab, args.json)
    except LabError as exc:
        raise CliError(str(exc)) from exc


def _up(args: argparse.Namespace) -> int:
    if args.hold is not None and not 0 < args.hold <= MAX_HOLD:
        raise CliError(f"--hold takes 0 < SECONDS <= {MAX_HOLD:g}, not {args.hold:g}")
    lab = Lab(args.name, servers=args.servers, gateway_kernel=args.gateway_kernel,
              impair=args.impair)
    with _sigterm_interrupts():
        lab.up()  # removes the lab itself if interrupted or failing
        try:
            if args.offload:
                lab.set_offload(args.offload == "on")
            status = lab.status()
            print(json.dumps(status, indent=2) if args.json else _describe(lab, status),
                  flush=True)
            if args.hold is not None:
                if not args.json:
                    print(f"holding for at most {args.hold:g} s; Ctrl-C removes the lab now",
                          flush=True)
                time.sleep(args.hold)
        except BaseException:
            _down_uninterrupted(lab)
            raise
        if args.hold is not None:
            _down_uninterrupted(lab)
            if not args.json:
                print(f"lab {lab.name} removed")
    return 0


def _down(lab: Lab, as_json: bool) -> int:
    existing = lab.existing_namespaces()
    lab.down()
    if as_json:
        print(json.dumps({"name": lab.name, "removed": existing}))
    elif existing:
        print(f"lab {lab.name} removed ({', '.join(existing)})")
    else:
        print(f"lab {lab.name}: nothing to remove")
    return 0


def _status(lab: Lab, as_json: bool) -> int:
    status = lab.status()
    if as_json:
        print(json.dumps(status, indent=2))
    elif not status["exists"]:
        print(f"lab {lab.name} does not exist; create it with `fastpath lab up --name "
              f"{lab.name}`")
    else:
        print(_describe(lab, status))
    return 0 if status["up"] else 1


def _describe(lab: Lab, status: dict[str, Any]) -> str:
    """The namespaces, addresses and servers, and how to use them."""
    state = "up" if status["up"] else "NOT fully up (run `fastpath lab up` to repair)"
    lines = [f"lab {lab.name}: {state}"]
    for role, info in status["namespaces"].items():
        first = True
        for ifname, iface in info["interfaces"].items():
            if ifname == "lo" and set(iface["addresses"]) <= {"127.0.0.1/8"}:
                continue
            addrs = ", ".join(iface["addresses"]) or "-"
            head = f"{role:8s} {info['netns']:12s}" if first else " " * 21
            lines.append(f"  {head} {ifname:5s} {addrs:18s} {iface['mac'] or '':17s} "
                         f"{iface['state'] or ''}")
            first = False
    for srv in status["servers"]:
        proc = f"pid {srv['pid']}" if srv["alive"] else f"NOT RUNNING (log: {srv['log']})"
        lines.append(f"  http server {srv['name']}: {srv['address']}:{srv['port']} in "
                     f"{srv['netns']}, {proc}")
    gw = status["gateway"] or {}
    if gw.get("mode") == "out":
        drops = ", ".join(f"{dev} {n}" for dev, n in (gw.get("ingress_drop_packets") or {}).items())
        lines.append("gateway kernel: out (nftables netdev ingress drop on gc and gs, frames "
                     f"dropped so far: {drops}; ip_forward=0; static neighbours to gc/gs)")
    elif gw:
        lines.append(f"gateway kernel: {gw.get('mode')} (ip_forward="
                     f"{int(bool(gw.get('ip_forward')))}, VIP on lo: {gw.get('vip_on_lo')})")
    servers = status["servers"]
    if servers:
        s = servers[0]
        via = ("routed by the gateway kernel" if gw.get("mode") == "routing"
               else "dropped until a gateway runs in " + lab.gateway_ns)
        lines += ["try:",
                  f"  ip netns exec {s['netns']} curl -s http://{s['address']}/size/10"
                  f"    # a server, from its own namespace",
                  f"  ip netns exec {lab.client_ns} curl -s http://{s['address']}/size/10"
                  f"    # from the client: {via}",
                  f"  ip netns exec {lab.gateway_ns} <gateway command>"
                  f"    # the gateway: AF_PACKET on gc and gs, VIP {status['vip']}"]
    lines.append(f"remove it: fastpath lab down --name {lab.name}")
    return "\n".join(lines)

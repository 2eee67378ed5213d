"""Benchmark of the gateway core, fast path beside normal path in one run.

1. Segments/s through the core: the same 10 MiB response on the in-memory network, once
   spliced by the fast path and once proxied by the normal path after a handoff; only the
   time spent inside ``Gateway.handle``/``handle_timer`` is counted (the virtual endpoints'
   TCP stacks are not the gateway's cost). Fast and normal runs alternate for ``--rounds``
   rounds and the median ratio is reported with its range.
2. Memory per idle established session: N sessions brought to an idle established state on
   each path with crafted packets, then left idle for ``CoreSettings.compact_after`` (the
   gateway's timer runs once at that time: an idle spliced session is compacted into a row),
   measured with tracemalloc: everything the gateway allocated for them, tables included.

Targets from the issue: spliced relay >= 2x normal-path relay; fast-path memory per session
<= 1/20 of the normal path's.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference.gateway import codec, scenarios
from reference.gateway.actions import Emit
from reference.gateway.config import default_config
from reference.gateway.gateway import CoreSettings, Gateway
from reference.gateway.sim import ClientPlan, Network, ServerBehaviour
from spec.segment import ACK, PSH, SYN
from spec.topology import SERVER_IPS, SERVER_PORT, VIP, VPORT

REQ = b"GET /x HTTP/1.1\r\nHost: vip.example\r\n\r\n"


class TimedGateway(Gateway):
    """Counts packets and the time spent inside the core."""

    core_seconds = 0.0
    packets = 0

    def handle(self, leg, packet, *, now, checksum_verified=False):
        t = time.perf_counter()
        out = super().handle(leg, packet, now=now, checksum_verified=checksum_verified)
        self.core_seconds += time.perf_counter() - t
        self.packets += 1
        return out

    def handle_timer(self, *, now):
        t = time.perf_counter()
        out = super().handle_timer(now=now)
        self.core_seconds += time.perf_counter() - t
        return out


def relay_rate(size: int, split: bool) -> dict[str, float]:
    gw = TimedGateway(default_config(), core=CoreSettings(rto_min=0.2, linger=0.5))
    net = Network(gw, seed=3)
    for ip in SERVER_IPS:
        net.add_server(ip, SERVER_PORT, ServerBehaviour(response_size=lambda h: size))
    plan = ClientPlan(request=scenarios.request(size=size), writes=(10,) if split else ())
    net.start_client(VIP, VPORT, plan)
    net.run(until=600.0)
    got = len(net.results[plan.port].received)
    if got < size:
        raise SystemExit(f"transfer incomplete: {got} < {size}")
    return {"packets": gw.packets, "core_seconds": gw.core_seconds,
            "segments_per_s": gw.packets / gw.core_seconds,
            "MB_per_s": size / gw.core_seconds / 1e6,
            "path": "normal" if gw.stats.sessions_handed_off else "fast"}


def _isn(laddr: bytes, lport: int, raddr: bytes, rport: int, now: float) -> int:
    return 1_000_000 if lport == 80 else 5_000_000


def idle_sessions(n: int, normal: bool, idle: bool = True) -> float:
    """Bytes of Python heap per idle established session on one path (``idle=False``: just
    established, before any time has passed, so not compacted yet)."""
    gw = Gateway(default_config(), isn_source=_isn)
    client, vip = codec.addr_bytes("198.51.100.2"), codec.addr_bytes(VIP)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        port = 10000 + i

        def c(seq: int, ack: int, flags: int, payload: bytes = b"", port: int = port
              ) -> list:
            return gw.handle("client", codec.build(
                version=4, src=client, dst=vip, sport=port, dport=80, seq=seq, ack=ack,
                flags=flags, window=65535, payload=payload, mss=1460 if flags & SYN else None),
                now=0.0)

        c(100, 0, SYN)
        c(101, 1_000_001, ACK)
        out = c(101, 1_000_001, ACK | PSH, REQ[:5] if normal else REQ)
        if normal:
            out = c(106, 1_000_001, ACK | PSH, REQ[5:])
        syn = [codec.parse(a.packet) for a in out if isinstance(a, Emit) and a.leg == "server"]
        s = syn[0]
        srv = gw.handle("server", codec.build(
            version=4, src=s.dst, dst=s.src, sport=s.dport, dport=s.sport, seq=9000,
            ack=s.seq + 1, flags=SYN | ACK, window=65535, mss=1460), now=0.0)
        data = [codec.parse(a.packet) for a in srv if isinstance(a, Emit) and a.leg == "server"
                and codec.parse(a.packet).payload]
        if data:  # the server ACKs the request
            d = data[-1]
            gw.handle("server", codec.build(
                version=4, src=s.dst, dst=s.src, sport=s.dport, dport=s.sport, seq=9001,
                ack=d.seq + len(d.payload), flags=ACK, window=65535), now=0.0)
    if idle:  # no packet for that long: the sessions are idle
        gw.handle_timer(now=CoreSettings().compact_after or 0.0)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    live = gw.live_fast() + len(gw.normal_by_client)
    if live != n:
        raise SystemExit(f"expected {n} live sessions, found {live}")
    return used / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10 * 1024 * 1024)
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3,
                    help="relay rounds, fast and normal interleaved; the median is reported "
                         "(one run moves by 20%% on a shared VM)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    rounds = []
    for _ in range(a.rounds):
        pair = relay_rate(a.size, split=False), relay_rate(a.size, split=True)
        assert pair[0]["path"] == "fast" and pair[1]["path"] == "normal"
        rounds.append(pair)
    ratios = sorted(f["segments_per_s"] / n["segments_per_s"] for f, n in rounds)
    fast, normal = sorted(rounds, key=lambda r: r[0]["segments_per_s"]
                          / r[1]["segments_per_s"])[len(rounds) // 2]
    mem_fast = idle_sessions(a.sessions, normal=False)
    mem_normal = idle_sessions(a.sessions, normal=True)
    mem_active = idle_sessions(a.sessions, normal=False, idle=False)
    ratio = ratios[len(ratios) // 2]
    mratio = mem_normal / mem_fast
    print(f"relay of a {a.size / 2**20:.0f} MiB response (core time only; median of "
          f"{a.rounds} interleaved round{'s' if a.rounds > 1 else ''})")
    print(f"  {'path':8s} {'packets':>9s} {'core s':>8s} {'segments/s':>11s} {'MB/s':>7s}")
    for name, r in (("fast", fast), ("normal", normal)):
        print(f"  {name:8s} {r['packets']:9.0f} {r['core_seconds']:8.2f} "
              f"{r['segments_per_s']:11.0f} {r['MB_per_s']:7.1f}")
    spread = f"; rounds {ratios[0]:.2f}-{ratios[-1]:.2f}x" if a.rounds > 1 else ""
    print(f"  spliced / normal = {ratio:.2f}x (target >= 2x{spread})")
    print(f"memory per idle established session ({a.sessions} sessions each)")
    print(f"  fast   {mem_fast:9.0f} B\n  normal {mem_normal:9.0f} B")
    print(f"  normal / fast = {mratio:.1f}x (target >= 20x)")
    print(f"  (a fast-path session not yet idle, before compaction: {mem_active:.0f} B)")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "relay": {"fast": fast, "normal": normal, "ratio": ratio,
                      "round_ratios": ratios},
            "memory": {"fast": mem_fast, "normal": mem_normal, "ratio": mratio,
                       "fast_before_compaction": mem_active}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

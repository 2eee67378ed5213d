"""A second opinion: tshark's TCP expert analysis of each leg, compared across the legs.

Wireshark's analysis is independent of ours, so an anomaly it flags on one leg of a
connection and not on the other (say retransmissions on the client leg only, or a lost
segment the server never saw) points at what the gateway did between them. Informational:
the finding passes whenever tshark ran, with the differences in its detail, and is
"unknown" when tshark is not installed or fails.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from conformance.flows import Conn, Leg
from conformance.properties import Finding, Property, register

PID = "tshark.second_opinion"
ANOMALIES = ("retransmission", "fast_retransmission", "spurious_retransmission",
             "out_of_order", "lost_segment", "ack_lost_segment", "duplicate_ack",
             "zero_window", "zero_window_probe", "window_full", "keep_alive", "reused_ports")
"""``tcp.analysis.*`` flags compared (window updates are routine, so left out)."""
TIMEOUT = 600.0


def find_tshark() -> str | None:
    return shutil.which("tshark")


def expert(path: str | Path, tshark: str | None = None) -> dict[int, Counter[str]]:
    """Frame number -> anomalies tshark flagged on it (frames without any are absent).

    Raises ``RuntimeError`` when tshark is missing or fails.
    """
    exe = tshark or find_tshark()
    if exe is None:
        raise RuntimeError("tshark is not installed")
    fields = ["frame.number"] + [f"tcp.analysis.{a}" for a in ANOMALIES]
    cmd = [exe, "-r", str(path), "-n", "-Y", "tcp.analysis.flags", "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"tshark on {path}: {e}") from None
    if res.returncode != 0:
        err = "; ".join(line for line in res.stderr.splitlines()
                        if "root" not in line.lower())[:300]
        raise RuntimeError(f"tshark on {path} exited {res.returncode}: {err}")
    out: dict[int, Counter[str]] = {}
    for line in res.stdout.splitlines():
        cols = line.split("\t")
        if not cols or not cols[0].isdigit():
            continue
        got = Counter(a for a, v in zip(ANOMALIES, cols[1:], strict=False) if v.strip())
        if got:
            out[int(cols[0])] = got
    return out


def per_conn(leg: Leg, flags: dict[int, Counter[str]]) -> dict[int, Counter[str]]:
    """Connection number -> anomaly counts, by the frames each connection owns."""
    owner = {s.index: c.number for c in leg.conns for s in c.segs}
    out: dict[int, Counter[str]] = {}
    for frame, got in flags.items():
        n = owner.get(frame)
        if n is not None:
            out.setdefault(n, Counter()).update(got)
    return out


def compare(client: Counter[str], server: Counter[str]) -> list[str]:
    """The anomaly kinds one leg has and the other does not."""
    out = []
    for a in ANOMALIES:
        if client[a] and not server[a]:
            out.append(f"{a} x{client[a]} on the client leg only")
        elif server[a] and not client[a]:
            out.append(f"{a} x{server[a]} on the server leg only")
    return out


def second_opinion(legs: dict[str, Leg], pairs: list[Any]) -> Finding:
    """Run tshark on each leg and report, per paired connection, one-sided anomalies.

    ``pairs`` are ``cross_checks.Pair`` objects (``.client``/``.server`` connections); with
    no server leg the per-leg anomaly totals are reported instead.
    """
    exe = find_tshark()
    if exe is None:
        return Finding(PID, "unknown", "tshark is not installed")
    try:
        flags = {name: per_conn(lg, expert(lg.path, exe)) for name, lg in legs.items()}
    except RuntimeError as e:
        return Finding(PID, "unknown", str(e))
    totals = {name: sum(f.values(), Counter()) for name, f in flags.items()}
    summary = "; ".join(f"{name} leg: " + (", ".join(f"{k} x{v}" for k, v in sorted(t.items()))
                                           or "no anomalies") for name, t in totals.items())
    if "server" not in legs or not pairs:
        return Finding(PID, "pass", f"tshark ran ({summary})")
    diffs = []
    packets: list[tuple[str, int]] = []
    for p in pairs:
        c: Conn | None = getattr(p, "client", None)
        s: Conn | None = getattr(p, "server", None)
        if c is None or s is None:
            continue
        got = compare(flags["client"].get(c.number, Counter()),
                      flags["server"].get(s.number, Counter()))
        if got:
            diffs.append(f"{c.name} / {s.name}: " + ", ".join(got))
            packets += [("client", c.first_frame()), ("server", s.first_frame())]
    if not diffs:
        return Finding(PID, "pass", f"no one-sided anomalies ({summary})")
    shown = "; ".join(diffs[:10]) + (f"; ... {len(diffs) - 10} more" if len(diffs) > 10
                                     else "")
    return Finding(PID, "pass", f"{len(diffs)} pair(s) with one-sided anomalies: {shown} "
                   f"({summary})", tuple(packets[:20]))


def _judge(*_: Any) -> Finding:
    return Finding(PID, "n/a", "run by the checker over whole captures (check_pcaps(tshark="
                   "True)), not per connection")


register(Property(PID, "tshark's TCP expert analysis, one-sided anomalies", "info",
                  ("informational",), _judge))

__all__ = ["ANOMALIES", "PID", "compare", "expert", "find_tshark", "per_conn",
           "second_opinion"]

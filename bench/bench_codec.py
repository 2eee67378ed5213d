"""Frames per second of the gateway codec against dpkt, to decide which one each job uses.

The project's rule is to use dpkt wherever it is as fast and our own ``struct`` code only where
this benchmark shows it is faster, so every row ends with the choice it justifies. Jobs, for
a 52-byte pure ACK (a 66-byte Ethernet frame) and a 1500-byte data segment, both IPv4 with
NOP NOP TS like Linux sends:

* parse: ours vs ``dpkt.ip.IP`` + ``parse_opts``, with the TCP checksum checked (dpkt has
  no such check: it is added with ``dpkt.in_cksum_add``) and without;
* parse + rewrite (addresses, ports, seq, ack): ours in place with incremental checksums vs
  dpkt setting fields, zeroing both checksums and ``bytes()`` (ours also verifies the TCP
  checksum on parse, dpkt does not); ours with a full checksum recompute is shown too, to
  justify the incremental update;
* build: ``codec.build`` vs constructing ``dpkt.ip.IP(data=dpkt.tcp.TCP(...))`` (dpkt gets the
  option bytes ready-made: it has no option builder);
* checksum of 1480 bytes: ``int.from_bytes`` modulo 0xffff vs ``dpkt.in_cksum`` vs ``array``.

The rewritten bytes of both implementations are compared before timing; a mismatch exits 1.

    .venv/bin/python bench/bench_codec.py [-n 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import array
import platform
import struct
import sys
import time
from collections.abc import Callable, Sequence

import dpkt

from reference.gateway import codec

SRC, DST = bytes((10, 0, 0, 1)), bytes((192, 0, 2, 10))
NEW_SRC, NEW_DST = bytes((10, 1, 0, 2)), bytes((10, 2, 0, 7))
SEQ_SHIFT = 0x9E3779B9
M32 = 0xFFFFFFFF
FIELDS = dict(version=4, src=SRC, dst=DST, sport=40000, dport=80, seq=0xFFFFFF00,
              ack=123456789, flags=0x10, window=502, tsval=3_000_000_000, tsecr=77)


def frames() -> dict[str, bytes]:
    return {"ACK 52B": codec.build(**FIELDS),
            "data 1500B": codec.build(**FIELDS, payload=bytes(range(256)) * 5 + b"x" * 168)}


def rate(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Best-of-``repeat`` calls per second: the least disturbed run is the fairest."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def ours_rewrite(frame: bytes, full: bool = False) -> bytearray:
    buf = bytearray(frame)
    p = codec.parse(buf)
    codec.rewrite(buf, p, src=NEW_SRC, dst=NEW_DST, sport=p.dport, dport=p.sport,
                  seq=(p.seq + SEQ_SHIFT) & M32, ack=(p.ack + SEQ_SHIFT) & M32, window=p.window,
                  partial_csum=full)
    if full:
        codec.finish_checksum(buf, p)
    return buf


def dpkt_parse(frame: bytes) -> object:
    ip = dpkt.ip.IP(frame)
    tcp = ip.data
    return tcp.sport, tcp.seq, tcp.ack, dpkt.tcp.parse_opts(tcp.opts), tcp.data


def dpkt_parse_verify(frame: bytes) -> object:
    """dpkt does not check the TCP checksum on parse; this adds the check the way dpkt would."""
    ip = dpkt.ip.IP(frame)
    tcp = ip.data
    seg = frame[ip.hl * 4:ip.len]
    s = dpkt.in_cksum_add(0, struct.pack(">4s4sxBH", ip.src, ip.dst, 6, len(seg)))
    if dpkt.in_cksum_done(dpkt.in_cksum_add(s, seg)):
        raise ValueError("bad TCP checksum")
    return tcp.sport, tcp.seq, tcp.ack, dpkt.tcp.parse_opts(tcp.opts), tcp.data


def dpkt_rewrite(frame: bytes) -> bytes:
    ip = dpkt.ip.IP(frame)
    tcp = ip.data
    ip.src, ip.dst = NEW_SRC, NEW_DST
    tcp.sport, tcp.dport = tcp.dport, tcp.sport
    tcp.seq, tcp.ack = (tcp.seq + SEQ_SHIFT) & M32, (tcp.ack + SEQ_SHIFT) & M32
    ip.sum = tcp.sum = 0
    return bytes(ip)


def dpkt_build(payload: bytes, opts: bytes) -> bytes:
    f = FIELDS
    tcp = dpkt.tcp.TCP(sport=f["sport"], dport=f["dport"], seq=f["seq"], ack=f["ack"],
                       flags=f["flags"], win=f["window"], off=(20 + len(opts)) // 4, opts=opts,
                       data=payload)
    ip = dpkt.ip.IP(src=SRC, dst=DST, p=6, ttl=64, id=0, df=1, data=tcp)
    return bytes(ip)


def array_cksum(data: bytes) -> int:
    a = array.array("H", data)
    if sys.byteorder == "little":
        a.byteswap()
    s = sum(a)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def rows(n: int, repeat: int) -> list[tuple[str, str, float, float | None]]:
    """(job, frame, ours/s, dpkt/s or None when the row has no dpkt counterpart)."""
    out: list[tuple[str, str, float, float | None]] = []
    for name, frame in frames().items():
        if bytes(ours_rewrite(frame)) != dpkt_rewrite(frame):
            raise SystemExit(f"bench: ours and dpkt disagree on the rewritten {name} frame")
        if bytes(ours_rewrite(frame, full=True)) != dpkt_rewrite(frame):
            raise SystemExit(f"bench: full-checksum rewrite disagrees on the {name} frame")
        p = codec.parse(frame)
        opts = frame[40:20 + p.tcp_header_len]
        payload = bytes(p.payload)
        if dpkt_build(payload, opts) != frame:
            raise SystemExit(f"bench: dpkt builds a different {name} frame")
        out.append(("parse, TCP csum checked", name,
                    rate(lambda f=frame: codec.parse(f), n, repeat),
                    rate(lambda f=frame: dpkt_parse_verify(f), n, repeat)))
        out.append(("parse, no TCP csum", name,
                    rate(lambda f=frame: codec.parse(f, verify_checksum=False), n, repeat),
                    rate(lambda f=frame: dpkt_parse(f), n, repeat)))
        d_rw = rate(lambda f=frame: dpkt_rewrite(f), n, repeat)
        out.append(("parse+rewrite, incremental", name,
                    rate(lambda f=frame: ours_rewrite(f), n, repeat), d_rw))
        out.append(("parse+rewrite, full csum", name,
                    rate(lambda f=frame: ours_rewrite(f, full=True), n, repeat), d_rw))
        kw = dict(FIELDS, payload=payload)
        out.append(("build", name, rate(lambda kw=kw: codec.build(**kw), n, repeat),
                    rate(lambda p=payload, o=opts: dpkt_build(p, o), n, repeat)))
    blob = frames()["data 1500B"][20:]
    if not codec.internet_checksum(blob) == dpkt.in_cksum(blob) == array_cksum(blob):
        raise SystemExit("bench: checksum implementations disagree")
    out.append(("checksum int.from_bytes", "1480B",
                rate(lambda: codec.internet_checksum(blob), n, repeat),
                rate(lambda: dpkt.in_cksum(blob), n, repeat)))
    out.append(("checksum array.array", "1480B", rate(lambda: array_cksum(blob), n, repeat),
                None))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50_000, help="calls per measurement (default 50000)")
    ap.add_argument("--repeat", type=int, default=1, help="best of this many runs (default 1)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        ap.error("-n and --repeat must be at least 1")
    print(f"codec vs dpkt {dpkt.__version__}, Python {platform.python_version()}, "
          f"n={args.n}, best of {args.repeat}")
    header = f"{'job':<28} {'frame':<11} {'ours/s':>10} {'dpkt/s':>10} {'ours/dpkt':>9}  use"
    print(header)
    print("-" * len(header))
    for job, frame, ours, theirs in rows(args.n, args.repeat):
        if theirs is None:
            print(f"{job:<28} {frame:<11} {ours:>10,.0f} {'-':>10} {'-':>9}  -")
            continue
        ratio = ours / theirs
        print(f"{job:<28} {frame:<11} {ours:>10,.0f} {theirs:>10,.0f} {ratio:>8.1f}x  "
              f"{'ours' if ratio >= 1 else 'dpkt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Packets per second of the offline trace checker beside tshark's TCP analysis.

Generates two leg captures (client leg and server leg of many spliced HTTP connections:
handshakes, requests, responses of 1 to 200 segments with timestamps, delayed ACKs, a
retransmission in about one connection in fifty, FIN exchanges), writes them once into a
temporary directory, then times in the same run:

* ours: ``conformance.checker.check_pcaps`` on both legs (decode, rebuild, every per-leg
  and cross-leg judge), once in its default mode (on a machine with two CPUs or more: two
  processes, the TCP/IPv4 checksums verified in a forked worker while the main process
  decodes; tshark itself uses one CPU) and once forced to one process (``workers=1``);
  ``--judges-in-children`` adds ``workers=3`` (the per-leg judges in forked children too);
* tshark: ``tshark -r FILE -q -z expert`` on each leg (dissection with TCP sequence
  analysis and the expert summary), the nearest tshark equivalent.

Both rates count the packets of both files over the wall time of the whole job.

    .venv/bin/python bench/bench_checker.py [--packets 1000000] [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from conformance.pcapio import PcapWriter

M32 = 0xFFFFFFFF
MAC_C, MAC_GC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
MAC_GS, MAC_S = bytes.fromhex("020000000003"), bytes.fromhex("020000000004")
VIP = bytes((192, 0, 2, 10))
GW_S = bytes((203, 0, 113, 1))
SERVERS = [bytes((203, 0, 113, 11 + i)) for i in range(3)]
MSS = 1448
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP_TS = struct.Struct("!HHIIBBHHHBBBBII")  # header + NOP NOP TS
_TCP_SYN = struct.Struct("!HHIIBBHHHBBHBBBBIIBBBB")  # + MSS, SACKOK, TS, NOP, WS
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10


def _fold(s: int) -> int:
    return (s - 1) % 0xFFFF + 1 if s else 0


class _Ends:
    """One leg's endpoints of one connection: builds Ethernet frames with valid checksums."""

    def __init__(self, a: bytes, pa: int, ma: bytes, b: bytes, pb: int, mb: bytes) -> None:
        self.a, self.pa, self.b, self.pb = a, pa, b, pb
        self.eth = (mb + ma + b"\x08\x00", ma + mb + b"\x08\x00")  # from a, from b
        aw = int.from_bytes(a, "big") % 0xFFFF + int.from_bytes(b, "big") % 0xFFFF
        self.ip_base = 0x4500 + 0x4000 + 0x4006 + aw
        self.pseudo = aw + 6

    def frame(self, from_a: bool, seq: int, ack: int, flags: int, win: int, tsval: int,
              tsecr: int, payload: bytes = b"", ipid: int = 0, syn: bool = False) -> bytes:
        src, dst = (self.a, self.b) if from_a else (self.b, self.a)
        sp, dp = (self.pa, self.pb) if from_a else (self.pb, self.pa)
        if syn:
            hdr = _TCP_SYN.pack(sp, dp, seq, ack, 10 << 4, flags, win, 0, 0, 2, 4, 1460, 4,
                                2, 8, 10, tsval, tsecr, 1, 3, 3, 7)
        else:
            hdr = _TCP_TS.pack(sp, dp, seq, ack, 8 << 4, flags, win, 0, 0, 1, 1, 8, 10,
                               tsval, tsecr)
        seg = hdr + payload
        n = len(seg)
        s = int.from_bytes(seg, "big") << (8 if n & 1 else 0)
        c = ~_fold(s + self.pseudo + n) & 0xFFFF
        total = 20 + n
        ipc = ~_fold(self.ip_base + total + ipid) & 0xFFFF
        ip = _IP.pack(0x45, 0, total, ipid, 0x4000, 64, 6, ipc, src, dst)
        return b"".join((self.eth[0 if from_a else 1], ip, seg[:16], c.to_bytes(2, "big"),
                         seg[18:]))


def _conn_events(rng: random.Random, k: int, t0: float, client_w: PcapWriter,
                 server_w: PcapWriter, body: bytes) -> int:
    """Write one spliced connection to both legs; returns the packets written."""
    cip = bytes((198, 51, 100, 2 + k % 200))
    cport = 1024 + (k * 7) % 60000
    gport = 32768 + k % 28000
    cl = _Ends(cip, cport, MAC_C, VIP, 80, MAC_GC)
    sv = _Ends(GW_S, gport, MAC_GS, SERVERS[k % 3], 80, MAC_S)
    ic, ig, isv = rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32)
    tsc, tsg, tss = rng.getrandbits(31), rng.getrandbits(31), rng.getrandbits(31)
    size = min(int(rng.paretovariate(1.2) * 3000), 290_000)
    req = (f"GET /size/{size} HTTP/1.1\r\nHost: vip.example\r\nUser-Agent: bench\r\n"
           f"\r\n").encode()
    resp = (f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").encode() + body[:size]
    t = t0
    n = 0
    cw, sw = client_w.write, server_w.write

    def c(from_client: bool, rs: int, ra: int, flags: int, payload: bytes = b"",
          syn: bool = False) -> None:
        nonlocal n
        if from_client:
            f = cl.frame(True, (ic + rs) & M32, (ig + ra) & M32 if flags & ACK else 0, flags,
                         502, tsc, tsg if flags & ACK else 0, payload, n & 0xFFFF, syn)
        else:
            f = cl.frame(False, (ig + rs) & M32, (ic + ra) & M32, flags, 509, tsg, tsc,
                         payload, n & 0xFFFF, syn)
        cw(t, f)
        n += 1

    def s(from_gw: bool, rs: int, ra: int, flags: int, payload: bytes = b"",
          syn: bool = False) -> None:
        nonlocal n
        if from_gw:
            f = sv.frame(True, (ig + rs) & M32, (isv + ra) & M32 if flags & ACK else 0,
                         flags, 502, tsg, tss if flags & ACK else 0, payload, n & 0xFFFF, syn)
        else:
            f = sv.frame(False, (isv + rs) & M32, (ig + ra) & M32, flags, 509, tss, tsg,
                         payload, n & 0xFFFF, syn)
        sw(t, f)
        n += 1

    dt = 0.00002
    c(True, 0, 0, SYN, syn=True)
    t += dt
    c(False, 0, 1, SYN | ACK, syn=True)
    t += dt
    c(True, 1, 1, ACK)
    t += dt
    c(True, 1, 1, PSH | ACK, req)
    t += dt
    s(True, 0, 0, SYN, syn=True)
    t += dt
    s(False, 0, 1, SYN | ACK, syn=True)
    t += dt
    s(True, 1, 1, ACK)
    s(True, 1, 1, PSH | ACK, req)
    t += dt
    q = len(req) + 1
    s(False, 1, q, ACK)
    c(False, 1, q, ACK)
    off = 0
    segs = 0
    while off < len(resp):
        chunk = resp[off:off + MSS]
        t += dt
        tss += 1
        tsg += 1
        s(False, 1 + off, q, ACK, chunk)
        c(False, 1 + off, q, ACK, chunk)
        if rng.random() < 0.02:  # a retransmission on both legs
            t += dt
            c(False, 1 + off, q, ACK, chunk)
            s(False, 1 + off, q, ACK, chunk)
        off += len(chunk)
        segs += 1
        if segs % 2 == 0 or off >= len(resp):
            t += dt
            tsc += 1
            c(True, q, 1 + off, ACK)
            s(True, q, 1 + off, ACK)
    end = 1 + len(resp)
    t += dt
    s(False, end, q, FIN | ACK)
    c(False, end, q, FIN | ACK)
    t += dt
    tsc += 1
    c(True, q, end + 1, FIN | ACK)
    s(True, q, end + 1, FIN | ACK)
    t += dt
    c(False, end + 1, q + 1, ACK)
    s(False, end + 1, q + 1, ACK)
    return n


def generate(directory: Path, packets: int, seed: int = 1) -> tuple[Path, Path, int]:
    """Write ``bench-client.pcap`` and ``bench-server.pcap`` holding at least ``packets``
    packets together; returns the paths and the packet count."""
    rng = random.Random(seed)
    body = b"".join(f"{i * 8:08x}".encode() for i in range(300_000 // 8 + 1))
    cp, sp = directory / "bench-client.pcap", directory / "bench-server.pcap"
    total = k = 0
    with PcapWriter(cp) as cw, PcapWriter(sp) as sw:
        t = 1_700_000_000.0
        while total < packets:
            total += _conn_events(rng, k, t, cw, sw, body)
            k += 1
            t += 0.0005
    return cp, sp, total


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000,
                    help="packets over both legs (default 1000000)")
    ap.add_argument("--quick", action="store_true", help="100000 packets, for a smoke run")
    ap.add_argument("--keep", type=Path, help="write the captures here and keep them")
    ap.add_argument("--no-tshark", action="store_true", help="time only the checker")
    ap.add_argument("--profile", action="store_true", help="cProfile the checker run")
    ap.add_argument("--no-parallel", action="store_true",
                    help="time only the forced one-process mode (workers=1)")
    ap.add_argument("--judges-in-children", action="store_true",
                    help="also time workers=3 (checksum worker and forked per-leg judges)")
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else args.packets
    tmp = None
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        directory = args.keep
    else:
        tmp = tempfile.mkdtemp(prefix="bench-checker-")
        directory = Path(tmp)
    try:
        t0 = time.perf_counter()
        cp, sp, total = generate(directory, n)
        size = (cp.stat().st_size + sp.stat().st_size) / 1e6
        print(f"generated {total:,} packets ({size:,.0f} MB, two legs) in "
              f"{time.perf_counter() - t0:.1f} s; Python {platform.python_version()}")
        from conformance.checker import check_pcaps, default_workers

        runs: list[tuple[str, int | None]] = []
        if not args.no_parallel and not args.profile:
            if default_workers() > 1:
                runs.append(("checker default, 2 processes (checksums in a worker)", None))
            else:
                runs.append(("checker default, 1 process (no second CPU or no fork)", None))
        runs.append(("checker forced to 1 process (workers=1)", 1))
        if args.judges_in_children and not args.profile:
            runs.append(("checker, workers=3 (+ per-leg judges in children)", 3))
        timed: list[tuple[str, float]] = []
        packets = 0
        for label, workers in runs:
            t0 = time.perf_counter()
            if args.profile:
                import cProfile
                import pstats
                prof = cProfile.Profile()
                rep = prof.runcall(check_pcaps, cp, sp, workers=workers)
                pstats.Stats(prof).sort_stats("tottime").print_stats(15)
            else:
                rep = check_pcaps(cp, sp, workers=workers)
            ours = time.perf_counter() - t0
            packets = sum(rep.packets.values())
            fails = len(rep.failures())
            print(f"{label:<54} {ours:8.2f} s {packets / ours:>12,.0f} packets/s  "
                  f"({len(rep.conns)} connections, {len(rep.pairs)} pairs, {fails} failures)")
            if fails:
                print(rep.render(max_failures=5))
            timed.append((label, ours))
            del rep
        tshark = shutil.which("tshark")
        if args.no_tshark or tshark is None:
            print("tshark: not run" + ("" if tshark else " (not installed)"))
            return 0
        t0 = time.perf_counter()
        for p in (cp, sp):
            subprocess.run([tshark, "-r", str(p), "-q", "-z", "expert"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        theirs = time.perf_counter() - t0
        print(f"{'tshark -q -z expert (1 process)':<54} {theirs:8.2f} s {packets / theirs:>12,.0f} "
              f"packets/s")
        for label, ours in timed:
            print(f"ratio ({label} / tshark packets per second): {theirs / ours:.2f}x "
                  f"(target >= 1.0x)")
        return 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""The checker's fast paths give what the general code gives.

* The fast decode path's checksum (IPv4 header and TCP segment summed together, the payload
  converted apart and folded) against a plain RFC 1071 implementation, on random frames of
  every parity, valid, with a wrong TCP checksum, a wrong IPv4 header checksum, or an
  offloaded partial sum.
* The same frames decoded by the fast path and by the general decoder (``_Decoder.frame``).
* In-order reassembly (pieces joined once) against the general reassembly.
* ``leg_checks.analyse`` with and without its fast path on the golden captures and the
  violations corpus.
* Memory-mapped captures against the same capture read as bytes (gzipped).
"""

from __future__ import annotations

import gzip
import json
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.flows import (
    ACK,
    PSH,
    SYN,
    Conn,
    Seg,
    _Decoder,
    _reassemble,
    _reassemble_any,
    read_leg,
    rebuild,
)
from conformance.leg_checks import analyse
from conformance.pcapio import open_capture, write_pcap

ROOT = Path(__file__).resolve().parents[2]


def rfc1071(data: bytes) -> int:
    """The Internet checksum's ones'-complement sum, word by word (RFC 1071 §4.1)."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _frame(src: bytes, dst: bytes, payload: bytes, *, options: bytes = b"", kind: str = "ok",
           flags: int = PSH | ACK, ipid: int = 7) -> bytes:
    """An Ethernet/IPv4/TCP frame; ``kind`` breaks a checksum or writes an offloaded one."""
    thl = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 123456, 654321, (thl // 4) << 4, flags, 502,
                      0, 0) + options + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    if kind == "partial":
        csum = rfc1071(pseudo)  # what an offloading NIC leaves for itself to finish
    else:
        csum = ~rfc1071(pseudo + tcp) & 0xFFFF
        if kind == "bad":
            csum ^= 0x0101
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ipid, 0x4000, 64, 6, 0, src, dst)
    ipc = ~rfc1071(ip) & 0xFFFF
    if kind == "bad-ip":
        ipc ^= 0x0040
    ip = ip[:10] + struct.pack("!H", ipc) + ip[12:]
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + tcp


def _expected(frame: bytes) -> str:
    """The verdict from RFC 1071 sums of the header and of pseudo-header plus segment."""
    ip, tcp = frame[14:34], frame[34:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    if rfc1071(ip) != 0xFFFF:
        return "bad-ip"
    if rfc1071(pseudo + tcp) == 0xFFFF:
        return "ok"
    field = struct.unpack_from("!H", tcp, 16)[0]
    return "partial" if field == rfc1071(pseudo) else "bad"


payloads = st.one_of(st.binary(max_size=40), st.binary(min_size=90, max_size=1600),
                     st.integers(0, 9000).map(lambda n: random.Random(n).randbytes(n)))
options = st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(range(8)),
                           b"\x02\x04\x05\xb4\x01\x03\x03\x07",
                           b"\x01\x01\x08\x0a\xff\xff\xff\xff\0\0\0\1\x01\x01\x04\x02"])


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(st.tuples(payloads, options,
                                 st.sampled_from(["ok", "ok", "bad", "bad-ip", "partial"]),
                                 st.booleans()), min_size=1, max_size=12),
       src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4))
def test_fast_checksum_matches_rfc1071_and_the_general_decoder(
        tmp_path_factory: pytest.TempPathFactory,
        frames: list[tuple[bytes, bytes, str, bool]], src: bytes, dst: bytes) -> None:
    built = []
    for payload, opts, kind, reverse in frames:
        a, b = (dst, src) if reverse else (src, dst)
        built.append(_frame(a, b, payload, options=opts, kind=kind))
    path = write_pcap(tmp_path_factory.mktemp("cs") / "x.pcap",
                      [(1.0 + i, f) for i, f in enumerate(built)])
    leg = read_leg(path)
    segs = sorted((s for c in leg.conns for s in c.segs), key=lambda s: s.index)
    assert [s.checksum for s in segs] == [_expected(f) for f in built]
    dec = _Decoder(path)
    for f, s in zip(built, segs, strict=True):
        g = dec.frame(f, 1, 0, len(f), len(f), s.index, s.time)
        assert g is not None
        assert [getattr(g, k) for k in Seg.__slots__] == [getattr(s, k) for k in Seg.__slots__]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=400), seed=st.integers(0, 2**32),
       base=st.integers(0, 2**32 - 1), n=st.integers(1, 25))
def test_in_order_reassembly_matches_the_general_one(data: bytes, seed: int, base: int,
                                                     n: int) -> None:
    rng = random.Random(seed)
    segs = []
    for i in range(n):
        a = rng.randrange(-20, len(data))
        b = a + rng.randrange(0, 60)
        p = bytes(data[max(a, 0):b]) if rng.random() < 0.8 else rng.randbytes(max(b - a, 0))
        if a < 0 and rng.random() < 0.5:
            p = bytes(-a) + p
        else:
            a = max(a, 0)
        flags = SYN | ACK if i == 0 and rng.random() < 0.1 else PSH | ACK
        seq = (base + a - (1 if flags & SYN else 0)) & 0xFFFFFFFF
        segs.append(Seg(i + 1, float(i), "a", "b", 1, 2, seq, 0, flags, 0, p, None, None,
                        False, (), None, (), "ok", 40 + len(p), False))
    if rng.random() < 0.5:  # mostly in order, as captures are
        segs.sort(key=lambda s: (s.seq - base) & 0xFFFFFFFF)
    c1, c2 = Conn("client", ("a", 1), ("b", 2)), Conn("client", ("a", 1), ("b", 2))
    for c in (c1, c2):
        c.segs = list(segs)
        c.from_client = bytearray(b"\x01" * len(segs))
    got = _reassemble(c1, 1, base, "c2s")
    want = _reassemble_any(c2, iter(segs), base, "c2s", bytearray(), 0)
    assert got == want
    assert c1.conflicts == c2.conflicts and c1.problems == c2.problems


def _corpus() -> list[Path]:
    out = []
    manifest = ROOT / "pcaps" / "golden" / "manifest.json"
    if manifest.exists():
        for e in json.loads(manifest.read_text())["entries"]:
            out += [ROOT / "pcaps" / "golden" / e[leg] for leg in ("client", "server")]
    for d in sorted((ROOT / "pcaps" / "violations").glob("*/")):
        out += sorted(d.glob("*.pcap"))
    return out


def test_analyse_fast_path_gives_the_same_findings() -> None:
    """On every connection of the corpus, and on each with its first segments (the
    handshake) cut off or every third segment dropped, as a capture may miss them."""
    paths = _corpus()
    assert paths
    for path in paths:
        for c in read_leg(path).conns:
            for keep in (lambda i: True, lambda i: i >= 2, lambda i: i % 3 != 1):
                idx = [i for i in range(len(c.segs)) if keep(i)]
                if not idx:
                    continue
                c.segs, c.from_client = [c.segs[i] for i in idx], \
                    bytearray(c.from_client[i] for i in idx)
                c.problems = []
                rebuild(c)
                fast = analyse(c)
                c.judged = None
                slow = analyse(c, fast=False)
                assert {k: (f.verdict, f.detail, f.packets) for k, f in fast.items()} == \
                    {k: (f.verdict, f.detail, f.packets) for k, f in slow.items()}, \
                    (path, c.name)


def test_memory_mapped_capture_reads_like_bytes(tmp_path: Path) -> None:
    frames = [(1.0 + i, _frame(b"\x0a\0\0\1", b"\x0a\0\0\2", bytes(i * 7 % 300)))
              for i in range(50)]
    plain = write_pcap(tmp_path / "p.pcap", frames)
    zipped = tmp_path / "p.pcap.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = open_capture(plain), open_capture(zipped)
    assert isinstance(b.data, bytes) and not isinstance(a.data, bytes)
    assert [(r, a.data[r[3]:r[3] + r[4]]) for r in a.records()] == \
        [(r, b.data[r[3]:r[3] + r[4]]) for r in b.records()]
    la, lb = read_leg(plain), read_leg(zipped)
    assert [[(s.index, s.payload, s.checksum) for s in c.segs] for c in la.conns] == \
        [[(s.index, s.payload, s.checksum) for s in c.segs] for c in lb.conns]
    a.close()
    b.close()

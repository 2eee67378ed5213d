"""The packet codec against independent oracles: a naive checksum written here, and dpkt.

Crafted packets pin every DropReason; Hypothesis covers round trips, in-place rewrites
(full and CHECKSUM_PARTIAL) and a bounded fuzz that ``parse`` raises nothing but DecodeError.
"""

from __future__ import annotations

import struct
from typing import Any

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.gateway import codec
from reference.gateway.codec import (
    DecodeError,
    DropReason,
    build,
    csum_replace16,
    csum_replace32,
    finish_checksum,
    internet_checksum,
    parse,
    rewrite,
    tcp_checksum,
)
from spec.segment import ACK, PSH, SYN

A4, B4 = bytes((10, 0, 0, 1)), bytes((192, 0, 2, 10))
A6, B6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "11" * 12)


# --- independent oracles ---------------------------------------------------------------------

def ref_sum(data: bytes) -> int:
    """RFC 1071 by the book: 16-bit words, end-around carry after every addition."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += data[i] << 8 | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_checksum(data: bytes) -> int:
    return ~ref_sum(data) & 0xFFFF


def ref_pseudo(src: bytes, dst: bytes, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, 6, length)
    return src + dst + struct.pack("!I3xB", length, 6)


def ref_tcp_checksum(src: bytes, dst: bytes, seg: bytes) -> int:
    return ref_checksum(ref_pseudo(src, dst, len(seg)) + seg)


def fix_ip(pkt: bytes | bytearray) -> bytes:
    """Recompute the IPv4 header checksum so a crafted packet gets past it."""
    b = bytearray(pkt)
    ihl = (b[0] & 0xF) * 4
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", ref_checksum(bytes(b[:ihl])))
    return bytes(b)


def fix_tcp(pkt: bytes | bytearray, off: int, end: int | None = None) -> bytes:
    b = bytearray(pkt)
    src, dst = (b[12:16], b[16:20]) if b[0] >> 4 == 4 else (b[8:24], b[24:40])
    end = len(b) if end is None else end
    b[off + 16:off + 18] = b"\0\0"
    b[off + 16:off + 18] = struct.pack("!H", ref_tcp_checksum(bytes(src), bytes(dst),
                                                              bytes(b[off:end])))
    return bytes(b)


def v4(**kw: Any) -> bytes:
    return build(**{"version": 4, "src": A4, "dst": B4, "sport": 40000, "dport": 80,
                    "seq": 1, "ack": 2, "flags": ACK, "window": 1000, **kw})


def v6(**kw: Any) -> bytes:
    return v4(**{"version": 6, "src": A6, "dst": B6, **kw})


def with_ext(pkt6: bytes, headers: list[tuple[int, bytes]]) -> bytes:
    """Insert IPv6 extension headers (type, whole header with a placeholder next-header byte)."""
    nh_chain = [t for t, _ in headers] + [pkt6[6]]
    body = b"".join(bytes((nh_chain[i + 1],)) + h[1:] for i, (_, h) in enumerate(headers))
    plen = len(pkt6) - 40 + len(body)
    return pkt6[:4] + struct.pack("!HB", plen, nh_chain[0]) + pkt6[7:40] + body + pkt6[40:]


def v4_frag(pkt: bytes, *, offset: int, mf: bool, data: bytes) -> bytes:
    head = bytearray(pkt[:20])
    struct.pack_into("!HHH", head, 2, 20 + len(data), 7, (0x2000 if mf else 0) | offset // 8)
    return fix_ip(bytes(head) + data)


# --- strategies ------------------------------------------------------------------------------

u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
sack_blocks = st.lists(st.tuples(u32, u32), max_size=4).map(tuple)


@st.composite
def packet_kw(draw: st.DrawFn, version: int | None = None) -> dict[str, Any]:
    version = draw(st.sampled_from((4, 6))) if version is None else version
    alen = 4 if version == 4 else 16
    ts = draw(st.none() | st.tuples(u32, u32))
    return {
        "version": version, "src": draw(st.binary(min_size=alen, max_size=alen)),
        "dst": draw(st.binary(min_size=alen, max_size=alen)), "sport": draw(u16),
        "dport": draw(u16), "seq": draw(u32), "ack": draw(u32),
        "flags": draw(st.integers(0, 0xFFF)), "window": draw(u16),
        "payload": draw(st.binary(max_size=80)), "mss": draw(st.none() | u16),
        "wscale": draw(st.none() | st.integers(0, 255)), "sack_permitted": draw(st.booleans()),
        "tsval": None if ts is None else ts[0], "tsecr": None if ts is None else ts[1],
        "sack": draw(sack_blocks), "ttl": draw(st.integers(0, 255)), "ip_id": draw(u16),
        "df": draw(st.booleans()), "urg_ptr": draw(u16),
    }


def fitting_sack(kw: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """How many SACK blocks Linux's layout has room for, computed from the layout rules."""
    ts = kw["tsval"] is not None
    used = ((4 if kw["mss"] is not None else 0) + (12 if ts else 4 if kw["sack_permitted"] else 0)
            + (4 if kw["wscale"] is not None else 0))
    return kw["sack"][:max(0, (40 - used - 4) // 8)]


# --- checksums -------------------------------------------------------------------------------

@given(st.binary(max_size=300))
def test_internet_checksum_matches_reference(data: bytes) -> None:
    assert internet_checksum(data) == ref_checksum(data)


@given(packet_kw())
def test_tcp_checksum_matches_reference_v4_and_v6(kw: dict[str, Any]) -> None:
    pkt = build(**kw)
    p = parse(pkt)
    seg = bytearray(pkt[p.tcp_offset:])
    stored = struct.unpack_from("!H", seg, 16)[0]
    assert tcp_checksum(kw["src"], kw["dst"], seg) == 0  # verifying includes the field
    seg[16:18] = b"\0\0"
    assert tcp_checksum(kw["src"], kw["dst"], seg) == stored
    assert stored == ref_tcp_checksum(kw["src"], kw["dst"], bytes(seg))


def test_rfc1624_example() -> None:
    assert csum_replace16(0xDD2F, 0x5555, 0x3285) == 0x0000


@given(st.binary(min_size=8, max_size=64).filter(lambda b: len(b) % 2 == 0), st.data())
def test_csum_replace_matches_recompute(data: bytes, d: st.DataObject) -> None:
    words = len(data) // 2
    i = d.draw(st.integers(0, words - 2)) * 2
    new16, new32 = d.draw(u16), d.draw(u32)
    old16, old32 = struct.unpack_from("!H", data, i)[0], struct.unpack_from("!I", data, i)[0]
    c = ref_checksum(data)
    m16 = data[:i] + struct.pack("!H", new16) + data[i + 2:]
    m32 = data[:i] + struct.pack("!I", new32) + data[i + 4:]
    # Bit-exact, except that all-zero data has two encodings (0xffff, 0): never so in TCP,
    # whose pseudo-header holds the protocol number 6.
    assert csum_replace16(c, old16, new16) == ref_checksum(m16) or not any(m16)
    assert csum_replace32(c, old32, new32) == ref_checksum(m32) or not any(m32)


# --- build / parse round trips ---------------------------------------------------------------

@settings(max_examples=500)
@given(packet_kw())
def test_build_parse_round_trip(kw: dict[str, Any]) -> None:
    pkt = build(**kw)
    p = parse(pkt)
    for name in ("version", "src", "dst", "sport", "dport", "seq", "ack", "flags", "window",
                 "mss", "wscale", "sack_permitted", "tsval", "tsecr", "ttl", "urg_ptr"):
        assert getattr(p, name) == kw[name], name
    assert bytes(p.payload) == kw["payload"]
    assert p.sack == fitting_sack(kw)
    assert p.unknown_options == () and p.first_fragment and not p.is_fragment
    assert p.tcp_header_len <= 60 and p.total_len == len(pkt)
    if kw["version"] == 4:
        assert (p.ip_id, p.df) == (kw["ip_id"], kw["df"])
    seg = p.to_segment()
    assert (seg.seq, seg.ack, seg.payload, seg.sack) == (kw["seq"], kw["ack"], kw["payload"],
                                                         p.sack)


@given(packet_kw())
def test_dpkt_agrees(kw: dict[str, Any]) -> None:
    pkt = build(**kw)
    ip = dpkt.ip.IP(pkt) if kw["version"] == 4 else dpkt.ip6.IP6(pkt)
    tcp = ip.data
    assert isinstance(tcp, dpkt.tcp.TCP)
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.win) == (
        kw["sport"], kw["dport"], kw["seq"], kw["ack"], kw["window"])
    assert tcp.flags == kw["flags"] & 0x1FF and bytes(tcp.data) == kw["payload"]
    opts = dict(dpkt.tcp.parse_opts(tcp.opts))
    p = parse(pkt)
    if p.tsval is not None:
        assert opts[dpkt.tcp.TCP_OPT_TIMESTAMP] == struct.pack("!II", p.tsval, p.tsecr)
    if p.mss is not None:
        assert opts[dpkt.tcp.TCP_OPT_MSS] == struct.pack("!H", p.mss)
    # dpkt recomputes both checksums when they are zero; it must land on the same bytes.
    if kw["version"] == 4:
        ip.sum = 0
    tcp.sum = 0
    assert bytes(ip) == pkt


def test_linux_option_layouts() -> None:
    syn = parse(v4(flags=SYN, mss=1460, sack_permitted=True, tsval=1, tsecr=0, wscale=7))
    opts = v4(flags=SYN, mss=1460, sack_permitted=True, tsval=1, tsecr=0, wscale=7)[40:60]
    assert opts == bytes.fromhex("020405b4" "0402080a0000000100000000" "01030307")
    assert (syn.mss_offset, syn.ts_offset, syn.wscale_offset) == (42, 48, 59)
    data = v4(tsval=5, tsecr=6, sack=((1, 2), (3, 4), (5, 6), (7, 8)))
    assert data[40:56] == bytes.fromhex("0101080a0000000500000006" "0101051a")
    assert len(parse(data).sack) == 3 and len(data) == 20 + 60
    assert v4(sack_permitted=True)[40:] == bytes.fromhex("01010402")
    assert len(parse(v4(sack=((1, 2),) * 5)).sack) == 4


def test_build_rejects_bad_values() -> None:
    for bad in ({"version": 5}, {"src": A6}, {"sport": 70000}, {"seq": 1 << 32},
                {"payload": bytes(65516)}, {"flags": 0x1000}, {"mss": 70000},
                {"tsval": -1}, {"wscale": 256}):
        with pytest.raises(ValueError):
            v4(**bad)


def test_big_segments_accepted_regardless_of_mss() -> None:
    p = parse(v4(payload=bytes(60000), mss=536))
    assert len(p.payload) == 60000
    assert len(parse(v4(payload=bytes(65535 - 40))).payload) == 65495
    assert len(parse(v6(payload=bytes(65535 - 20))).payload) == 65515


def test_padding_after_total_length_is_ignored() -> None:
    pkt = v4(payload=b"hi")
    p = parse(pkt + b"\0" * 12)
    assert bytes(p.payload) == b"hi" and p.total_len == len(pkt)


def test_accepts_bytearray_and_memoryview() -> None:
    pkt = v6(payload=b"hello", tsval=1, tsecr=2)
    for data in (bytearray(pkt), memoryview(pkt), memoryview(b"xx" + pkt)[2:]):
        p = parse(data)
        assert bytes(p.payload) == b"hello" and p.tsecr == 2


def test_ipv4_options_and_helpers() -> None:
    pkt = bytearray(v4(payload=b"xyz"))
    pkt[0] = 0x46
    pkt = bytearray(fix_ip(pkt[:20] + b"\x01\x01\x01\x00" + pkt[20:]))
    struct.pack_into("!H", pkt, 2, len(pkt))
    p = parse(fix_ip(pkt))
    assert (p.ip_header_len, p.tcp_offset, bytes(p.payload)) == (24, 24, b"xyz")
    assert (p.src_str, p.dst_str) == ("10.0.0.1", "192.0.2.10")
    assert parse(v6()).dst_str == "2001:db8:1111:1111:1111:1111:1111:1111"


def test_ipv6_extension_headers_walked() -> None:
    hbh, dst_opts = (0, b"\0\0" + b"\x01\x04\0\0\0\0"), (60, b"\0\0" + b"\x01\x04\0\0\0\0")
    routing = (43, b"\0\0\0\0" + b"\0" * 4)  # segments left 0: final destination reached
    buf = bytearray(with_ext(v6(payload=b"abc", tsval=1, tsecr=2), [hbh, routing, dst_opts]))
    p = parse(buf)
    assert p.tcp_offset == 64 and bytes(p.payload) == b"abc" and p.tsval == 1
    rewrite(buf, p, src=B6, dst=A6, sport=7, dport=8, seq=9, ack=10, window=11, tsecr=12)
    q = parse(bytes(buf))
    assert (q.src, q.sport, q.seq, q.tsval, q.tsecr) == (B6, 7, 9, 1, 12)


# --- fragments -------------------------------------------------------------------------------

def test_ipv4_fragments() -> None:
    whole = v4(payload=bytes(range(100)), tsval=9, tsecr=9, flags=ACK | PSH)
    seg = whole[20:]
    first = parse(v4_frag(whole, offset=0, mf=True, data=seg[:64]))
    assert first.first_fragment and first.is_fragment and first.seq == 1 and first.tsval == 9
    later = parse(v4_frag(whole, offset=64, mf=False, data=seg[64:]))
    assert not later.first_fragment and later.is_fragment and later.sport is None
    assert (later.frag_offset, bytes(later.payload)) == (64, seg[64:])
    with pytest.raises(ValueError):
        later.to_segment()


def test_ipv6_fragments() -> None:
    whole = v6(payload=bytes(100))
    seg = whole[40:]
    frag = struct.pack("!BBHI", 0, 0, 0 | 1, 99)
    first = parse(with_ext(whole[:40] + seg[:56], [(44, frag)]))
    assert first.first_fragment and first.is_fragment and first.more_fragments
    later_hdr = struct.pack("!BBHI", 0, 0, 56, 99)
    later = parse(with_ext(whole[:40] + seg[56:], [(44, later_hdr)]))
    assert not later.first_fragment and later.frag_offset == 56 and later.ip_id == 99
    atomic = parse(with_ext(whole, [(44, struct.pack("!BBHI", 0, 0, 0, 5))]))
    assert atomic.is_fragment and atomic.first_fragment and not atomic.more_fragments


# --- every drop reason -----------------------------------------------------------------------

def _bad_doff(doff: int) -> bytes:
    b = bytearray(v4())
    b[32] = doff << 4
    return fix_tcp(b, 20)


def _bad_opts(opts: bytes) -> bytes:
    b = bytearray(v4(payload=b""))
    b[32] = (20 + len(opts)) // 4 << 4
    b += opts
    struct.pack_into("!H", b, 2, len(b))
    return fix_tcp(fix_ip(b), 20)


def _ip_field(pkt: bytes, fmt: str, off: int, value: int, fix: bool = True) -> bytes:
    b = bytearray(pkt)
    struct.pack_into(fmt, b, off, value)
    return fix_ip(b) if fix and b[0] >> 4 == 4 else bytes(b)


def _flip(pkt: bytes, off: int) -> bytes:
    return pkt[:off] + bytes((pkt[off] ^ 0x40,)) + pkt[off + 1:]


CRAFTED: dict[DropReason, list[bytes]] = {
    DropReason.TRUNCATED: [b"", v4()[:19], v4()[:-1], v6()[:39], v6(payload=b"ab")[:-1],
                           v4_frag(v4(), offset=0, mf=True, data=v4()[20:36])],
    DropReason.BAD_VERSION: [b"\x55" + v4()[1:], bytes(40)],
    DropReason.BAD_HEADER_LENGTH: [_ip_field(v4(), "!B", 0, 0x44)],
    DropReason.BAD_TOTAL_LENGTH: [_ip_field(v4(), "!H", 2, 19), _ip_field(v4(), "!H", 2, 0),
                                  _ip_field(v6(), "!H", 4, 0)],
    DropReason.BAD_IP_CHECKSUM: [_ip_field(v4(), "!H", 10, 0x1234, fix=False)],
    DropReason.BAD_EXTENSION_HEADER: [
        with_ext(v6(), [(60, bytes(8)), (0, bytes(8))]),
        _ip_field(with_ext(v6(), [(60, b"\0\x05" + bytes(6))]), "!H", 4, 28),
        with_ext(v6(), [(44, bytes(8)), (44, bytes(8))])],
    DropReason.BAD_FRAGMENT: [v4_frag(v4(), offset=8, mf=False, data=bytes(16)),
                              v4_frag(v4(), offset=65528, mf=False, data=bytes(16))],
    DropReason.UNSUPPORTED: [with_ext(v6(), [(43, b"\0\0\0\x01" + bytes(4))])],
    DropReason.NOT_TCP: [_ip_field(v4(), "!B", 9, 17), _ip_field(v6(), "!B", 6, 17),
                         with_ext(v6(), [(51, bytes(8))])],
    DropReason.BAD_DATA_OFFSET: [_bad_doff(4), _bad_doff(6)],
    DropReason.BAD_OPTION: [_bad_opts(b"\x01\x01\x01\x02"), _bad_opts(b"\x08\x01\x00\x00"),
                            _bad_opts(b"\x08\x0a\x00\x00"), _bad_opts(b"\x02\x05\x05\xb4"),
                            _bad_opts(b"\x02\x04\x05\xb4\x02\x04\x05\xb4"),
                            _bad_opts(b"\x01\x01\x05\x02"), _bad_opts(b"\x05\x0b" + bytes(10)),
                            _bad_opts(b"\x1e\x00\x00\x00")],
    DropReason.BAD_CHECKSUM: [_flip(v4(payload=b"abc"), 41), _flip(v6(), 53)],
}


def test_every_drop_reason_is_crafted() -> None:
    assert set(CRAFTED) == set(DropReason)


@pytest.mark.parametrize(("reason", "pkt"),
                         [(r, p) for r, pkts in CRAFTED.items() for p in pkts])
def test_drop_reason(reason: DropReason, pkt: bytes) -> None:
    with pytest.raises(DecodeError) as exc:
        parse(pkt)
    assert exc.value.reason is reason, str(exc.value)
    assert str(exc.value).startswith(reason.name)


def test_unknown_options_recorded_and_unverified_checksum() -> None:
    p = parse(_bad_opts(b"\xfd\x02" + b"\x1e\x04\x00\x00" + b"\x01\x01"))
    assert p.unknown_options == (253, 30)
    assert bytes(parse(_flip(v4(payload=b"abc"), 41), verify_checksum=False).payload) == b"a\x22c"


# --- fuzz ------------------------------------------------------------------------------------

def _parse_or_decode_error(data: bytes) -> None:
    for verify in (True, False):
        try:
            p = parse(data, verify_checksum=verify)
        except DecodeError as e:
            assert isinstance(e.reason, DropReason)
            continue
        end = p.tcp_offset + (p.tcp_header_len or 0) + len(p.payload)
        assert end == p.total_len <= len(data)


@st.composite
def framed_noise(draw: st.DrawFn) -> bytes:
    """Random bytes, bare or behind a valid IPv4 header or an IPv6 header whose next header is
    TCP or an extension header, so the noise reaches the extension and TCP parsers."""
    tail = draw(st.binary(max_size=120))
    kind = draw(st.sampled_from(("raw", "v4", "v6")))
    if kind == "raw":
        return draw(st.sampled_from((b"", b"\x45", b"\x4f", b"\x60"))) + tail
    if kind == "v4":
        return fix_ip(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tail), 0, 0, 64, 6, 0, A4,
                                  B4) + tail)
    nh = draw(st.sampled_from((0, 6, 43, 44, 60)))
    return struct.pack("!IHBB16s16s", 6 << 28, len(tail), nh, 64, A6, B6) + tail


@settings(max_examples=2000)
@given(framed_noise())
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_decode_error(data)


@settings(max_examples=2000)
@given(packet_kw(), st.data(), st.booleans())
def test_fuzz_single_byte_mutations(kw: dict[str, Any], d: st.DataObject, fix: bool) -> None:
    pkt = bytearray(build(**kw))
    i = d.draw(st.integers(0, len(pkt) - 1))
    pkt[i] = d.draw(st.integers(0, 255))
    if fix and kw["version"] == 4 and (pkt[0] & 0xF) >= 5:
        pkt = bytearray(fix_ip(pkt))  # get past the IP header check to reach TCP parsing
    _parse_or_decode_error(bytes(pkt))


# --- rewrite ---------------------------------------------------------------------------------

@st.composite
def rewrites(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A packet and the values to rewrite it to (same family, same options)."""
    kw = draw(packet_kw())
    alen = len(kw["src"])
    new = {"src": draw(st.binary(min_size=alen, max_size=alen) | st.just(kw["src"])),
           "dst": draw(st.binary(min_size=alen, max_size=alen)), "sport": draw(u16),
           "dport": draw(u16), "seq": draw(u32), "ack": draw(u32), "window": draw(u16)}
    if kw["tsval"] is not None:
        new["tsval"], new["tsecr"] = draw(u32), draw(u32)
    if kw["mss"] is not None:
        new["mss"] = draw(u16)
    kept = fitting_sack(kw)
    if kept:
        new["sack"] = tuple(draw(st.tuples(u32, u32)) for _ in kept)
    return kw, new


@settings(max_examples=500)
@given(rewrites())
def test_rewrite_gives_new_values_and_valid_checksums(case: tuple[dict, dict]) -> None:
    kw, new = case
    buf = bytearray(build(**kw))
    rewrite(buf, parse(buf), **new)
    p = parse(bytes(buf))
    for name, value in new.items():
        assert getattr(p, name) == value, name
    assert bytes(buf) == build(**{**kw, **new})


def test_rewrite_at_odd_option_offsets() -> None:
    """A lone NOP first puts TS, MSS and SACK values at odd offsets (not Linux's layout)."""
    pkt = _bad_opts(b"\x01\x08\x0a" + bytes(8) + b"\x02\x04\x05\xb4" + b"\x05\x0a" + bytes(8)
                    + b"\x00\x00\x00")
    buf = bytearray(pkt)
    p = parse(buf)
    assert p.ts_offset % 2 and p.mss_offset % 2 and p.sack_offset % 2
    rewrite(buf, p, src=B4, dst=A4, sport=1, dport=2, seq=3, ack=4, window=5, tsval=0xDEADBEEF,
            tsecr=0x12345678, mss=1200, sack=((0xFFFFFFFF, 7),))
    q = parse(bytes(buf))
    assert (q.tsval, q.tsecr, q.mss, q.sack) == (0xDEADBEEF, 0x12345678, 1200, ((2**32 - 1, 7),))


def _make_partial(pkt: bytes) -> bytearray:
    """What veth offload hands us: the field holds the non-inverted folded pseudo-header sum."""
    b = bytearray(pkt)
    p = parse(pkt)
    struct.pack_into("!H", b, p.tcp_offset + 16,
                     ref_sum(ref_pseudo(p.src, p.dst, p.segment_len)))
    return b


@settings(max_examples=300)
@given(rewrites())
def test_rewrite_partial_checksum(case: tuple[dict, dict]) -> None:
    kw, new = case
    buf = _make_partial(build(**kw))
    p = parse(buf, verify_checksum=False)
    rewrite(buf, p, **new, partial_csum=True)
    assert buf == _make_partial(build(**{**kw, **new}))  # pseudo-header sum of the new addrs
    kernel = bytearray(buf)  # what the kernel does later: checksum the segment as it stands
    struct.pack_into("!H", kernel, p.tcp_offset + 16, ref_checksum(bytes(buf[p.tcp_offset:])))
    assert bytes(kernel) == build(**{**kw, **new})
    finish_checksum(buf, p)
    assert bytes(buf) == build(**{**kw, **new})


@settings(max_examples=200)
@given(rewrites())
def test_broken_incremental_checksum_is_detected(case: tuple[dict, dict]) -> None:
    kw, new = case
    real = codec.csum_adjust
    buf = bytearray(build(**kw))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "csum_adjust", lambda c, d: (real(c, d) + 1) & 0xFFFF)
        rewrite(buf, parse(buf), **new)
    with pytest.raises(DecodeError) as exc:
        parse(bytes(buf))
    changed_v4_addrs = kw["version"] == 4 and (new["src"], new["dst"]) != (kw["src"], kw["dst"])
    expected = DropReason.BAD_IP_CHECKSUM if changed_v4_addrs else DropReason.BAD_CHECKSUM
    assert exc.value.reason is expected


def test_rewrite_rejects_what_it_cannot_do() -> None:
    buf = bytearray(v4(sack=((1, 2),)))
    p = parse(buf)
    base = {"src": A4, "dst": B4, "sport": 1, "dport": 2, "seq": 3, "ack": 4, "window": 5}
    for bad in ({"src": A6}, {"tsval": 1}, {"mss": 1}, {"sack": ((1, 2), (3, 4))}):
        with pytest.raises(ValueError):
            rewrite(bytearray(buf), p, **{**base, **bad})
    later = parse(v4_frag(v4(), offset=16, mf=False, data=bytes(16)))
    with pytest.raises(ValueError):
        rewrite(bytearray(16), later, **base)


def test_address_texts_are_shared_bounded_and_take_any_buffer() -> None:
    a = codec.addr_bytes("198.51.100.2")
    assert codec.addr_bytes("198.51.100.2") is a  # packed once
    text = codec.addr_str(a)
    assert text == "198.51.100.2" and codec.addr_str(a) is text
    assert codec.addr_str(bytearray(a)) == text and codec.addr_str(memoryview(a)) == text
    assert codec.addr_str(codec.addr_bytes("2001:db8::10")) == "2001:db8::10"
    for i in range(codec.ADDR_TEXT_CACHE + 10):
        codec.addr_str(i.to_bytes(4, "big"))
    assert len(codec._ADDR_TEXT) <= codec.ADDR_TEXT_CACHE

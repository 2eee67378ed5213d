"""The reference gateway's packet codec: raw IPv4/IPv6 + TCP bytes to fields and back.

Pure functions, no sockets. ``parse`` turns a raw IP packet (the wire driver strips L2) into a
``Packet`` that also records where each rewritable field sits in the buffer; ``rewrite`` is
the fast path's per-packet translation, done in place with RFC 1624 incremental checksums;
``build`` makes whole packets for the normal path and the tests.

Own ``struct`` code rather than dpkt: ``bench/bench_codec.py`` measures both for each job and
ours wins every one (on the dev VM: parse 2-2.7x, parse + rewrite 2x, build 3-5x, the
checksum itself 1.8x), so the project's "dpkt where it is as fast" rule leaves dpkt to the
tests, as an oracle, and to ``spec/trace.py``'s pcaps.

Size limits: any segment that fits an IP packet (IPv4 total length <= 65535, IPv6 payload
length <= 65535) is accepted regardless of the MSS, because GSO super-frames arrive whole
through packet sockets with ``PACKET_VNET_HDR``. BIG TCP frames beyond 64 KiB (IPv4 total
length 0, IPv6 jumbograms) are rejected: keep ``gso_max_size``/``gro_max_size`` at 65536 on
the gateway's interfaces (the default), which keeps them from being built at all.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from reference.gateway._checksum import (
    M16,
    M32,
    Buffer,
    csum_adjust,
    csum_replace16,
    csum_replace32,
    fold,
    internet_checksum,
    partial_adjust,
    pseudo_sum,
    replace_term,
    tcp_checksum,
    word_sum,
)
from reference.gateway._options import (
    NO_OPTIONS,
    OptionError,
    ParsedOptions,
    build_options,
    parse_options,
)
from spec.segment import Segment

__all__ = [
    "DecodeError",
    "DropReason",
    "Packet",
    "build",
    "csum_replace16",
    "csum_replace32",
    "finish_checksum",
    "internet_checksum",
    "parse",
    "rewrite",
    "tcp_checksum",
]

TCP_PROTO = 6
_HOP_BY_HOP, _ROUTING, _FRAGMENT, _DEST_OPTS = 0, 43, 44, 60
_MAX_IP_PAYLOAD = 0xFFFF

_V4 = struct.Struct("!BxHHHBB2x4s4s")  # vihl, total, id, frag, ttl, proto, src, dst
_V4_BUILD = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!4xHBB16s16s")  # payload length, next header, hop limit, src, dst
_V6_BUILD = struct.Struct("!IHBB16s16s")
_V6_FRAG = struct.Struct("!BxHI")  # next header, offset|M, identification
_TCP = struct.Struct("!HHIIBBH2xH")  # sport, dport, seq, ack, offset byte, flags, win, urg
_TCP_BUILD = struct.Struct("!HHIIBBHHH")
_HHII = struct.Struct("!HHII")
_III = struct.Struct("!III")
_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")


class DropReason(enum.StrEnum):
    """Why ``parse`` rejected a packet; the value is what counters and logs show."""

    TRUNCATED = "truncated"
    """The buffer ends before a header or before the length the IP header declares."""
    BAD_VERSION = "bad-version"
    """The IP version nibble is neither 4 nor 6."""
    BAD_HEADER_LENGTH = "bad-header-length"
    """IPv4 IHL below 5 (20 bytes)."""
    BAD_TOTAL_LENGTH = "bad-total-length"
    """IPv4 total length below the header length, or a BIG TCP/jumbo length of 0."""
    BAD_IP_CHECKSUM = "bad-ip-checksum"
    """The IPv4 header checksum does not verify."""
    BAD_EXTENSION_HEADER = "bad-extension-header"
    """An IPv6 extension header runs past the payload, repeats, or hop-by-hop is not first."""
    BAD_FRAGMENT = "bad-fragment"
    """A fragment ending beyond 65535 bytes, or an RFC 1858 overlapping TCP fragment."""
    UNSUPPORTED = "unsupported"
    """Well formed but not for the fast path (an IPv6 routing header with segments left)."""
    NOT_TCP = "not-tcp"
    """The upper-layer protocol is not TCP (or hides behind an unknown extension header)."""
    BAD_DATA_OFFSET = "bad-data-offset"
    """TCP data offset below 5 or beyond the end of the segment."""
    BAD_OPTION = "bad-option"
    """A TCP option is truncated, has a wrong length, or a known option appears twice."""
    BAD_CHECKSUM = "bad-checksum"
    """The TCP checksum does not verify (only checked with ``verify_checksum=True``)."""


class DecodeError(ValueError):
    """A packet ``parse`` refuses; ``reason`` is for counters, the message for people."""

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(f"{reason.name}: {message}")
        self.reason = reason


@dataclass(slots=True)
class Packet:
    """A parsed IP packet carrying TCP, with the offsets a rewrite needs.

    TCP fields are None for a non-first fragment, which has no TCP header; its ``payload``
    is then the fragment data. ``payload`` is a view of the parsed buffer, not a copy: while
    it lives, a parsed ``bytearray`` cannot be resized (rewriting in place is fine).
    IPv6: ``ttl`` is the hop limit; ``ip_id``, ``more_fragments`` and ``frag_offset`` come from
    a Fragment header if there is one; ``df`` is always True (routers never fragment IPv6).
    """

    version: int
    src: bytes
    dst: bytes
    ttl: int
    ip_id: int
    df: bool
    more_fragments: bool
    frag_offset: int
    """Fragment offset in bytes (not 8-byte units)."""
    frag_header: bool
    """IPv6 only: a Fragment header is present (even an atomic one, offset 0 and no MF)."""
    first_fragment: bool
    """The TCP header is present (true for every unfragmented packet)."""
    total_len: int
    """Length of the IP packet proper; bytes after it in the buffer are L2 padding."""
    ip_header_len: int
    """Bytes before the IP payload: IPv4 header with options, or IPv6 header plus extensions."""
    tcp_offset: int
    """Start of the TCP header (or of the fragment data) in the buffer."""
    payload: memoryview
    sport: int | None = None
    dport: int | None = None
    seq: int | None = None
    ack: int | None = None
    flags: int | None = None
    """All 12 bits after the data offset: the ``spec.segment`` flags plus AE and reserved."""
    window: int | None = None
    urg_ptr: int | None = None
    tcp_header_len: int | None = None
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    tsval: int | None = None
    tsecr: int | None = None
    sack: tuple[tuple[int, int], ...] = ()
    unknown_options: tuple[int, ...] = ()
    """Kinds of options seen other than EOL, NOP, MSS, WS, SACK-permitted, SACK and TS."""
    mss_offset: int | None = None
    wscale_offset: int | None = None
    ts_offset: int | None = None
    """Offset of TSval; TSecr follows at ``ts_offset + 4``."""
    sack_offset: int | None = None
    """Offset of the first SACK block's left edge; blocks are 8 bytes each."""

    @property
    def is_fragment(self) -> bool:
        """Part of a fragmented datagram, which the fast path hands over rather than splices."""
        return self.more_fragments or self.frag_offset != 0 or self.frag_header

    @property
    def src_str(self) -> str:
        return addr_str(self.src)

    @property
    def dst_str(self) -> str:
        return addr_str(self.dst)

    @property
    def segment_len(self) -> int:
        """Bytes of TCP header plus payload (what the pseudo-header's length counts)."""
        return self.total_len - self.tcp_offset

    def to_segment(self) -> Segment:
        """The model-level view (payload copied to bytes); first fragments only."""
        if not self.first_fragment:
            raise ValueError("a non-first fragment has no TCP header to make a Segment from")
        return Segment(seq=self.seq, ack=self.ack, flags=self.flags, window=self.window,
                       payload=bytes(self.payload), mss=self.mss, wscale=self.wscale,
                       sack_permitted=self.sack_permitted, tsval=self.tsval, tsecr=self.tsecr,
                       sack=self.sack)


def parse(data: Buffer, *, verify_checksum: bool = True) -> Packet:
    """Decode a raw IPv4/IPv6 packet carrying TCP; raise ``DecodeError`` and nothing else.

    ``verify_checksum=False`` skips the TCP checksum, for frames whose checksum the kernel
    left partial (offload). The IPv4 header checksum is always checked: it is never
    offloaded on receive. Fragments' TCP checksums cannot be checked and are not.
    """
    if not data:
        raise DecodeError(DropReason.TRUNCATED, "empty buffer")
    version = data[0] >> 4
    if version == 4:
        return _parse_v4(data, verify_checksum)
    if version == 6:
        return _parse_v6(data, verify_checksum)
    raise DecodeError(DropReason.BAD_VERSION, f"IP version {version} (first byte "
                      f"0x{data[0]:02x})")


def _parse_v4(data: Buffer, verify: bool) -> Packet:
    n = len(data)
    if n < 20:
        raise DecodeError(DropReason.TRUNCATED, f"{n} bytes, an IPv4 header needs 20")
    vihl, total, ip_id, frag, ttl, proto, src, dst = _V4.unpack_from(data)
    ihl = (vihl & 0xF) * 4
    if ihl < 20:
        raise DecodeError(DropReason.BAD_HEADER_LENGTH, f"IPv4 IHL {ihl // 4} (< 5)")
    if total < ihl:
        hint = " (a BIG TCP frame? keep gso_max_size <= 65536)" if total == 0 else ""
        raise DecodeError(DropReason.BAD_TOTAL_LENGTH,
                          f"IPv4 total length {total} < header length {ihl}{hint}")
    if n < total:
        raise DecodeError(DropReason.TRUNCATED,
                          f"{n} bytes, the IPv4 total length says {total}")
    if int.from_bytes(data[:ihl], "big") % M16:  # a valid header sums to 0xffff
        raise DecodeError(DropReason.BAD_IP_CHECKSUM, "IPv4 header checksum does not verify "
                          f"(field 0x{_U16.unpack_from(data, 10)[0]:04x})")
    if proto != TCP_PROTO:
        raise DecodeError(DropReason.NOT_TCP, f"IPv4 protocol {proto}")
    mf = bool(frag & 0x2000)
    offset = (frag & 0x1FFF) * 8
    if offset:
        _check_fragment(offset, total - ihl)
        return Packet(4, src, dst, ttl, ip_id, bool(frag & 0x4000), mf, offset, False, False,
                      total, ihl, ihl, memoryview(data)[ihl:total])
    return _parse_tcp(data, 4, src, dst, ttl, ip_id, bool(frag & 0x4000), mf, False,
                      total, ihl, verify and not mf)


def _parse_v6(data: Buffer, verify: bool) -> Packet:
    n = len(data)
    if n < 40:
        raise DecodeError(DropReason.TRUNCATED, f"{n} bytes, an IPv6 header needs 40")
    plen, nh, hlim, src, dst = _V6.unpack_from(data)
    if plen == 0:
        raise DecodeError(DropReason.BAD_TOTAL_LENGTH,
                          "IPv6 payload length 0 (jumbograms/BIG TCP are not supported)")
    total = 40 + plen
    if n < total:
        raise DecodeError(DropReason.TRUNCATED, f"{n} bytes, the IPv6 payload length says "
                          f"{plen} after the 40-byte header")
    off = 40
    frag_header = mf = False
    frag_off = ident = 0
    while nh != TCP_PROTO:
        if nh in (_HOP_BY_HOP, _ROUTING, _DEST_OPTS):
            if nh == _HOP_BY_HOP and off != 40:
                raise DecodeError(DropReason.BAD_EXTENSION_HEADER,
                                  f"hop-by-hop options header at offset {off}, not first")
            hlen = (data[off + 1] + 1) * 8 if off + 2 <= total else 8
            if off + hlen > total:
                raise DecodeError(DropReason.BAD_EXTENSION_HEADER,
                                  f"extension header {nh} at offset {off} ({hlen} bytes) runs "
                                  f"past the packet end at {total}")
            if nh == _ROUTING and data[off + 3]:
                raise DecodeError(DropReason.UNSUPPORTED, f"routing header at offset {off} "
                                  f"with {data[off + 3]} segments left")
            nh = data[off]
            off += hlen
        elif nh == _FRAGMENT:
            if frag_header:
                raise DecodeError(DropReason.BAD_EXTENSION_HEADER,
                                  f"second fragment header at offset {off}")
            if off + 8 > total:
                raise DecodeError(DropReason.BAD_EXTENSION_HEADER,
                                  f"fragment header at offset {off} runs past the packet end "
                                  f"at {total}")
            nh, offm, ident = _V6_FRAG.unpack_from(data, off)
            frag_header, mf, frag_off = True, bool(offm & 1), offm & 0xFFF8
            off += 8
            if frag_off:
                _check_fragment(frag_off, total - off)
                if nh != TCP_PROTO:
                    raise DecodeError(DropReason.NOT_TCP, f"non-first IPv6 fragment of next "
                                      f"header {nh}")
                return Packet(6, src, dst, hlim, ident, True, mf, frag_off, True, False,
                              total, off, off, memoryview(data)[off:total])
        else:
            raise DecodeError(DropReason.NOT_TCP, f"IPv6 next header {nh} at offset {off}")
    return _parse_tcp(data, 6, src, dst, hlim, ident, True, mf, frag_header, total, off,
                      verify and not mf)


def _check_fragment(offset: int, length: int) -> None:
    if offset == 8:
        raise DecodeError(DropReason.BAD_FRAGMENT, "TCP fragment at offset 8 overlaps the "
                          "header (RFC 1858)")
    if offset + length > _MAX_IP_PAYLOAD:
        raise DecodeError(DropReason.BAD_FRAGMENT, f"fragment at offset {offset} with {length} "
                          "bytes ends beyond 65535")


def _parse_tcp(data: Buffer, version: int, src: bytes, dst: bytes, ttl: int, ip_id: int,
               df: bool, mf: bool, frag_header: bool, total: int, off: int,
               verify: bool) -> Packet:
    seg_len = total - off
    if seg_len < 20:
        raise DecodeError(DropReason.TRUNCATED,
                          f"TCP segment at offset {off} has {seg_len} bytes, the header needs 20")
    sport, dport, seq, ack, doff, flags, window, urg = _TCP.unpack_from(data, off)
    thl = (doff >> 4) * 4
    if thl < 20 or thl > seg_len:
        raise DecodeError(DropReason.BAD_DATA_OFFSET,
                          f"TCP data offset {thl // 4} ({thl} bytes) at offset {off + 12}, "
                          f"segment has {seg_len} bytes")
    opts: ParsedOptions = NO_OPTIONS
    if thl > 20:
        try:
            opts = parse_options(data, off + 20, off + thl)
        except OptionError as e:
            raise DecodeError(DropReason.BAD_OPTION, str(e)) from None
    if verify:
        s = int.from_bytes(data[off:total], "big") << 8 * (seg_len & 1)
        s += int.from_bytes(src, "big") + int.from_bytes(dst, "big") + TCP_PROTO + seg_len
        if s % M16:  # pseudo_sum and word_sum inlined: this is per packet
            field = _U16.unpack_from(data, off + 16)[0]
            want = ~fold(s - field) & M16
            raise DecodeError(DropReason.BAD_CHECKSUM, f"TCP checksum 0x{field:04x} at offset "
                              f"{off + 16}, expected 0x{want:04x}")
    return Packet(version, src, dst, ttl, ip_id, df, mf, 0, frag_header, True, total, off, off,
                  memoryview(data)[off + thl:total], sport, dport, seq, ack,
                  (doff & 0xF) << 8 | flags, window, urg, thl, *opts)


def build(*, version: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
          flags: int, window: int, payload: Buffer = b"", mss: int | None = None,
          wscale: int | None = None, sack_permitted: bool = False, tsval: int | None = None,
          tsecr: int | None = None, sack: tuple[tuple[int, int], ...] = (), ttl: int = 64,
          ip_id: int = 0, df: bool = True, urg_ptr: int = 0) -> bytes:
    """A complete IPv4 or IPv6 + TCP packet with valid checksums and Linux's option layout.

    SACK blocks that do not fit the 40 option bytes are left out (the first ones are kept).
    ``ip_id`` and ``df`` only apply to IPv4. Out-of-range values raise ValueError.
    """
    alen = {4: 4, 6: 16}.get(version)
    if alen is None:
        raise ValueError(f"IP version {version}, expected 4 or 6")
    if len(src) != alen or len(dst) != alen:
        raise ValueError(f"IPv{version} addresses are {alen} bytes, got {len(src)} and "
                         f"{len(dst)}")
    if not 0 <= flags <= 0xFFF:
        raise ValueError(f"TCP flags 0x{flags:x} do not fit 12 bits")
    try:
        opts = build_options(mss=mss, wscale=wscale, sack_permitted=sack_permitted,
                             tsval=tsval, tsecr=tsecr, sack=sack)
    except struct.error as e:
        raise ValueError(f"option value out of range: {e}") from None
    thl = 20 + len(opts)
    seg_len = thl + len(payload)
    ip_len = 20 if version == 4 else 40
    if seg_len + (ip_len if version == 4 else 0) > _MAX_IP_PAYLOAD:
        raise ValueError(f"a {seg_len}-byte TCP segment does not fit an IPv{version} packet")
    try:
        head = _TCP_BUILD.pack(sport, dport, seq, ack, thl << 2 | (flags >> 8 & 0xF),
                               flags & 0xFF, window, 0, urg_ptr) + opts
        s = word_sum(head) + word_sum(payload) + pseudo_sum(src, dst, seg_len)
        head = head[:16] + _U16.pack(~fold(s) & M16) + head[18:]
        if version == 4:
            ip = _V4_BUILD.pack(0x45, 0, ip_len + seg_len, ip_id, 0x4000 if df else 0, ttl,
                                TCP_PROTO, 0, src, dst)
            ip = ip[:10] + _U16.pack(internet_checksum(ip)) + ip[12:]
        else:
            ip = _V6_BUILD.pack(6 << 28, seg_len, TCP_PROTO, ttl, src, dst)
    except struct.error as e:
        raise ValueError(f"field out of range: {e}") from None
    return b"".join((ip, head, payload))


def rewrite(buf: bytearray, pkt: Packet, *, src: bytes, dst: bytes, sport: int, dport: int,
            seq: int, ack: int, window: int, tsval: int | None = None,
            tsecr: int | None = None, sack: tuple[tuple[int, int], ...] | None = None,
            mss: int | None = None, partial_csum: bool = False) -> None:
    """Translate a parsed packet in place, patching checksums incrementally (RFC 1624).

    ``pkt`` supplies offsets; old values are read from ``buf`` itself, so the checksum stays
    right even if ``buf`` was rewritten since ``pkt`` was parsed. Options can only be
    rewritten if present, SACK with the same number of blocks (the length must not change).
    ``None`` leaves an option alone; ``tsval``/``tsecr`` may be given separately.

    A ValueError (option missing, value out of range) may leave ``buf`` half rewritten with
    a wrong checksum: drop it.

    ``partial_csum=True`` is for a CHECKSUM_PARTIAL frame (checksum offload): its field holds
    the non-inverted pseudo-header sum, so only the address change is folded in and the
    rest is left for whoever completes the checksum (the kernel, or ``finish_checksum``).
    """
    if not pkt.first_fragment:
        raise ValueError("a non-first fragment has no TCP header to rewrite")
    t = pkt.tcp_offset
    a, alen = (12, 4) if pkt.version == 4 else (8, 16)
    if len(src) != alen or len(dst) != alen:
        raise ValueError(f"IPv{pkt.version} packet needs {alen}-byte addresses, got "
                         f"{len(src)} and {len(dst)}")
    new_addrs = src + dst
    old_addrs = bytes(buf[a:a + 2 * alen])
    addr_delta = 0
    if new_addrs != old_addrs:
        addr_delta = replace_term(old_addrs, new_addrs)
        buf[a:a + 2 * alen] = new_addrs
        if alen == 4:
            _U16.pack_into(buf, 10, csum_adjust(_U16.unpack_from(buf, 10)[0], addr_delta))
    old_ports, old_seq, old_ack = _III.unpack_from(buf, t)
    old_win = _U16.unpack_from(buf, t + 14)[0]
    try:
        _HHII.pack_into(buf, t, sport, dport, seq, ack)
        _U16.pack_into(buf, t + 14, window)
    except struct.error as e:
        raise ValueError(f"field out of range: {e}") from None
    delta = ((M32 - old_ports) + (sport << 16 | dport) + (M32 - old_seq) + seq
             + (M32 - old_ack) + ack + (M16 - old_win) + window)
    if tsval is not None or tsecr is not None or sack is not None or mss is not None:
        delta += _rewrite_options(buf, pkt, tsval, tsecr, sack, mss)
    c = _U16.unpack_from(buf, t + 16)[0]
    if partial_csum:
        if addr_delta:
            _U16.pack_into(buf, t + 16, partial_adjust(c, addr_delta))
    else:
        _U16.pack_into(buf, t + 16, csum_adjust(c, delta + addr_delta))


def _rewrite_options(buf: bytearray, pkt: Packet, tsval: int | None, tsecr: int | None,
                     sack: tuple[tuple[int, int], ...] | None, mss: int | None) -> int:
    """Patch option values; return their checksum delta (odd offsets weigh 256, see below).

    A value at an odd offset from the TCP header start straddles 16-bit words; its share of
    the sum is its integer value times 256 (mod 0xffff), so its delta term is shifted by 8.
    """
    t = pkt.tcp_offset
    delta = 0
    try:
        if tsval is not None or tsecr is not None:
            off = _need(pkt.ts_offset, "timestamp")
            ov, oe = _U32X2.unpack_from(buf, off)
            nv = ov if tsval is None else tsval
            ne = oe if tsecr is None else tsecr
            _U32X2.pack_into(buf, off, nv, ne)
            delta += ((M32 - ov) + nv + (M32 - oe) + ne) << 8 * ((off - t) & 1)
        if sack is not None:
            off = _need(pkt.sack_offset, "SACK")
            if len(sack) != len(pkt.sack):
                raise ValueError(f"the packet has {len(pkt.sack)} SACK blocks, got "
                                 f"{len(sack)}: rewriting cannot change the option length")
            size = 8 * len(sack)
            old = bytes(buf[off:off + size])
            struct.pack_into(f"!{2 * len(sack)}I", buf, off, *(e for b in sack for e in b))
            delta += replace_term(old, bytes(buf[off:off + size])) << 8 * ((off - t) & 1)
        if mss is not None:
            off = _need(pkt.mss_offset, "MSS")
            om = _U16.unpack_from(buf, off)[0]
            _U16.pack_into(buf, off, mss)
            delta += ((M16 - om) + mss) << 8 * ((off - t) & 1)
    except struct.error as e:
        raise ValueError(f"option value out of range: {e}") from None
    return delta


def _need(offset: int | None, name: str) -> int:
    if offset is None:
        raise ValueError(f"the packet has no {name} option to rewrite")
    return offset


def finish_checksum(buf: bytearray, pkt: Packet) -> None:
    """Compute the full TCP checksum in place, from the addresses now in ``buf``.

    For a CHECKSUM_PARTIAL frame that must leave on a path that will not complete it (no
    offload, a pcap, a test); it is the slow path, linear in the segment length.
    """
    if not pkt.first_fragment or pkt.more_fragments:
        raise ValueError("the TCP checksum of a fragment covers bytes this buffer lacks")
    t = pkt.tcp_offset
    a, alen = (12, 4) if pkt.version == 4 else (8, 16)
    _U16.pack_into(buf, t + 16, 0)
    c = tcp_checksum(bytes(buf[a:a + alen]), bytes(buf[a + alen:a + 2 * alen]),
                     memoryview(buf)[t:pkt.total_len])
    _U16.pack_into(buf, t + 16, c)


_ADDR_PACKED: dict[str, bytes] = {}


def addr_bytes(addr: str) -> bytes:
    """Packed form of an IPv4 or IPv6 address written as text (shared, like ``addr_str``'s
    texts: the servers' addresses are packed once per session)."""
    packed = _ADDR_PACKED.get(addr)
    if packed is None:
        packed = ipaddress.ip_address(addr).packed
        if len(_ADDR_PACKED) >= ADDR_TEXT_CACHE:
            _ADDR_PACKED.clear()
        _ADDR_PACKED[addr] = packed
    return packed


_ADDR_TEXT: dict[bytes, str] = {}
ADDR_TEXT_CACHE = 4096
"""Texts kept: a session's records hold its four addresses as text, and the VIP's, the
gateway's and the servers' are the same for every session; one shared string each (and no
``ipaddress`` round trip per new session). Bounded: cleared when full."""


def addr_str(addr: bytes) -> str:
    """Text form of a packed IPv4 or IPv6 address."""
    key = addr if type(addr) is bytes else bytes(addr)
    text = _ADDR_TEXT.get(key)
    if text is None:
        text = str(ipaddress.ip_address(key))
        if len(_ADDR_TEXT) >= ADDR_TEXT_CACHE:
            _ADDR_TEXT.clear()
        _ADDR_TEXT[key] = text
    return text

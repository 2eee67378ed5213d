"""Decode captured frames to TCP segments and rebuild the connections of one leg.

The data model (``Seg``, ``Conn``, ``Leg``) is what every judge reads, per leg and across
legs. Decoding is a lean ``struct`` path of its own rather than ``reference.gateway.codec``:
the codec builds a 30-field ``Packet`` with rewrite offsets and raises on anything a gateway
must drop, while a checker has to keep going on bad frames and say which they were (and
runs over a million of them; see ``bench/bench_checker.py``).

Streams are indexed by relative offset: offset 0 is the byte at ISN+1 (or, when the SYN was
not captured, at the first sequence number seen in that direction). Bytes the capture never
saw are zero-filled and listed in ``gaps_*`` so offsets stay true; overlapping copies that
disagree are listed in ``conflicts`` (a violation the ``leg.seq`` judge reports).
"""

from __future__ import annotations

import gc
import heapq
import mmap
import socket
import struct
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import not_
from pathlib import Path
from typing import Any

from conformance.pcapio import Capture, open_capture

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
M32 = 0xFFFFFFFF
HALF = 1 << 31
MTU = 1500
"""Frames whose IP length exceeds this are GSO/GRO super-frames (legal on veth captures)."""
MAX_NOTES = 20
"""Per-kind cap on per-frame notes, so a garbage capture does not flood the report."""


@dataclass(slots=True)
class Seg:
    """One TCP segment as captured (an IP-fragmented one once reassembled)."""

    index: int
    time: float
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes
    mss: int | None
    wscale: int | None
    sack_perm: bool
    sack: tuple[tuple[int, int], ...]
    ts: tuple[int, int] | None
    unknown_options: tuple[int, ...]
    checksum: str
    """"ok", "bad", "bad-ip" (the IPv4 header checksum is wrong), or "partial" (offloaded:
    the field holds the pseudo-header sum only);
    "unverified" when the frame was cut by the snap length."""
    ip_len: int
    fragment: bool

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies (payload plus SYN and FIN)."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN)


@dataclass
class Conn:
    """One TCP connection on one leg; the client is the side that sent the SYN (or, when the
    handshake was not captured, the side with the higher port)."""

    leg: str
    client: tuple[str, int]
    server: tuple[str, int]
    segs: list[Seg] = field(default_factory=list)
    from_client: bytearray = field(default_factory=bytearray)
    """Parallel to ``segs``: 1 where the segment was sent by the client."""
    isn_c: int | None = None
    isn_s: int | None = None
    syn_time: float | None = None
    first_data_time: float | None = None
    stream_c2s: bytes = b""
    stream_s2c: bytes = b""
    gaps_c2s: list[tuple[int, int]] = field(default_factory=list)
    gaps_s2c: list[tuple[int, int]] = field(default_factory=list)
    fin_c: Seg | None = None
    fin_s: Seg | None = None
    rst: list[Seg] = field(default_factory=list)
    negotiated: dict[str, Any] = field(default_factory=dict)
    """mss_c, mss_s (announced, None if absent), ws_c, ws_s (shift counts in effect: 0 unless
    both sides sent window scale), sack, ts (both sides offered), wscale (in effect)."""
    problems: list[str] = field(default_factory=list)
    base_c2s: int | None = None
    """Sequence number of stream offset 0 client->server (ISN+1 when the SYN was seen)."""
    base_s2c: int | None = None
    conflicts: list[tuple[str, int, int]] = field(default_factory=list)
    """(direction "c2s"/"s2c", stream offset, frame) of retransmitted bytes that differ."""
    handshake_captured: bool = False
    """Both the SYN and the SYN-ACK were captured."""
    number: int = 0
    """1-based position of the connection on its leg (by first frame)."""
    judged: dict[str, Any] | None = None
    """Cache of the per-leg findings (``conformance.leg_checks``)."""
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    """Per-direction views the cross-leg judges derive once (``conformance.cross_checks``);
    emptied by ``rebuild``."""

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (*self.client, *self.server)

    @property
    def name(self) -> str:
        """``client:port > server:port`` (IPv6 addresses bracketed)."""
        return f"{_hostport(*self.client)} > {_hostport(*self.server)}"

    def directions(self) -> tuple[bool, bool]:
        """(client->server seen, server->client seen)."""
        fc = self.from_client
        return 1 in fc, 0 in fc

    def first_frame(self) -> int:
        return self.segs[0].index if self.segs else 0


@dataclass
class Leg:
    """All connections rebuilt from one capture file."""

    path: Path
    conns: list[Conn]
    notes: list[str]
    packets: int
    leg: str = "client"
    tcp_packets: int = 0
    """Frames that decoded to TCP segments (fragments counted once reassembled)."""


def _hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


# ---- decoding ----------------------------------------------------------------------------

_V4 = struct.Struct("!BxHHHBB2x4s4s")
_V6 = struct.Struct("!4xHBB16s16s")
_TCP = struct.Struct("!HHIIBBHH")
_TS = struct.Struct("!II")
_H = struct.Struct("!H")
_NOP_NOP_TS = b"\x01\x01\x08\x0a"
_FRAG_HDRS_V6 = (0, 43, 60)  # hop-by-hop, routing, destination options


class _Decoder:
    """Frames -> ``Seg``; keeps address caches, fragment buffers and per-kind notes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.addr: dict[bytes, tuple[str, int]] = {}
        self.frags: dict[tuple[Any, ...], list[Any]] = {}
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[int]] = {}
        self.non_tcp = 0

    def note(self, kind: str, index: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < 5:
            ex.append(index)

    def notes(self) -> list[str]:
        out = []
        for kind, n in self.counts.items():
            ex = ", ".join(map(str, self.examples[kind]))
            more = ", ..." if n > len(self.examples[kind]) else ""
            out.append(f"{self.path}: {n} frame(s) {kind} (packet {ex}{more})")
        if self.frags:
            idx = sorted(v[3] for v in self.frags.values())[:5]
            out.append(f"{self.path}: {len(self.frags)} IP datagram(s) with missing fragments "
                       f"(first fragment packet {', '.join(map(str, idx))}); not judged")
        return out

    def _a(self, raw: bytes) -> tuple[str, int]:
        got = self.addr.get(raw)
        if got is None:
            fam = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
            got = self.addr[raw] = (socket.inet_ntop(fam, raw), int.from_bytes(raw, "big"))
        return got

    def frame(self, data: bytes, lt: int, off: int, end: int, orig: int, index: int,
              t: float) -> Seg | None:
        """Decode one frame at ``data[off:end]``; None for frames that are not TCP."""
        if lt == 1:
            if end - off < 14:
                self.note("too short for Ethernet", index)
                return None
            etype = data[off + 12] << 8 | data[off + 13]
            p = off + 14
            while etype in (0x8100, 0x88A8) and p + 4 <= end:
                etype = data[p + 2] << 8 | data[p + 3]
                p += 4
        elif lt == 113:
            if end - off < 16:
                self.note("too short for Linux cooked capture", index)
                return None
            etype = data[off + 14] << 8 | data[off + 15]
            p = off + 16
        elif lt == 276:
            if end - off < 20:
                self.note("too short for Linux cooked capture v2", index)
                return None
            etype = data[off] << 8 | data[off + 1]
            p = off + 20
        else:  # raw IP: 101, 12, 14, 228, 229
            if end <= off:
                self.note("empty", index)
                return None
            v = data[off] >> 4
            etype = 0x0800 if v == 4 else 0x86DD if v == 6 else 0
            p = off
        snapped = orig > end - off
        if etype == 0x0800:
            return self._v4(data, p, end, index, t, snapped)
        if etype == 0x86DD:
            return self._v6(data, p, end, index, t, snapped)
        self.non_tcp += 1
        return None

    def _v4(self, data: bytes, p: int, end: int, index: int, t: float,
            snapped: bool) -> Seg | None:
        if end - p < 20:
            self.note("with a truncated IPv4 header", index)
            return None
        vihl, total, ipid, frag, _ttl, proto, src, dst = _V4.unpack_from(data, p)
        if proto != 6:
            self.non_tcp += 1
            return None
        ihl = (vihl & 0xF) * 4
        if total == 0:  # TSO frame captured before segmentation with the length left 0
            total = end - p
        ipend = p + total
        if ihl < 20 or total < ihl:
            self.note("with a bad IPv4 header length", index)
            return None
        if ipend > end:
            if not snapped:
                self.note("shorter than their IPv4 total length", index)
                return None
            ipend = end
        if int.from_bytes(data[p:p + ihl], "big") % 0xFFFF:
            # The IPv4 header checksum (RFC 791): a bad one makes the segment's checksum
            # "bad-ip", judged by leg.checksum like a bad TCP checksum.
            if frag & 0x3FFF:
                self.note("IPv4 fragments with a bad header checksum (dropped)", index)
                return None
            seg = self._tcp(data, p + ihl, ipend, src, dst, index, t, total, False, snapped)
            if seg is not None:
                seg.checksum = "bad-ip"
            return seg
        if frag & 0x3FFF:
            return self._fragment((4, src, dst, ipid), (frag & 0x1FFF) * 8,
                                  bool(frag & 0x2000), data[p + ihl:ipend], src, dst, index,
                                  t, total)
        return self._tcp(data, p + ihl, ipend, src, dst, index, t, total, False, snapped)

    def _v6(self, data: bytes, p: int, end: int, index: int, t: float,
            snapped: bool) -> Seg | None:
        if end - p < 40:
            self.note("with a truncated IPv6 header", index)
            return None
        plen, nh, _hl, src, dst = _V6.unpack_from(data, p)
        total = 40 + plen if plen else end - p
        ipend = p + total
        if ipend > end:
            if not snapped:
                self.note("shorter than their IPv6 payload length", index)
                return None
            ipend = end
        q = p + 40
        while nh != 6:
            if nh in _FRAG_HDRS_V6 and q + 8 <= ipend:
                nh, q = data[q], q + (data[q + 1] + 1) * 8
            elif nh == 44 and q + 8 <= ipend:
                nh2, offm, ident = struct.unpack_from("!BxHI", data, q)
                return self._fragment((6, src, dst, ident), offm & 0xFFF8, bool(offm & 1),
                                      data[q + 8:ipend], src, dst, index, t, total,
                                      nh2)
            else:
                self.non_tcp += 1
                return None
        return self._tcp(data, q, ipend, src, dst, index, t, total, False, snapped)

    def _fragment(self, key: tuple[Any, ...], offset: int, more: bool, body: bytes,
                  src: bytes, dst: bytes, index: int, t: float, total: int,
                  nh: int = 6) -> Seg | None:
        """Collect fragments; decode the datagram when every byte has arrived."""
        entry = self.frags.get(key)
        if entry is None:
            entry = self.frags[key] = [{}, None, nh, index]  # pieces, length, proto, first
        pieces, length = entry[0], entry[1]
        if offset == 0:
            entry[2] = nh
        pieces[offset] = body
        if not more:
            length = entry[1] = offset + len(body)
        if length is None:
            return None
        have = 0
        for off in sorted(pieces):
            if off > have:
                return None
            have = max(have, off + len(pieces[off]))
        if have < length:
            return None
        del self.frags[key]
        if entry[2] != 6:
            self.non_tcp += 1
            return None
        buf = bytearray(length)
        for off in sorted(pieces):
            buf[off:off + len(pieces[off])] = pieces[off]
        whole = bytes(buf[:length])
        return self._tcp(whole, 0, length, src, dst, index, t, total, True, False)

    def _tcp(self, data: bytes, t0: int, end: int, src: bytes, dst: bytes, index: int,
             t: float, ip_len: int, fragment: bool, snapped: bool) -> Seg | None:
        seglen = end - t0
        if seglen < 20:
            self.note("with a truncated TCP header", index)
            return None
        sport, dport, seq, ack, doff, flags, win, csum = _TCP.unpack_from(data, t0)
        thl = (doff >> 4) * 4
        if thl < 20 or thl > seglen:
            self.note("with a bad TCP data offset", index)
            return None
        s_str, s_int = self._a(src)
        d_str, d_int = self._a(dst)
        mss = wscale = ts = None
        sack_perm = False
        sack: tuple[tuple[int, int], ...] = ()
        unknown: tuple[int, ...] = ()
        if thl == 32 and data[t0 + 20:t0 + 24] == _NOP_NOP_TS:
            ts = _TS.unpack_from(data, t0 + 24)
        elif thl > 20:
            mss, wscale, sack_perm, sack, ts, unknown, bad = _options(data, t0 + 20, t0 + thl)
            if bad:
                self.note("with malformed TCP options", index)
        if snapped:
            checksum = "unverified"
        else:
            s = int.from_bytes(data[t0:end], "big")
            if seglen & 1:
                s <<= 8
            if seglen > 200:
                s = _shrink(s)
            ps = s_int + d_int + 6 + seglen
            if (s + ps) % 0xFFFF == 0:
                checksum = "ok"
            elif csum == (ps - 1) % 0xFFFF + 1:
                checksum = "partial"
            else:
                checksum = "bad"
        return Seg(index, t, s_str, d_str, sport, dport, seq, ack, flags, win,
                   data[t0 + thl:end], mss, wscale, sack_perm, sack, ts, unknown, checksum,
                   ip_len, fragment)


_MASKS: dict[int, int] = {}
_M6144, _M3072, _M1536 = (1 << 6144) - 1, (1 << 3072) - 1, (1 << 1536) - 1


def _shrink(n: int) -> int:
    """A smaller integer congruent to ``n`` modulo 0xffff (and to its 16-bit word sum).

    Python's ``%`` by a one-digit divisor walks every 30-bit digit with a hardware division;
    folding halves at a multiple of 16 bits (2**16 == 1 mod 0xffff) costs two linear bit
    operations instead, which halves the checksum time of a full-size segment. Segments up
    to 1536 bytes (all but super-frames) take three fixed folds, without measuring.
    """
    b = n.bit_length()
    if b <= 12288:
        n = (n >> 6144) + (n & _M6144)
        n = (n >> 3072) + (n & _M3072)
        return (n >> 1536) + (n & _M1536)
    while b > 512:
        k = ((b >> 5) + 1) << 4
        m = _MASKS.get(k)
        if m is None:
            m = _MASKS[k] = (1 << k) - 1
        n = (n >> k) + (n & m)
        b = n.bit_length()
    return n


def _options(data: bytes, p: int, end: int) -> tuple[Any, ...]:
    """Parse TCP options; the last item says whether any was malformed."""
    mss = wscale = ts = None
    sack_perm = bad = False
    sack: tuple[tuple[int, int], ...] = ()
    unknown: list[int] = []
    while p < end:
        kind = data[p]
        if kind == 0:
            break
        if kind == 1:
            p += 1
            continue
        if p + 1 >= end:
            bad = True
            break
        n = data[p + 1]
        if n < 2 or p + n > end:
            bad = True
            break
        if kind == 2 and n == 4:
            mss = _H.unpack_from(data, p + 2)[0]
        elif kind == 3 and n == 3:
            wscale = data[p + 2]
        elif kind == 4 and n == 2:
            sack_perm = True
        elif kind == 5 and n >= 10 and (n - 2) % 8 == 0:
            v = struct.unpack_from(f"!{(n - 2) // 4}I", data, p + 2)
            sack = tuple(zip(v[::2], v[1::2], strict=True))
        elif kind == 8 and n == 10:
            ts = _TS.unpack_from(data, p + 2)
        elif kind in (2, 3, 4, 5, 8):
            bad = True
        else:
            unknown.append(kind)
        p += n
    return mss, wscale, sack_perm, sack, ts, tuple(unknown), bad


# ---- connections -------------------------------------------------------------------------

Statuses = Callable[[], "tuple[bytes | bytearray | mmap.mmap | None, str | None]"]
"""Where a leg reader gets the checksum statuses of its fast-path frames from another
process (``conformance.checker``): a buffer of one ``fast_checksums`` code per frame, or
None and a note saying why not (the reader then computes them itself)."""


def read_leg(path: str | Path, leg: str = "client", checksums: Statuses | None = None) -> Leg:
    """Decode ``path`` and rebuild its TCP connections; raises ``PcapError`` only for files
    that cannot be read at all (everything else becomes a note).

    With ``checksums``, a memory-mapped capture's fast-path frames are decoded without
    their checksum sums, and the statuses computed elsewhere (``fast_checksums``, in another
    process) are filled in once the frames are read: the same ``Seg.checksum`` values."""
    cap = open_capture(path)
    try:
        return leg_from_capture(cap, leg, checksums)
    finally:
        cap.close()


def leg_from_capture(cap: Capture, leg: str, checksums: Statuses | None = None) -> Leg:
    """Rebuild the connections of an opened capture (see ``read_leg``)."""
    was = gc.isenabled()
    gc.disable()  # a million small objects make every generation-2 collection a full scan
    try:
        return _leg_from_capture(cap, leg, checksums)
    finally:
        if was:
            gc.enable()


_PENDING = "pending"
"""``Seg.checksum`` of a fast-path frame whose status is computed in another process,
until ``_fill_checksums`` replaces it (never seen outside ``_leg_from_capture``)."""
_CODES = (_PENDING, "ok", "bad-ip", "partial", "bad")
"""``fast_checksums`` codes: 0 for frames it does not judge (not on the fast path)."""
_CSUM_HDR = struct.Struct("!12xHBxH2xHxB22xB3xH")
"""The fields of ``_FAST`` that choose the fast path, and the TCP checksum."""


def fast_checksums(cap: Capture, out: bytearray | mmap.mmap) -> int:
    """Write the checksum status code (``_CODES``) of every frame ``_leg_from_capture``
    decodes on its fast path at ``out[frame number - 1]``, 0 for the other frames; the
    same sums and rules as that fast path. Returns the frames walked.

    Frames past a truncated or corrupt tail are not walked (nor decoded); notes and errors
    are the reader's business, not this walk's."""
    data = cap.data
    hdr = _CSUM_HDR.unpack_from
    from_bytes = int.from_bytes
    limit = len(out)
    if cap.format == "pcap":
        rec_struct, _ = cap.pcap_layout()
        rec = rec_struct.unpack_from

        def walk() -> Iterator[tuple[int, int, int, int, int]]:
            lt = cap.linktype or 0
            nxt, end, index = 24, len(data), 0
            while nxt + 16 <= end:
                _s, _f, incl, orig = rec(data, nxt)
                off = nxt + 16
                nxt = off + incl
                if nxt > end:
                    return
                index += 1
                yield index, lt, off, incl, orig
        records: Iterator[tuple[int, int, int, int, int]] = walk()
    else:
        records = ((r[0], r[2], r[3], r[4], r[5]) for r in cap.records())
    index = 0
    for index, lt, off, incl, orig in records:
        if lt != 1 or incl != orig or incl < 54:
            continue
        etype, vihl, total, frag, proto, doff, csum = hdr(data, off)
        if etype != 0x0800 or vihl != 0x45 or proto != 6 or frag & 0x3FFF \
                or not 40 <= total <= incl - 14 or not 20 <= (doff >> 4) * 4 <= total - 20:
            continue
        if index > limit:
            raise ValueError(f"{cap.path}: more frames than the status buffer holds")
        p = off + 14
        n = from_bytes(data[p:p + total], "big")
        if total & 1:
            n <<= 8
        if total > 200:
            n = _shrink(n)
        ps = from_bytes(data[p + 12:p + 16], "big") + from_bytes(data[p + 16:p + 20], "big") \
            + 6 + total - 20
        if (n + ps) % 0xFFFF == 0:
            code = 1
        elif from_bytes(data[p:p + 20], "big") % 0xFFFF:
            code = 2
        elif csum == (ps - 1) % 0xFFFF + 1:
            code = 3
        else:
            code = 4
        out[index - 1] = code
    return index


def status_buffer_size(file_size: int) -> int:
    """Frames a capture file of ``file_size`` bytes can hold at most (every pcap record and
    pcapng packet block takes 16 bytes or more)."""
    return file_size // 16 + 1


def _fill_checksums(conns: list[Conn], codes: bytes | bytearray | mmap.mmap) -> bool:
    """Replace every pending ``Seg.checksum``; False (some left pending) if ``codes`` has
    no status for a frame that needs one."""
    names = _CODES
    whole = True
    for c in conns:
        for s in c.segs:
            if s.checksum is _PENDING:
                code = codes[s.index - 1]
                if not code:
                    whole = False
                s.checksum = names[code]
    return whole


_FAST = struct.Struct("!12xHBxH2xHxB10xHHIIBBHH")
"""An untagged Ethernet frame up to the TCP checksum: EtherType, IPv4 version/IHL, total
length, flags/fragment offset, protocol (addresses are read as one slice), TCP ports,
sequence, acknowledgement, data offset, flags, window, checksum."""
_FAST_TS = struct.Struct(_FAST.format + "2xIII")
"""``_FAST`` plus the first four option bytes, TSval and TSecr (a 32-byte TCP header
holding NOP NOP TS, the shape of nearly every segment once timestamps are on)."""
_NOP_NOP_TS_WORD = 0x0101080A
_M6144, _M3072, _M1536, _M768 = ((1 << k) - 1 for k in (6144, 3072, 1536, 768))


def _leg_from_capture(cap: Capture, leg: str, checksums: Statuses | None) -> Leg:
    dec = _Decoder(cap.path)
    # checksum statuses of the fast path's frames from another process: only for a mapped
    # file (one that process reads as well); see ``read_leg``
    defer = checksums is not None and isinstance(cap.data, mmap.mmap)
    pending = _PENDING
    frame = dec.frame
    data = cap.data
    conns: list[Conn] = []
    by_key: dict[tuple[str, int, str, int], tuple[Conn, int]] = {}
    get = by_key.get
    # The same lookup keyed by the raw 12 bytes of addresses and ports as they sit in an
    # IPv4 frame (one slice, no address decoding), for the fast path's non-SYN segments:
    # key -> (segs, from_client, direction, source, destination, address sum), where the
    # lists are those of the connection ``by_key`` maps that 4-tuple to. ``by_key`` changes
    # only in ``_place``; after each call the two affected keys are refreshed here (or, for
    # a frame decoded by the general path, the whole map is dropped).
    fast: dict[bytes, tuple[list[Seg], bytearray, int, str, str, int]] = {}
    fget = fast.get
    addr = dec.addr
    fast_ts = _FAST_TS.unpack_from
    fast_hdr = _FAST.unpack_from
    from_bytes = int.from_bytes
    m6144, m3072, m1536, m768 = _M6144, _M3072, _M1536, _M768
    nnts = _NOP_NOP_TS_WORD
    # Classic pcap records are walked here (the file's bulk); pcapng through ``records()``.
    classic = cap.format == "pcap"
    it = None if classic else cap.records()
    end_of_data = len(data)
    lt = cap.linktype or 0
    scale = 0.0
    rec: Any = None
    if classic:
        rec_struct, scale = cap.pcap_layout()
        rec = rec_struct.unpack_from
    index = 0
    nxt = 24  # next classic record header
    while True:
        if it is None:
            if nxt >= end_of_data:
                break
            index += 1
            if nxt + 16 > end_of_data:
                cap._truncated(index, f"record header has {end_of_data - nxt} of 16 bytes")
                index -= 1
                break
            sec, frac, incl, orig = rec(data, nxt)
            off = nxt + 16
            nxt = off + incl
            if nxt > end_of_data:
                cap.cut_record(index, off, incl)
                index -= 1
                break
            t = sec + frac * scale
        else:
            r = next(it, None)
            if r is None:
                break
            index, t, lt, off, incl, orig = r
        # fast path: Ethernet, IPv4 without options or fragmentation, whole frame captured
        if lt == 1 and incl == orig and incl >= 54:
            if incl >= 66:
                etype, vihl, total, frag, proto, sport, dport, seq, ack, doff, flags, win, \
                    csum, optw, tsval, tsecr = fast_ts(data, off)
            else:
                etype, vihl, total, frag, proto, sport, dport, seq, ack, doff, flags, win, \
                    csum = fast_hdr(data, off)
                optw = tsval = tsecr = 0
            if etype == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF \
                    and 40 <= total <= incl - 14:
                thl = (doff >> 4) * 4
                if 20 <= thl <= total - 20:
                    p = off + 14
                    t0 = p + 20
                    hp = t0 + thl
                    end = p + total
                    key = data[p + 12:p + 24]  # source, destination, ports
                    ent = fget(key)
                    if ent is None:
                        sa = addr.get(key[:4]) or dec._a(key[:4])
                        da = addr.get(key[4:8]) or dec._a(key[4:8])
                        asum = sa[1] + da[1]
                    else:
                        asum = ent[5]
                    payload = data[hp:end]
                    if defer:
                        checksum = pending
                    else:
                        # One sum over the IPv4 header and the TCP segment: a valid IPv4 header
                        # sums to 0 (mod 0xffff), so the total checks the TCP checksum and the
                        # header's together; only a failure needs them apart. (An error in both
                        # that cancels out would need deltas summing to 0 mod 0xffff; a NAT that
                        # fixes neither checksum leaves 2*delta, nonzero since 0xffff is odd.)
                        # The headers and the payload are summed apart, so the payload is read
                        # from the slice the segment keeps: as 2**16 == 1 (mod 0xffff), the
                        # headers (an even length) need no shift, and an odd payload, padded
                        # with a zero byte, is the payload times 2**8.
                        n = from_bytes(data[p:hp], "big")
                        plen = end - hp
                        if plen:
                            v = from_bytes(payload, "big")
                            if plen > 96:
                                if plen > 1536:
                                    v = _shrink(v)
                                else:
                                    if plen > 768:
                                        v = (v >> 6144) + (v & m6144)
                                    v = (v >> 3072) + (v & m3072)
                                    v = (v >> 1536) + (v & m1536)
                                    v = (v >> 768) + (v & m768)
                            n += v << 8 if plen & 1 else v
                        ps = asum + 6 + total - 20
                        if (n + ps) % 0xFFFF == 0:
                            checksum = "ok"
                        elif from_bytes(data[p:t0], "big") % 0xFFFF:
                            checksum = "bad-ip"
                        elif csum == (ps - 1) % 0xFFFF + 1:
                            checksum = "partial"
                        else:
                            checksum = "bad"
                    if ent is not None and thl == 32 and optw == nnts and not flags & SYN:
                        # the common case: a known connection, timestamps the only option
                        ent[0].append(Seg(index, t, ent[3], ent[4], sport, dport, seq, ack,
                                          flags, win, payload, None, None, False, (),
                                          (tsval, tsecr), (), checksum, total, False))
                        ent[1].append(ent[2])
                        continue
                    if ent is None:
                        src, dst = sa[0], da[0]
                    else:
                        src, dst = ent[3], ent[4]
                    mss = wscale = ts = None
                    sack_perm = False
                    sack = ()
                    unknown = ()
                    if thl == 32 and optw == nnts:
                        ts = (tsval, tsecr)
                    elif thl > 20:
                        mss, wscale, sack_perm, sack, ts, unknown, bad = _options(
                            data, t0 + 20, hp)
                        if bad:
                            dec.note("with malformed TCP options", index)
                    seg = Seg(index, t, src, dst, sport, dport, seq, ack, flags, win, payload,
                              mss, wscale, sack_perm, sack, ts, unknown, checksum, total,
                              False)
                    if ent is not None and not flags & SYN:
                        ent[0].append(seg)
                        ent[1].append(ent[2])
                        continue
                    k = (src, sport, dst, dport)
                    hit = get(k)
                    if hit is not None and not flags & SYN:
                        c, d = hit
                        c.segs.append(seg)
                        c.from_client.append(d)
                    else:
                        _place(seg, hit, conns, by_key, leg)
                    hit = get(k)
                    if hit is not None:
                        c, d = hit
                        fast[key] = (c.segs, c.from_client, d, src, dst, asum)
                    hit = get((dst, dport, src, sport))
                    if hit is not None:
                        c, d = hit
                        fast[key[4:8] + key[:4] + key[10:12] + key[8:10]] = (
                            c.segs, c.from_client, d, dst, src, asum)
                    continue
        seg = frame(data, lt, off, off + incl, orig, index, t)
        if seg is None:
            continue
        hit = get((seg.src, seg.sport, seg.dst, seg.dport))
        if hit is not None and not seg.flags & SYN:
            c, d = hit
            c.segs.append(seg)
            c.from_client.append(d)
            continue
        _place(seg, hit, conns, by_key, leg)
        fast.clear()
    if classic:
        cap.packets = index
    if defer:
        assert checksums is not None
        codes, why = checksums()
        if codes is None or not _fill_checksums(conns, codes):
            # the other process failed (or missed frames): the same walk here, for every
            # status still pending
            codes = bytearray(status_buffer_size(len(data)))
            fast_checksums(cap, codes)
            _fill_checksums(conns, codes)
            cap.notes.append(f"{cap.path}: {why or 'checksum statuses incomplete'}; "
                             "checksums computed in this process")
    tcp = sum(len(c.segs) for c in conns)  # every TCP segment joined a connection
    notes = list(cap.notes) + dec.notes()
    if dec.non_tcp:
        notes.append(f"{cap.path}: {dec.non_tcp} frame(s) not TCP (ignored)")
    for i, c in enumerate(conns, 1):
        c.number = i
        rebuild(c)
    one_way = sum(1 for c in conns if not all(c.directions()))
    if one_way:
        notes.append(f"{cap.path}: {one_way} connection(s) captured in one direction only")
    return Leg(cap.path, conns, notes, cap.packets, leg, tcp)


def _place(seg: Seg, hit: tuple[Conn, int] | None, conns: list[Conn],
           by_key: dict[tuple[str, int, str, int], tuple[Conn, int]], leg: str) -> None:
    """Attach a SYN or a segment of an unknown 4-tuple, starting a connection if needed."""
    flags = seg.flags
    if hit is not None:
        c, d = hit
        if not flags & SYN:
            c.segs.append(seg)
            c.from_client.append(d)
            return
        if flags & ACK:  # SYN-ACK: belongs to the open connection unless it is reversed
            if not d:
                c.segs.append(seg)
                c.from_client.append(d)
                return
        elif d and c.isn_c == seg.seq:  # retransmitted SYN
            c.segs.append(seg)
            c.from_client.append(d)
            return
        elif d and c.isn_c is None and not any(c.from_client):
            # only the server side was seen so far (its SYN-ACK or data): this SYN is ours
            c.isn_c = seg.seq
            c.segs.append(seg)
            c.from_client.append(d)
            return
        if d and c.isn_c is not None and not _finished(c):
            c.problems.append(f"a new SYN with another ISN (frame {seg.index}) started a new "
                              "connection on this 4-tuple before this one had finished")
    if flags & SYN and not flags & ACK:
        client, server = (seg.src, seg.sport), (seg.dst, seg.dport)
    elif flags & SYN:  # a SYN-ACK whose SYN was not captured
        client, server = (seg.dst, seg.dport), (seg.src, seg.sport)
    elif seg.sport > seg.dport or (seg.sport == seg.dport and seg.src < seg.dst):
        client, server = (seg.src, seg.sport), (seg.dst, seg.dport)
    else:
        client, server = (seg.dst, seg.dport), (seg.src, seg.sport)
    c = Conn(leg, client, server)
    if flags & SYN and not flags & ACK:
        c.isn_c = seg.seq
    d = 1 if (seg.src, seg.sport) == client else 0
    c.segs.append(seg)
    c.from_client.append(d)
    conns.append(c)
    by_key[(*client, *server)] = (c, 1)
    by_key[(*server, *client)] = (c, 0)


def _finished(c: Conn) -> bool:
    sides = set()
    for s, d in zip(c.segs, c.from_client, strict=True):
        if s.flags & RST:
            return True
        if s.flags & FIN:
            sides.add(d)
    return sides == {0, 1}


def rebuild(c: Conn) -> None:
    """Fill a connection's derived fields from its segments (one pass plus reassembly)."""
    segs, dirs = c.segs, c.from_client
    syn_c = syn_s = None
    first_seq: list[int | None] = [None, None]  # [s2c, c2s]
    fin: list[Seg | None] = [None, None]
    rst: list[Seg] = []
    for i, s in enumerate(segs):
        f = s.flags
        if not f & (SYN | FIN | RST):  # most segments: nothing to note
            continue
        d = dirs[i]
        if f & SYN:
            if d and not f & ACK:
                if syn_c is None:
                    syn_c = s
            elif not d and syn_s is None:
                syn_s = s
        if f & FIN and fin[d] is None:
            fin[d] = s
        if f & RST:
            rst.append(s)
    # the first sequence number each side sent outside a RST (usually the first segments)
    for i, s in enumerate(segs):
        d = dirs[i]
        if first_seq[d] is None and not s.flags & RST:
            first_seq[d] = s.seq
            if first_seq[1 - d] is not None:
                break
    first_data = next((s.time for s in segs if s.payload), None)
    c.syn_time = syn_c.time if syn_c else None
    c.first_data_time = first_data
    c.isn_c = syn_c.seq if syn_c else None
    c.isn_s = syn_s.seq if syn_s else None
    c.fin_c, c.fin_s = fin[1], fin[0]
    c.rst = rst
    c.handshake_captured = syn_c is not None and syn_s is not None
    if not c.handshake_captured:
        missing = "SYN and SYN-ACK" if syn_c is None and syn_s is None else \
            "SYN" if syn_c is None else "SYN-ACK"
        c.problems.append(f"handshake not captured ({missing} missing)")
    seen_c, seen_s = 1 in dirs, 0 in dirs
    if not seen_s:
        c.problems.append("only client->server direction captured")
    elif not seen_c:
        c.problems.append("only server->client direction captured")
    neg: dict[str, Any] = {}
    neg["mss_c"] = syn_c.mss if syn_c else None
    neg["mss_s"] = syn_s.mss if syn_s else None
    if syn_c and syn_s:
        ws = syn_c.wscale is not None and syn_s.wscale is not None
        neg["wscale"] = ws
        neg["ws_c"] = min(syn_c.wscale, 14) if ws else 0  # type: ignore[type-var]
        neg["ws_s"] = min(syn_s.wscale, 14) if ws else 0  # type: ignore[type-var]
        neg["sack"] = syn_c.sack_perm and syn_s.sack_perm
        neg["ts"] = syn_c.ts is not None and syn_s.ts is not None
    else:
        neg.update(wscale=None, ws_c=None, ws_s=None, sack=None, ts=None)
    c.negotiated = neg
    # stream bases: ISN+1 when known, else derived from the peer's SYN-ACK, else first seq
    base_c = (c.isn_c + 1) & M32 if c.isn_c is not None else \
        syn_s.ack if syn_s is not None else first_seq[1]
    base_s = (c.isn_s + 1) & M32 if c.isn_s is not None else first_seq[0]
    c.base_c2s, c.base_s2c = base_c, base_s
    c.conflicts = []
    c.stream_c2s, c.gaps_c2s = _reassemble(c, 1, base_c, "c2s")
    c.stream_s2c, c.gaps_s2c = _reassemble(c, 0, base_s, "s2c")
    c.judged = None
    c.cache = {}


def _reassemble(c: Conn, want: int, base: int | None,
                name: str) -> tuple[bytes, list[tuple[int, int]]]:
    """One direction's byte stream by relative offset; records gaps and conflicting copies.

    Streams are nearly always captured in order, retransmissions aside: those are joined
    once at the end (no growing buffer, no final copy) while exact copies of a piece already
    taken are skipped; anything else goes on in ``_reassemble_any`` from there."""
    if base is None:
        return b"", []
    dirs = c.from_client
    mine = compress(c.segs, dirs if want else map(not_, dirs))
    pieces: list[bytes] = []
    starts: list[int] = []  # stream offset of each piece
    nxt = 0
    for s in mine:
        p = s.payload
        if not p:
            continue
        rel = (s.seq + (1 if s.flags & SYN else 0) - base) & M32
        if rel == nxt:
            pieces.append(p)
            starts.append(rel)
            nxt += len(p)
            continue
        if rel < nxt:  # a retransmission: an exact copy of a piece is nothing new
            j = bisect_left(starts, rel)
            if j < len(starts) and starts[j] == rel and pieces[j] == p:
                continue
        return _reassemble_any(c, chain((s,), mine), base, name,
                               bytearray(b"".join(pieces)), nxt)
    return b"".join(pieces), []


def _reassemble_any(c: Conn, segs: Iterator[Seg], base: int, name: str, buf: bytearray,
                    nxt: int) -> tuple[bytes, list[tuple[int, int]]]:
    """Reassembly of ``segs`` (one direction's, in capture order) onto ``buf``, which holds
    the stream up to offset ``nxt``: gaps zero-filled, overlaps compared."""
    pending: list[tuple[int, int, bytes]] = []  # heap of (offset, frame, bytes)
    conflicts = c.conflicts
    before = 0
    for s in segs:
        p = s.payload
        if not p:
            continue
        rel = (s.seq + (1 if s.flags & SYN else 0) - base) & M32
        if rel >= HALF:  # starts before offset 0
            rel -= 1 << 32
            if rel + len(p) <= 0:
                before += 1
                continue
            p = p[-rel:]
            rel = 0
        n = len(p)
        if rel == nxt:
            buf += p
            nxt += n
        elif rel + n <= nxt:
            if buf[rel:rel + n] != p:
                conflicts.append((name, rel + _mismatch(buf, rel, p), s.index))
            continue
        elif rel < nxt:
            k = nxt - rel
            if buf[rel:nxt] != p[:k]:
                conflicts.append((name, rel + _mismatch(buf, rel, p), s.index))
            buf += p[k:]
            nxt += n - k
        else:
            heapq.heappush(pending, (rel, s.index, p))
            continue
        while pending and pending[0][0] <= nxt:
            nxt = _merge(buf, nxt, heapq.heappop(pending), conflicts, name)
    gaps: list[tuple[int, int]] = []
    while pending:
        rel, idx, p = heapq.heappop(pending)
        if rel > nxt:
            gaps.append((nxt, rel))
            buf += bytes(rel - nxt)
            nxt = rel
        nxt = _merge(buf, nxt, (rel, idx, p), conflicts, name)
    if gaps:
        total = sum(b - a for a, b in gaps)
        c.problems.append(f"{name}: {len(gaps)} gap(s) of {total} byte(s) never captured "
                          f"(first at offset {gaps[0][0]}); zero-filled")
    if before:
        c.problems.append(f"{name}: {before} segment(s) with data before the stream start")
    return bytes(buf), gaps


def _merge(buf: bytearray, nxt: int, item: tuple[int, int, bytes],
           conflicts: list[tuple[str, int, int]], name: str) -> int:
    rel, idx, p = item
    n = len(p)
    k = min(nxt - rel, n)
    if buf[rel:rel + k] != p[:k]:
        conflicts.append((name, rel + _mismatch(buf, rel, p), idx))
    if rel + n > nxt:
        buf += p[k:]
        return rel + n
    return nxt


def _mismatch(buf: bytearray, rel: int, p: bytes) -> int:
    """First offset (relative to ``rel``) where ``p`` differs from ``buf``."""
    for i in range(min(len(p), len(buf) - rel)):
        if buf[rel + i] != p[i]:
            return i
    return 0


def stream_bytes(c: Conn, from_client: bool) -> bytes:
    """The reassembled stream one side sent (client->server when ``from_client``)."""
    return c.stream_c2s if from_client else c.stream_s2c


__all__ = ["ACK", "FIN", "MTU", "RST", "SYN", "Conn", "Leg", "Seg", "leg_from_capture",
           "read_leg", "rebuild", "stream_bytes"]

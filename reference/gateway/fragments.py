"""IPv4 fragment reassembly (RFC 791 §3.2), owned by the normal path: it has packet buffers,
the fast path has none and never reassembles (a fragmented request is a handoff reason).

Bounded: at most ``max_datagrams`` datagrams in progress and ``max_bytes`` held in all, each
expiring ``timeout`` seconds after its first fragment (RFC 791 suggests 15 s); overlapping
fragments whose bytes disagree (a known evasion technique) drop the whole datagram.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reference.gateway import codec

Key = tuple[bytes, bytes, int, int]
"""(source, destination, identification, protocol)."""


@dataclass(slots=True)
class _Datagram:
    first_seen: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    """Fragment offset (bytes) -> payload bytes (everything after the IP header)."""
    total: int | None = None
    """Payload length, known once the last fragment (MF clear) has arrived."""
    header: bytes = b""
    """IP header of the first fragment (offset 0), reused for the reassembled packet."""

    def held(self) -> int:
        return sum(map(len, self.pieces.values()))


class Reassembler:
    def __init__(self, *, timeout: float = 15.0, max_datagrams: int = 1024,
                 max_bytes: int = 4 << 20) -> None:
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self._dgrams: dict[Key, _Datagram] = {}
        self.held_bytes = 0
        self.dropped: dict[str, int] = {}

    def _drop(self, key: Key, why: str) -> None:
        d = self._dgrams.pop(key, None)
        if d is not None:
            self.held_bytes -= d.held()
        self.dropped[why] = self.dropped.get(why, 0) + 1

    def add(self, raw: bytes | bytearray | memoryview, now: float) -> bytes | None:
        """Take one IPv4 fragment; return the reassembled packet once it is complete."""
        self.expire(now)
        data = bytes(raw)
        ihl = (data[0] & 0x0F) * 4
        total_len = int.from_bytes(data[2:4], "big")
        ident = int.from_bytes(data[4:6], "big")
        ff = int.from_bytes(data[6:8], "big")
        more = bool(ff & 0x2000)
        offset = (ff & 0x1FFF) * 8
        key: Key = (data[12:16], data[16:20], ident, data[9])
        body = data[ihl:total_len]
        d = self._dgrams.get(key)
        if d is None:
            if len(self._dgrams) >= self.max_datagrams:
                self.dropped["too_many_datagrams"] = self.dropped.get("too_many_datagrams",
                                                                      0) + 1
                return None
            d = self._dgrams[key] = _Datagram(first_seen=now)
        if self.held_bytes + len(body) > self.max_bytes:
            self._drop(key, "reassembly_memory")
            return None
        old = d.pieces.get(offset)
        if old is not None and old != body[:len(old)] and body != old[:len(body)]:
            self._drop(key, "overlap_mismatch")
            return None
        for off, piece in d.pieces.items():  # other overlapping fragments must agree too
            lo, hi = max(off, offset), min(off + len(piece), offset + len(body))
            if lo < hi and piece[lo - off:hi - off] != body[lo - offset:hi - offset]:
                self._drop(key, "overlap_mismatch")
                return None
        if old is None or len(body) > len(old):
            self.held_bytes += len(body) - (len(old) if old else 0)
            d.pieces[offset] = body
        if offset == 0:
            d.header = data[:ihl]
        if not more:
            d.total = offset + len(body)
        return self._complete(key, d)

    def _complete(self, key: Key, d: _Datagram) -> bytes | None:
        if d.total is None or not d.header:
            return None
        buf = bytearray(d.total)
        covered = 0
        for off in sorted(d.pieces):
            piece = d.pieces[off]
            if off > covered:
                return None  # a hole
            end = min(off + len(piece), d.total)
            buf[off:end] = piece[:end - off]
            covered = max(covered, end)
        if covered < d.total:
            return None
        self._dgrams.pop(key)
        self.held_bytes -= d.held()
        hdr = bytearray(d.header)
        total = len(hdr) + d.total
        hdr[2:4] = total.to_bytes(2, "big")
        hdr[6:8] = (int.from_bytes(hdr[6:8], "big") & 0x4000).to_bytes(2, "big")  # keep DF
        hdr[10:12] = b"\0\0"
        hdr[10:12] = codec.internet_checksum(bytes(hdr)).to_bytes(2, "big")
        return bytes(hdr) + bytes(buf)

    def expire(self, now: float) -> None:
        for key in [k for k, d in self._dgrams.items() if now - d.first_seen > self.timeout]:
            self._drop(key, "reassembly_timeout")

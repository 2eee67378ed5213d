"""Out-of-order receive data: a range set over ``PacketBuffers.out_of_order``.

The handoff (``spec.handoff``) already stores early bytes in that dict, keyed by offset from
IRS + 1, so the dict stays the single store and this class only keeps it tidy: pieces are
disjoint and never adjacent (each insert coalesces), so when RCV.NXT reaches a piece at most
one piece can extend it. Keys wrap mod 2^32 like sequence numbers, which is why every
comparison goes through ``spec.seq`` relative to RCV.NXT, never by sorting raw keys.

In-order segments never come here (the connection appends them to the receive buffer
directly, the fast path of style.md §7 item 7); only data beyond a hole does.
"""

from __future__ import annotations

from spec.seq import seq_add, seq_diff, seq_le, seq_lt


class Reassembly:
    """Holes and the bytes after them, for one receive direction."""

    __slots__ = ("origin", "store")

    def __init__(self, store: dict[int, bytes], origin: int) -> None:
        self.store = store
        """offset from ``origin`` (mod 2^32) -> bytes; shared with ``PacketBuffers``."""
        self.origin = origin
        """IRS + 1: the sequence number of offset 0."""

    def __bool__(self) -> bool:
        return bool(self.store)

    @property
    def nbytes(self) -> int:
        return sum(map(len, self.store.values()))

    def _start(self, key: int) -> int:
        return seq_add(self.origin, key)

    def adopt(self, rcv_nxt: int) -> tuple[bytes, int]:
        """Normalise pieces stored by someone else (the handoff): overlaps merged, pieces
        at or before RCV.NXT delivered. Returns (bytes now in order, new RCV.NXT)."""
        pieces = [(self._start(k), v) for k, v in self.store.items() if v]
        self.store.clear()
        out = bytearray()
        progress = True
        while progress:
            progress = False
            for start, data in list(pieces):
                if seq_le(start, rcv_nxt):
                    pieces.remove((start, data))
                    end = seq_add(start, len(data))
                    if seq_lt(rcv_nxt, end):
                        out += data[seq_diff(rcv_nxt, start):]
                        rcv_nxt = end
                        progress = True
        for start, data in pieces:
            self.insert(start, data, rcv_nxt)
        return bytes(out), rcv_nxt

    def insert(self, seq: int, data: bytes, rcv_nxt: int) -> None:
        """Store ``data`` (which starts after RCV.NXT), merging with what overlaps or touches.

        Duplicates and overlaps keep the bytes already stored; a correct peer sends the same
        bytes again, so which copy wins does not matter.
        """
        a = seq_diff(seq, rcv_nxt)
        b = a + len(data)
        lo, hi = a, b
        touching: list[tuple[int, int, bytes]] = []
        for key, piece in self.store.items():
            s = seq_diff(self._start(key), rcv_nxt)
            e = s + len(piece)
            if s <= b and e >= a:
                touching.append((key, s, piece))
                lo, hi = min(lo, s), max(hi, e)
        if not touching:
            self.store[seq_diff(seq, self.origin)] = bytes(data)
            return
        merged = bytearray(hi - lo)
        merged[a - lo:b - lo] = data
        for key, s, piece in touching:
            merged[s - lo:s - lo + len(piece)] = piece
            del self.store[key]
        self.store[seq_diff(seq_add(rcv_nxt, lo), self.origin)] = bytes(merged)

    def pop_ready(self, rcv_nxt: int) -> bytes:
        """Bytes that RCV.NXT now reaches (possibly none); pieces it passed are dropped."""
        out = b""
        for key in [k for k in self.store if seq_le(self._start(k), rcv_nxt)]:
            piece = self.store.pop(key)
            start = self._start(key)
            if seq_lt(rcv_nxt, seq_add(start, len(piece))):
                out = piece[seq_diff(rcv_nxt, start):]  # at most one piece straddles
        return out

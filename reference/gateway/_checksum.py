"""Internet checksums (RFC 1071) and their incremental update (RFC 1624).

Everything works modulo 0xffff: since 2**16 == 1 (mod 0xffff), the big-endian integer of a
buffer is congruent to the sum of its 16-bit words, so ``int.from_bytes(buf) % 0xffff`` does
the whole one's complement sum in C. ``bench/bench_codec.py`` measures it against summing
``struct``/``array`` words (dpkt's way): it wins at every size we forward.

``fold`` maps any positive sum to the value end-around-carry addition would give (1..0xffff),
so the full and the incremental computations agree bit for bit, not only modulo 0xffff.
"""

from __future__ import annotations

Buffer = bytes | bytearray | memoryview
"""Byte buffers the codec reads (memoryviews of unsigned bytes)."""

M16 = 0xFFFF
M32 = 0xFFFFFFFF
TCP_PROTO = 6


def fold(s: int) -> int:
    """The one's complement (end-around carry) 16-bit sum of a non-negative integer sum."""
    return (s - 1) % M16 + 1 if s else 0


def word_sum(data: Buffer) -> int:
    """An unfolded integer congruent (mod 0xffff) to the 16-bit word sum of ``data``.

    An odd trailing byte is the high byte of a last word padded with zero (RFC 1071), which
    is the same as shifting the whole integer left by 8 bits.
    """
    n = int.from_bytes(data, "big")
    return n << 8 if len(data) & 1 else n


def internet_checksum(data: Buffer) -> int:
    """RFC 1071 checksum of ``data``; 0 when ``data`` already holds a valid checksum."""
    return ~fold(word_sum(data)) & M16


def pseudo_sum(src: bytes, dst: bytes, length: int) -> int:
    """Unfolded sum of the TCP pseudo-header (v4: 12 bytes, v6: 40 bytes).

    Both layouts reduce to the same congruence: the addresses, the protocol number and the
    segment length (a 32-bit field in v6, a 16-bit one in v4: equal modulo 0xffff).
    """
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + TCP_PROTO + length


def tcp_checksum(src: bytes, dst: bytes, tcp_segment: Buffer) -> int:
    """TCP checksum over pseudo-header plus segment (v4 or v6 by address length).

    The segment's checksum field is included as it is: zero it to compute the value to store;
    leave it in to verify (the result is 0 for a valid segment).
    """
    return ~fold(word_sum(tcp_segment) + pseudo_sum(src, dst, len(tcp_segment))) & M16


def csum_adjust(csum: int, delta: int) -> int:
    """Apply ``delta`` (a non-negative sum of ``~old + new`` terms) to a stored checksum.

    RFC 1624 eqn. 3, ``HC' = ~(~HC + ~m + m')``, generalised to many changed words at once so
    a rewrite folds only once.
    """
    return ~fold((~csum & M16) + delta) & M16


def partial_adjust(csum: int, delta: int) -> int:
    """Apply ``delta`` to a CHECKSUM_PARTIAL field, which holds the *non-inverted* folded
    pseudo-header sum (virtio/veth offload): ``fold(c + ~old + new)``.
    """
    return fold(csum + delta)


def replace_term(old: bytes, new: bytes) -> int:
    """The ``~old + new`` delta term for an even-length, word-aligned field (e.g. addresses)."""
    mask = (1 << (8 * len(old))) - 1
    return (~int.from_bytes(old, "big") & mask) + int.from_bytes(new, "big")


def csum_replace16(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for one changed word-aligned 16-bit field."""
    return csum_adjust(csum, (~old & M16) + new)


def csum_replace32(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for one changed word-aligned 32-bit field (two 16-bit words)."""
    return csum_adjust(csum, (~old & M32) + new)

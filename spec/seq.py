"""32-bit modular sequence-number arithmetic (RFC 9293 §3.4, RFC 1982 serial arithmetic).

Every sequence, acknowledgment, SACK edge and TCP timestamp in the project goes through these
functions, in the gateway and in the proofs alike (see ``spec.bv`` for how one definition
serves both).

The one subtle point is the pair of numbers exactly 2^31 apart. RFC 9293 implementations
compare with a signed 32-bit difference, which makes *both* ``a < b`` and ``b < a`` true for
such a pair; RFC 1982 §3.2 leaves the pair undefined. We follow RFC 1982: :func:`seq_lt` is
false both ways for that pair, :func:`seq_undefined` names it, and
:func:`seq_lt_rfc9293` keeps the signed-difference reading so that a proof can state exactly
where the two disagree (only there).
"""

from __future__ import annotations

from typing import Any

from spec.bv import MASK32, and_, ite, not_, or_, ule, ult

SEQ_MOD = 1 << 32
HALF = 1 << 31
"""The distance at which serial order is undefined (RFC 1982 §3.2)."""


def seq_add(a: Any, n: Any) -> Any:
    """a + n (mod 2^32): the sequence number n octets after a."""
    return (a + n) & MASK32


def seq_sub(a: Any, n: Any) -> Any:
    """a - n (mod 2^32): the sequence number n octets before a."""
    return (a - n) & MASK32


def seq_diff(a: Any, b: Any) -> Any:
    """Forward distance from b to a, (a - b) mod 2^32, in [0, 2^32)."""
    return (a - b) & MASK32


def seq_lt(a: Any, b: Any) -> Any:
    """a precedes b (RFC 1982): b is 1 .. 2^31-1 octets after a."""
    d = seq_diff(b, a)
    return and_(d != 0, ult(d, HALF))


def seq_le(a: Any, b: Any) -> Any:
    """a precedes or equals b."""
    return ult(seq_diff(b, a), HALF)


def seq_gt(a: Any, b: Any) -> Any:
    """a follows b."""
    return seq_lt(b, a)


def seq_ge(a: Any, b: Any) -> Any:
    """a follows or equals b."""
    return seq_le(b, a)


def seq_undefined(a: Any, b: Any) -> Any:
    """a and b are exactly 2^31 apart: neither precedes the other (RFC 1982 §3.2)."""
    return seq_diff(a, b) == HALF


def seq_lt_rfc9293(a: Any, b: Any) -> Any:
    """The signed-difference reading used by most stacks: (int32)(a - b) < 0."""
    return ule(HALF, seq_diff(a, b))


def seq_max(a: Any, b: Any) -> Any:
    """The later of a and b in serial order (a when they are 2^31 apart)."""
    return ite(seq_lt(a, b), b, a)


def seq_in_window(x: Any, left: Any, size: Any) -> Any:
    """left <= x < left + size (mod 2^32); meaningful for size <= 2^31."""
    return ult(seq_diff(x, left), size)


def segment_acceptable(seg_seq: Any, seg_len: Any, rcv_nxt: Any, rcv_wnd: Any) -> Any:
    """RFC 9293 §3.10.7.4, the four-case acceptability test for an arriving segment.

    ``seg_len`` counts SYN and FIN as one octet each, as the RFC's SEG.LEN does.
    """
    start_ok = seq_in_window(seg_seq, rcv_nxt, rcv_wnd)
    end_ok = seq_in_window(seq_add(seg_seq, seg_len - 1), rcv_nxt, rcv_wnd)
    return ite(
        seg_len == 0,
        ite(rcv_wnd == 0, seg_seq == rcv_nxt, start_ok),
        and_(not_(rcv_wnd == 0), or_(start_ok, end_ok)),
    )


def syn_opens_new_incarnation(timestamps: bool, ts_recent: Any, tsval: Any, rcv_nxt: Any,
                              seq: Any) -> Any:
    """Whether a SYN may open a new incarnation of a 4-tuple whose previous connection is in
    TIME-WAIT (or its splice is lingering after both FINs): with timestamps on the old
    connection and in the SYN, SEG.TSval > TS.Recent (RFC 6191 §2); otherwise SEG.SEQ >
    RCV.NXT (RFC 1122 §4.2.2.13)."""
    if timestamps and tsval is not None and ts_recent is not None:
        return seq_lt(ts_recent, tsval)
    return seq_lt(rcv_nxt, seq)

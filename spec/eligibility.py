"""The eligibility predicate: which path handles a client's first request segment, and why.

Claim 1 has the fast path "determine that the service request data packet cannot be processed
by the fast path module" and hand it over. This module names every such condition (a
:class:`HandoffReason`), in a fixed priority order, so that the gateway, the proofs, the
conformance checker and the docs agree on the reason a session was handed off.

Only the first payload segment of a session is judged (fast-path states SYN_RCVD and
ESTABLISHED): before it, the fast path only handshakes; after the splice it relays every
segment; after a handoff the normal path owns the session.

:func:`classify` runs on ints/bools (the gateway) and on Z3 terms (the proofs).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from spec.bv import and_, ite, not_
from spec.seq import seq_lt


class Path(enum.IntEnum):
    FAST = 0
    NORMAL = 1


class HandoffReason(enum.IntEnum):
    """Why the fast path hands a first request segment to the normal path (0 = it does not)."""

    NONE = 0
    IP_FRAGMENT = 1
    """The segment arrived as an IP fragment; the fast path never reassembles."""
    UNSUPPORTED_FLAGS = 2
    """URG (urgent data), or a SYN/RST/ECN combination the fast path does not implement."""
    UNSUPPORTED_OPTION = 3
    """A TCP option kind the fast path cannot translate (e.g. MD5/AO signatures, MPTCP)."""
    OUT_OF_ORDER_FIRST_DATA = 4
    """The first payload does not start at RCV.NXT (a hole before it)."""
    OVERLAPPING_FIRST_DATA = 5
    """The first payload starts before RCV.NXT (overlaps the SYN's sequence number)."""
    EARLY_FIN = 6
    """FIN before or with the first request: the full stack handles the half-close."""
    PARTIAL_REQUEST = 7
    """Request line or headers incomplete in this segment: no server can be chosen yet."""
    UNPARSEABLE_REQUEST = 8
    """Not an HTTP/1.x request the virtual service's rules can route."""
    LENGTH_CHANGING_REWRITE = 9
    """The virtual service rewrites the request and the rewrite changes its length."""


def path_of(reason: Any) -> Any:
    """NORMAL for any named reason, FAST for NONE (works on Z3 terms too)."""
    return ite(reason == 0, int(Path.FAST), int(Path.NORMAL))


@dataclass(frozen=True, slots=True)
class SegmentFacts:
    """What the eligibility predicate looks at in a first payload segment.

    Fields are ints/bools for the gateway, Z3 terms for the proofs.
    """

    is_fragment: Any
    unsupported_flags: Any
    unsupported_option: Any
    seq: Any
    rcv_nxt: Any
    payload_len: Any
    fin: Any
    request_complete: Any
    request_parseable: Any
    length_changing_rewrite: Any


def classify(f: SegmentFacts) -> Any:
    """The :class:`HandoffReason` for a first payload segment, NONE when the fast path can
    process it. The first matching condition in the order below is the reason."""
    # Starting before RCV.NXT overlaps what was received; anything else that does not start
    # exactly at RCV.NXT is out of order, including the pair 2^31 apart that neither precedes.
    overlapping = seq_lt(f.seq, f.rcv_nxt)
    out_of_order = and_(not_(f.seq == f.rcv_nxt), not_(overlapping))
    return ite(f.is_fragment, int(HandoffReason.IP_FRAGMENT),
           ite(f.unsupported_flags, int(HandoffReason.UNSUPPORTED_FLAGS),
           ite(f.unsupported_option, int(HandoffReason.UNSUPPORTED_OPTION),
           ite(out_of_order, int(HandoffReason.OUT_OF_ORDER_FIRST_DATA),
           ite(overlapping, int(HandoffReason.OVERLAPPING_FIRST_DATA),
           ite(f.fin, int(HandoffReason.EARLY_FIN),
           ite(not_(f.request_complete), int(HandoffReason.PARTIAL_REQUEST),
           ite(not_(f.request_parseable), int(HandoffReason.UNPARSEABLE_REQUEST),
           ite(f.length_changing_rewrite, int(HandoffReason.LENGTH_CHANGING_REWRITE),
               int(HandoffReason.NONE))))))))))


# --- the HTTP/1.x request head, as far as eligibility needs it ----------------------------

HEAD_END = b"\r\n\r\n"
_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH",
                      b"CONNECT", b"TRACE"})


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The parts of an HTTP/1.x request head that routing rules read."""

    method: bytes
    target: bytes
    version: bytes
    host: bytes
    head_len: int
    """Bytes up to and including the blank line."""


def request_head_complete(payload: bytes) -> bool:
    """The request line and every header are in ``payload`` (the blank line was seen)."""
    return HEAD_END in payload


def parse_request_head(payload: bytes) -> RequestHead | None:
    """Parse a complete HTTP/1.x request head; None when it is not one we can route.

    Conservative on purpose (RFC 9112): anything ambiguous goes to the normal path, which
    answers it properly: a second Host line (§3.2, a request smuggling vector), a bare CR or
    LF inside a line, whitespace before a colon. An absolute-form target's authority takes
    precedence over Host (§3.2.2).
    """
    end = payload.find(HEAD_END)
    if end < 0:
        return None
    lines = payload[:end].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if method not in _METHODS or not version.startswith(b"HTTP/1.") or not target:
        return None
    host: bytes | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            return None
        if name.lower() == b"host":
            if host is not None:
                return None
            host = value.strip()
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        authority = target.split(b"/", 3)[2]
        host = authority.rpartition(b"@")[2]
    return RequestHead(method, target, version, host or b"", end + len(HEAD_END))

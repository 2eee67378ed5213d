"""An abstract TCP segment: the header fields the model reasons about, without the wire codec.

The model, the proofs' counterexample traces and the Hypothesis tests speak in these; the
reference gateway's codec maps wire bytes to and from the same fields. ``seq``, ``ack``,
``length`` and the timestamp values may be Z3 terms in proofs, in which case ``payload`` is
None and only ``length`` is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
_FLAG_NAMES = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"),
               (CWR, "W"))


def flag_string(flags: int) -> str:
    """packetdrill-style flags: S, F, R, P, U, E, W; '.' for a bare ACK."""
    s = "".join(ch for bit, ch in _FLAG_NAMES if flags & bit)
    if flags & ACK:
        s += "."
    return s or "-"


@dataclass(frozen=True, slots=True)
class Segment:
    seq: Any
    ack: Any = 0
    flags: int = ACK
    window: Any = 65535
    payload: bytes | None = b""
    length: Any = None
    """Payload length; derived from ``payload`` when None."""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    tsval: Any = None
    tsecr: Any = None
    sack: tuple[tuple[Any, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.length is None:
            object.__setattr__(self, "length", len(self.payload or b""))

    @property
    def seg_len(self) -> Any:
        """RFC 9293 SEG.LEN: payload plus one for SYN and one for FIN."""
        return self.length + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def with_(self, **changes: Any) -> Segment:
        if "payload" in changes and "length" not in changes:
            changes["length"] = None
        return replace(self, **changes)

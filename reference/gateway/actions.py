"""What the core asks its driver to do: the only output of ``Gateway.handle``.

The core never touches a socket or a clock; it returns :class:`Emit` actions (an IP packet to
put on one leg) and reports drops as :class:`Drop` actions (also counted in the stats), and
exposes one deadline (``Gateway.next_deadline``) for the driver's timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Leg = Literal["client", "server"]


@dataclass(frozen=True, slots=True)
class Emit:
    leg: Leg
    packet: bytes
    """A whole IPv4/IPv6 packet with valid checksums."""
    segment_size: int = 0
    """When the packet is larger than the receiver's MSS (a GSO super-frame relayed whole,
    ``CoreSettings.gso_output``): the payload size to cut it into. 0: send as it is."""


@dataclass(frozen=True, slots=True)
class Drop:
    leg: Leg
    reason: str
    """A ``DropReason`` or fast-path reason name, as counted in ``Stats.drops``."""


Action = Emit | Drop

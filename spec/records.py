"""The records of claim 1 of US 9,386,088, and the TCP state the normal path builds.

Naming follows the claim: the fast path keeps a *client session record* and a *(first) proxy
session record* (plus a *server session record* once it opens the server side); on a handoff
the normal path creates a *second proxy session record* and a *second client session record*,
the latter holding the two client ISNs copied from the first, the TCP state variables (a
:class:`TCB`) and the packet buffers (:class:`PacketBuffers`).

Numeric fields hold ints in the gateway and Z3 bit-vectors in proofs (``spec.bv``), which is
why they are typed ``Any``-compatible ``int`` rather than validated on construction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

Seq = Any
"""A 32-bit sequence number: an int in [0, 2^32) or a 32-bit Z3 bit-vector."""

MAX_WSCALE = 14
"""RFC 7323 §2.3: a shift count above 14 is treated as 14."""


@dataclass(frozen=True, slots=True)
class FourTuple:
    """Addresses and ports of one leg, as seen from the remote peer's side."""

    src: str
    sport: int
    dst: str
    dport: int

    def reversed(self) -> FourTuple:
        return FourTuple(self.dst, self.dport, self.src, self.sport)


@dataclass(frozen=True, slots=True)
class SynOptions:
    """TCP options one peer put in its SYN (or SYN/ACK). ``None`` = option absent."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    tsval: Any = None
    """The SYN's TSval, or None when the timestamp option was absent."""


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What one leg agreed on, from our end's point of view (RFC 9293, RFC 7323, RFC 2018).

    ``snd_wscale`` is applied to windows the peer sends us (the peer's shift count);
    ``rcv_wscale`` to windows we send (the shift we announced). Both are 0 unless both SYNs
    carried the option.
    """

    peer_mss: int
    """Largest segment we may send the peer (its MSS option, or 536 per RFC 9293 §3.7.1)."""
    local_mss: int
    """The MSS we announced: the largest segment the peer may send us."""
    snd_wscale: int = 0
    rcv_wscale: int = 0
    sack: bool = False
    timestamps: bool = False


class Owner(enum.IntEnum):
    """Which module owns a client session. Ownership only ever increases (FP -> NP)."""

    FAST_PATH = 0
    NORMAL_PATH = 1


@dataclass(slots=True)
class ClientSessionRecord:
    """The fast path's record of the client side session (claim 1).

    ``rcv_isn`` is the *client session receiving ISN* (the seq of the client's SYN) and
    ``snd_isn`` the *client session sending ISN* (the seq of the gateway's SYN/ACK).
    """

    tuple: FourTuple
    rcv_isn: Seq
    snd_isn: Seq
    syn_options: SynOptions
    negotiated: Negotiated
    ts_sent: Any = None
    """The last TSval the gateway itself sent the client (its SYN/ACK's), if timestamps."""
    ts_recent: Any = None
    """The client's latest TSval seen by the gateway (RFC 7323 TS.Recent)."""
    rcv_wnd_field: int = 0
    """The client's last raw window field (unscaled)."""


@dataclass(slots=True)
class ServerSessionRecord:
    """The fast path's record of the server side session it opened after delayed binding."""

    tuple: FourTuple
    """Gateway's source address/port towards the server, and the server's."""
    snd_isn: Seq
    """ISN of the gateway's SYN to the server."""
    rcv_isn: Seq = None
    """The server's ISN (its SYN/ACK seq), once known."""
    syn_options: SynOptions = field(default_factory=SynOptions)
    """Options the gateway put in its SYN to the server."""
    peer_options: SynOptions | None = None
    """Options in the server's SYN/ACK, once received."""
    negotiated: Negotiated | None = None
    ts_sent: Any = None
    """TSval of the gateway's SYN to the server (the server's TS.Recent after the handshake)."""


@dataclass(slots=True)
class HeldRequest:
    """The one request segment the fast path keeps while the server side opens.

    It is the only payload the fast path ever holds, and it is not acknowledged to the client
    until the server has acknowledged it (ACK safety).
    """

    seq: Seq
    payload: bytes
    tsval: Any = None
    tsecr: Any = None
    window: int = 0


@dataclass(slots=True)
class ProxySessionRecord:
    """The first proxy session record, created by the fast path (claim 1).

    It ties the client session record to the chosen server and, after the splice, to the
    server session record.
    """

    client: ClientSessionRecord
    service: str = ""
    state: Any = None
    """A ``spec.states.FastPathState``."""
    owner: Owner = Owner.FAST_PATH
    server: ServerSessionRecord | None = None
    held: HeldRequest | None = None
    splice: Any = None
    """A ``spec.translate.Splice`` once both legs are established."""
    server_name: str = ""


@dataclass(slots=True)
class TCB:
    """TCP session state variables the normal path creates for the client side (RFC 9293 §3.3.1)."""

    state: Any
    """A ``spec.states.TcpState``."""
    iss: Seq
    irs: Seq
    snd_una: Seq
    snd_nxt: Seq
    snd_wnd: Any
    snd_wl1: Seq
    snd_wl2: Seq
    rcv_nxt: Seq
    rcv_wnd: Any
    mss: int
    """Largest segment we may send (the peer's MSS)."""
    snd_wscale: int
    rcv_wscale: int
    sack_permitted: bool
    ts_enabled: bool
    ts_recent: Any = None
    ts_sent: Any = None


@dataclass(slots=True)
class PacketBuffers:
    """The normal path's packet buffers for one side (claim 1: "one or more packet buffers").

    ``receive`` holds in-order bytes not yet consumed by the proxy; ``out_of_order`` maps a
    sequence offset (from RCV.NXT's origin, IRS + 1) to bytes waiting for a hole to fill;
    ``send`` holds bytes sent or to send and not yet acknowledged (for retransmission).
    """

    capacity: int
    receive: bytearray = field(default_factory=bytearray)
    out_of_order: dict[int, bytes] = field(default_factory=dict)
    send: bytearray = field(default_factory=bytearray)

    def buffered(self) -> int:
        return len(self.receive) + sum(map(len, self.out_of_order.values())) + len(self.send)


@dataclass(slots=True)
class SecondClientSessionRecord:
    """The normal path's client session record (claim 1): both client ISNs, TCB and buffers."""

    tuple: FourTuple
    rcv_isn: Seq
    snd_isn: Seq
    tcb: TCB | None = None
    buffers: PacketBuffers | None = None
    proxy: SecondProxySessionRecord | None = None


@dataclass(slots=True)
class SecondProxySessionRecord:
    """The normal path's proxy session record (claim 1), created from the trigger and the
    client session record of the first proxy session record."""

    first: ProxySessionRecord
    service: str
    trigger_seq: Seq
    trigger_len: Any
    client: SecondClientSessionRecord | None = None
    server_name: str = ""

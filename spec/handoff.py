"""The handoff: the fast path's records plus the triggering segment become a normal-path session.

Theory of operation. The fast path answered the client's SYN itself, so the client is already
synchronized with the gateway: it uses ISN_c (its own) and ISN_g (the gateway's, from the
SYN/ACK). The fast path holds no payload and has sent the client no data when it meets a first
request segment it cannot process (``spec.eligibility``). The normal path must continue that
exact sequence space, or the client sees a gap, a second SYN/ACK or a RST. Claim 1 gives the
recipe, one function below per element:

    C1.d  retrieve the first proxy session record and its client session record
    C1.e  create the second proxy and second client session records
    C1.f  associate them
    C1.g  obtain the receiving ISN (ISN_c) and sending ISN (ISN_g)
    C1.h  create the TCB (IRS=ISN_c, ISS=ISN_g, RCV.NXT=ISN_c+1, SND.UNA=SND.NXT=ISN_g+1,
          ESTABLISHED, the options the fast path negotiated) and the packet buffers
    C1.i  store ISNs, TCB and buffers in the second client session record
    C1.j  process the trigger through the TCB (RFC 9293 §3.10.7.4) and answer with an ACK

Every function works on ints (the gateway) and on Z3 terms (the continuity proof), except
that buffer contents are only touched when the payload is concrete bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spec.bv import and_, is_concrete, ite, lshr, not_, or_, umin
from spec.records import (
    TCB,
    ClientSessionRecord,
    Owner,
    PacketBuffers,
    ProxySessionRecord,
    SecondClientSessionRecord,
    SecondProxySessionRecord,
)
from spec.segment import ACK, FIN, RST, SYN, Segment
from spec.seq import segment_acceptable, seq_add, seq_diff, seq_le, seq_lt
from spec.states import FastPathState, TcpState

DEFAULT_BUFFER = 256 * 1024
"""Per-direction buffer the normal path allocates for a handed-off client side."""


class HandoffError(ValueError):
    """The records given to the handoff are not in a state claim 1 hands off from."""


HANDOFF_FROM = frozenset({FastPathState.SYN_RCVD, FastPathState.ESTABLISHED})
"""Fast-path states in which a first request segment can trigger a handoff."""


@dataclass(slots=True)
class HandoffResult:
    proxy: SecondProxySessionRecord
    client: SecondClientSessionRecord
    reply: Segment
    """What the normal path sends the client after processing the trigger (an ACK)."""
    accepted: Any
    """The trigger passed the RFC 9293 acceptability test."""
    completes_handshake: Any = True
    """From SYN_RCVD: the trigger's ACK acknowledges the gateway's SYN (ISS + 1)."""
    steps: list[str] = field(default_factory=list)
    """Claim-1 element IDs in the order they were carried out."""


# --- one function per claim element --------------------------------------------------------


def retrieve_first_records(first: ProxySessionRecord) -> ClientSessionRecord:
    """C1.d: the first proxy session record and the client session record it is tied to."""
    if first.state not in HANDOFF_FROM:
        name = getattr(first.state, "name", first.state)
        allowed = sorted(s.name for s in HANDOFF_FROM)
        raise HandoffError(f"a session in fast-path state {name} is not handed off "
                           f"(only from {allowed})")
    return first.client


def create_second_records(first: ProxySessionRecord, client: ClientSessionRecord,
                          trigger: Segment) -> tuple[SecondProxySessionRecord,
                                                     SecondClientSessionRecord]:
    """C1.e: new records derived from the trigger and the first client session record."""
    proxy2 = SecondProxySessionRecord(first=first, service=first.service,
                                      trigger_seq=trigger.seq, trigger_len=trigger.length)
    client2 = SecondClientSessionRecord(tuple=client.tuple, rcv_isn=None, snd_isn=None)
    return proxy2, client2


def associate(proxy2: SecondProxySessionRecord, client2: SecondClientSessionRecord) -> None:
    """C1.f: link the second client session record and the second proxy session record."""
    proxy2.client = client2
    client2.proxy = proxy2


def obtain_isns(client: ClientSessionRecord) -> tuple[Any, Any]:
    """C1.g: (receiving ISN, sending ISN) = (client's SYN seq, gateway's SYN/ACK seq)."""
    return client.rcv_isn, client.snd_isn


def create_tcb(client: ClientSessionRecord, rcv_isn: Any, snd_isn: Any,
               handshake_done: Any, rcv_wnd: Any) -> TCB:
    """C1.h (state variables): a TCB that continues the client's sequence space exactly.

    ``handshake_done`` is false when the trigger arrives in SYN_RCVD; the trigger's own ACK
    then completes the handshake, as RFC 9293 §3.10.7.4 lets an ACK do in SYN-RECEIVED.
    """
    n = client.negotiated
    return TCB(
        state=TcpState.ESTABLISHED if handshake_done is True else TcpState.SYN_RECEIVED,
        iss=snd_isn,
        irs=rcv_isn,
        snd_una=seq_add(snd_isn, 1),
        snd_nxt=seq_add(snd_isn, 1),
        snd_wnd=client.rcv_wnd_field << n.snd_wscale if is_concrete(client.rcv_wnd_field) else 0,
        snd_wl1=rcv_isn,
        snd_wl2=snd_isn,
        rcv_nxt=seq_add(rcv_isn, 1),
        rcv_wnd=umin(rcv_wnd, 0xFFFF << n.rcv_wscale),  # what the window field can express
        mss=n.peer_mss,
        snd_wscale=n.snd_wscale,
        rcv_wscale=n.rcv_wscale,
        sack_permitted=n.sack,
        ts_enabled=n.timestamps,
        ts_recent=client.ts_recent,
        ts_sent=client.ts_sent,
    )


def create_buffers(capacity: int = DEFAULT_BUFFER) -> PacketBuffers:
    """C1.h (packet buffers): receive, reassembly and send buffers for the client side."""
    return PacketBuffers(capacity=capacity)


def store(client2: SecondClientSessionRecord, rcv_isn: Any, snd_isn: Any, tcb: TCB,
          buffers: PacketBuffers) -> None:
    """C1.i: the ISNs, the state variables and the buffers go in the second client record."""
    client2.rcv_isn = rcv_isn
    client2.snd_isn = snd_isn
    client2.tcb = tcb
    client2.buffers = buffers


def receive(tcb: TCB, seg: Segment, buffers: PacketBuffers | None = None) -> tuple[Any, Segment]:
    """C1.j: RFC 9293 §3.10.7.4 segment arrival on the new TCB; returns (accepted, ACK reply).

    In-order bytes (after trimming what is already received) advance RCV.NXT and go to the
    receive buffer; bytes ahead of RCV.NXT go to the reassembly buffer. An unacceptable
    segment is answered with an ACK, never a RST (the connection is synchronized).
    """
    rcv_nxt = tcb.rcv_nxt
    accepted = segment_acceptable(seg.seq, seg.seg_len, rcv_nxt, tcb.rcv_wnd)
    end = seq_add(seg.seq, seg.seg_len)
    take = and_(accepted, seq_le(seg.seq, rcv_nxt), seq_lt(rcv_nxt, end))
    new_rcv_nxt = ite(take, end, rcv_nxt)
    if buffers is not None and seg.payload is not None and is_concrete(seg.seq, rcv_nxt):
        if take:
            buffers.receive += seg.payload[seq_diff(rcv_nxt, seg.seq):]
            if not seg.flags & FIN:
                new_rcv_nxt = _drain_reassembly(buffers, tcb.irs, new_rcv_nxt)
        elif accepted and seq_lt(rcv_nxt, seg.seq) and seg.payload:
            buffers.out_of_order[seq_diff(seg.seq, seq_add(tcb.irs, 1))] = seg.payload
    tcb.rcv_nxt = new_rcv_nxt
    if tcb.state is TcpState.SYN_RECEIVED and seg.flags & ACK and is_concrete(seg.ack) \
            and seg.ack == tcb.snd_nxt:
        tcb.state = TcpState.ESTABLISHED
    window = umin(lshr(tcb.rcv_wnd, tcb.rcv_wscale), 0xFFFF)
    reply = Segment(seq=tcb.snd_nxt, ack=tcb.rcv_nxt, flags=ACK, window=window)
    return accepted, reply


def _drain_reassembly(buffers: PacketBuffers, irs: int, rcv_nxt: int) -> int:
    """Move out-of-order pieces that now touch RCV.NXT into the receive buffer; new RCV.NXT."""
    origin = seq_add(irs, 1)
    nxt = seq_diff(rcv_nxt, origin)
    for off in sorted(buffers.out_of_order):
        data = buffers.out_of_order[off]
        if off > nxt:
            break
        del buffers.out_of_order[off]
        if off + len(data) > nxt:
            buffers.receive += data[nxt - off:]
            nxt = off + len(data)
    return seq_add(origin, nxt)


# --- the whole handoff ------------------------------------------------------------------------


def handoff(first: ProxySessionRecord, trigger: Segment, *,
            rcv_wnd: Any = 65535, buffer_capacity: int = DEFAULT_BUFFER,
            with_buffers: bool = True,
            obtain: Callable[[ClientSessionRecord], tuple[Any, Any]] = obtain_isns,
            make_tcb: Callable[..., TCB] = create_tcb) -> HandoffResult:
    """Carry out claim 1's normal-path steps for ``trigger`` and return the new records.

    ``first.state`` must be SYN_RCVD or ESTABLISHED (``HandoffError`` otherwise). After the
    call the first proxy session record is owned by the normal path. ``obtain`` and
    ``make_tcb`` are the C1.g and C1.h steps, replaceable so that ``spec.variants`` can show
    the continuity proof failing on a broken handoff.
    """
    steps: list[str] = []
    client = retrieve_first_records(first)
    steps.append("C1.d")
    proxy2, client2 = create_second_records(first, client, trigger)
    steps.append("C1.e")
    associate(proxy2, client2)
    steps.append("C1.f")
    rcv_isn, snd_isn = obtain(client)
    steps.append("C1.g")
    handshake_done = first.state is FastPathState.ESTABLISHED
    tcb = make_tcb(client, rcv_isn, snd_isn, handshake_done, rcv_wnd)
    buffers = create_buffers(buffer_capacity) if with_buffers else None
    steps.append("C1.h")
    store(client2, rcv_isn, snd_isn, tcb, buffers)  # type: ignore[arg-type]
    steps.append("C1.i")
    first.owner = Owner.NORMAL_PATH
    first.state = FastPathState.HANDED_OFF
    completes = True if handshake_done else and_(
        trigger.flags & ACK != 0, trigger.ack == tcb.snd_nxt)
    accepted, reply = receive(tcb, trigger, buffers)
    steps.append("C1.j")
    return HandoffResult(proxy=proxy2, client=client2, reply=reply, accepted=accepted,
                         completes_handshake=completes, steps=steps)


def reply_is_continuous(result: HandoffResult, rcv_isn: Any, snd_isn: Any) -> Any:
    """The client sees no gap, no second SYN/ACK and no RST in the normal path's reply."""
    r = result.reply
    return and_(r.seq == seq_add(snd_isn, 1),
                not_(or_(r.flags & SYN != 0, r.flags & RST != 0)),
                seq_le(seq_add(rcv_isn, 1), r.ack))

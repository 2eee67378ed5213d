"""Formal state models of the fast path, the normal path and the handoff between them.

The pieces live in small modules (``seq``, ``records``, ``translate``, ``states``,
``eligibility``, ``handoff``); this module composes them into the behaviour the proofs and the
Hypothesis tests check:

* :func:`fp_ack_to_client`: every ACK the fast path itself puts on the client leg (the ACK
  safety proof enumerates the effects of ``spec.states.FAST_PATH_TABLE`` through it);
* :class:`FastPathModel`: one session of the fast path, driven by the state table, answering
  the handshake, holding the one request segment, splicing, relaying with translation, and
  handing off to :class:`NormalPathModel` through ``spec.handoff`` (claim 1);
* :class:`TcpPeer`: a small, deterministic RFC 9293 endpoint (handshake, in-order delivery with
  trimming, cumulative ACKs, go-back-N retransmission on a timer) used as the virtual client,
  the virtual server and the normal path's two legs.

Everything is sans-I/O: methods take segments and ``now`` and return segments to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spec import eligibility, handoff, translate
from spec.eligibility import HandoffReason, SegmentFacts
from spec.records import (
    ClientSessionRecord,
    FourTuple,
    HeldRequest,
    Negotiated,
    Owner,
    ProxySessionRecord,
    ServerSessionRecord,
    SynOptions,
)
from spec.segment import ACK, FIN, RST, SYN, Segment
from spec.seq import seq_add, seq_diff, seq_le, seq_lt
from spec.states import Effect, FastPathEvent, FastPathState, Transition, fast_path_step
from spec.translate import Splice

# --- the fast path's own ACKs to the client -------------------------------------------------


def fp_ack_to_client(effect: Effect, client: ClientSessionRecord, sp: Splice | None,
                     server_ack: Any, held_len: Any, *, ack_held_early: bool = False) -> Any:
    """The ACK number the fast path puts on the client leg for ``effect``, or None.

    The fast path has no buffer to retransmit from, so it may acknowledge a client byte only
    once the server has (ACK safety): it acknowledges the client's SYN itself, and otherwise
    only relays the server's ACKs, translated. ``ack_held_early`` is the classic bug (ACK the
    held request at once), kept here so a proof can show it is caught.
    """
    if effect in (Effect.ANSWER_SYN, Effect.RESEND_SYNACK):
        return seq_add(client.rcv_isn, 1)
    if effect is Effect.RELAY_TO_CLIENT and sp is not None:
        return translate.ack_to_client(sp, server_ack)
    if effect is Effect.HOLD_AND_OPEN_SERVER and ack_held_early:
        return seq_add(client.rcv_isn, 1 + held_len)
    return None


# --- a small TCP endpoint -----------------------------------------------------------------------


DEFAULT_MSS = 1460
RTO = 1.0
"""Fixed retransmission timeout of the model's endpoints (RFC 6298's initial RTO)."""


@dataclass
class TcpPeer:
    """A deterministic RFC 9293 endpoint: enough TCP to be a real peer for the gateway model.

    It delivers in order only (out-of-order segments are dropped and re-sent by the peer, which
    RFC 9293 permits), acknowledges cumulatively, and retransmits everything from SND.UNA when
    its single timer expires (go-back-N). ``outgoing`` is the byte stream it sends.
    """

    iss: int
    mss: int = DEFAULT_MSS
    window: int = 65535
    outgoing: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    irs: int | None = None
    snd_una: int = 0
    snd_nxt: int = 0
    rcv_nxt: int = 0
    established: bool = False
    syn_sent: bool = False
    timer: float | None = None
    acked_beyond_sent: bool = False
    """Set if a peer ever acknowledged a byte this endpoint never sent (must stay False)."""
    max_ack_seen: int = 0
    """Highest cumulative ACK received, as a stream offset (bytes acknowledged)."""

    def __post_init__(self) -> None:
        self.snd_una = self.iss
        self.snd_nxt = self.iss

    # bytes already sent: SND.NXT - ISS - 1 once the SYN is acknowledged
    def sent_offset(self) -> int:
        return seq_diff(self.snd_nxt, seq_add(self.iss, 1)) if self.established else 0

    def acked_offset(self) -> int:
        return seq_diff(self.snd_una, seq_add(self.iss, 1)) if self.established else 0

    @classmethod
    def from_handoff(cls, tcb: Any, outgoing: bytearray | None = None) -> TcpPeer:
        """The normal path's client leg: a peer born established from the handoff's TCB."""
        p = cls(iss=tcb.iss, mss=tcb.mss, window=tcb.rcv_wnd)
        p.irs = tcb.irs
        p.snd_una, p.snd_nxt, p.rcv_nxt = tcb.snd_una, tcb.snd_nxt, tcb.rcv_nxt
        p.established = True
        p.outgoing = outgoing if outgoing is not None else bytearray()
        return p

    def connect(self, now: float) -> list[Segment]:
        self.syn_sent = True
        self.snd_nxt = seq_add(self.iss, 1)
        self.timer = now + RTO
        return [Segment(seq=self.iss, flags=SYN, window=self.window, mss=self.mss)]

    def _ack(self) -> Segment:
        return Segment(seq=self.snd_nxt, ack=self.rcv_nxt, flags=ACK, window=self.window)

    def on_segment(self, seg: Segment, now: float) -> list[Segment]:
        """Process one arriving segment; return what to send at once."""
        if seg.flags & RST:
            return []
        out: list[Segment] = []
        if seg.flags & SYN:
            if self.irs is None:
                self.irs = seg.seq
                self.rcv_nxt = seq_add(seg.seq, 1)
                if seg.mss:
                    self.mss = min(self.mss, seg.mss)
            elif seg.seq != self.irs:
                return []  # a SYN of some other connection
            if seg.flags & ACK:  # SYN/ACK to our SYN (or a retransmission of it)
                if self.syn_sent and not self.established and seg.ack == seq_add(self.iss, 1):
                    self.snd_una = seg.ack
                    self.established = True
                    self.timer = None
                return [self._ack(), *self.transmit(now)]
            if self.established:  # a duplicate SYN in a synchronized state: just ACK
                return [self._ack()]
            # a SYN to a passive peer: answer (or answer again) with a SYN/ACK
            self.snd_nxt = seq_add(self.iss, 1)
            return [Segment(seq=self.iss, ack=self.rcv_nxt, flags=SYN | ACK,
                            window=self.window, mss=self.mss)]
        if self.irs is None:
            return []
        if seg.flags & ACK:
            if not self.established and seg.ack == seq_add(self.iss, 1):
                self.established = True
                self.snd_una = seg.ack
            elif self.established:
                if seq_lt(self.snd_nxt, seg.ack):
                    self.acked_beyond_sent = True
                elif seq_lt(self.snd_una, seg.ack):
                    self.snd_una = seg.ack
                    self.timer = now + RTO if self.snd_una != self.snd_nxt else None
                self.max_ack_seen = max(self.max_ack_seen, self.acked_offset())
        if seg.length:
            end = seq_add(seg.seq, seg.length)
            if seq_le(seg.seq, self.rcv_nxt) and seq_lt(self.rcv_nxt, end):
                skip = seq_diff(self.rcv_nxt, seg.seq)
                assert seg.payload is not None
                self.received += seg.payload[skip:]
                self.rcv_nxt = end
            out.append(self._ack())
        out.extend(self.transmit(now))
        return out

    def transmit(self, now: float) -> list[Segment]:
        """Send new data that fits the window (one MSS at a time)."""
        if not self.established:
            return []
        out = []
        while True:
            off = seq_diff(self.snd_nxt, seq_add(self.iss, 1))
            inflight = seq_diff(self.snd_nxt, self.snd_una)
            if off >= len(self.outgoing) or inflight >= self.window:
                break
            chunk = bytes(self.outgoing[off:off + min(self.mss, self.window - inflight)])
            out.append(Segment(seq=self.snd_nxt, ack=self.rcv_nxt, flags=ACK | 0x08,
                               window=self.window, payload=chunk))
            self.snd_nxt = seq_add(self.snd_nxt, len(chunk))
            if self.timer is None:
                self.timer = now + RTO
        return out

    def on_timer(self, now: float) -> list[Segment]:
        """Go-back-N: resend from SND.UNA (or the SYN if the handshake is not done)."""
        if self.timer is None or now < self.timer:
            return []
        if self.syn_sent and not self.established:
            self.timer = now + RTO
            return [Segment(seq=self.iss, flags=SYN, window=self.window, mss=self.mss)]
        if self.snd_una == self.snd_nxt:
            self.timer = None
            return []
        self.snd_nxt = self.snd_una
        self.timer = None
        return self.transmit(now)


# --- the fast path ------------------------------------------------------------------------------


@dataclass
class Emitted:
    """Segments a gateway model emits, by leg."""

    to_client: list[Segment] = field(default_factory=list)
    to_server: list[Segment] = field(default_factory=list)

    def extend(self, other: Emitted) -> None:
        self.to_client += other.to_client
        self.to_server += other.to_server


@dataclass
class GatewayConfig:
    """What the model gateway needs to know about its virtual service."""

    local_mss: int = DEFAULT_MSS
    rcv_window: int = 65535
    length_changing_rewrite: bool = False


class FastPathModel:
    """One client session through the gateway: fast path first, normal path after a handoff.

    ``isn_client_side`` / ``isn_server_side`` are the gateway's ISNs (injected, so tests can pin
    them near the 2^32 wrap). The model keeps the claim-1 records and exposes them.
    """

    def __init__(self, isn_client_side: int, isn_server_side: int,
                 config: GatewayConfig | None = None) -> None:
        self.isn_c = isn_client_side
        self.isn_s = isn_server_side
        self.cfg = config or GatewayConfig()
        self.proxy: ProxySessionRecord | None = None
        self.state = FastPathState.NO_SESSION
        self.normal: NormalPathModel | None = None
        self.handoff_reason: HandoffReason = HandoffReason.NONE
        self.client_acked_to_client: int = 0
        """Highest client byte offset the gateway has acknowledged to the client."""
        self.effects: list[Effect] = []
        self._next = self.state
        self.open_deadline: float | None = None
        self.open_tries = 0

    @property
    def owner(self) -> Owner:
        return Owner.NORMAL_PATH if self.state is FastPathState.HANDED_OFF else Owner.FAST_PATH

    # ---- classification of an arriving segment into a table event
    def _client_event(self, seg: Segment, fragment: bool) -> tuple[FastPathEvent, HandoffReason]:
        if seg.flags & RST:
            return FastPathEvent.CLIENT_RST, HandoffReason.NONE
        if seg.flags & SYN:
            return FastPathEvent.CLIENT_SYN, HandoffReason.NONE
        first = self.state in (FastPathState.SYN_RCVD, FastPathState.ESTABLISHED)
        if first and (seg.length or seg.flags & FIN):
            assert self.proxy is not None
            payload = seg.payload or b""
            head = eligibility.parse_request_head(payload)
            facts = SegmentFacts(
                is_fragment=fragment, unsupported_flags=bool(seg.flags & 0x20),
                unsupported_option=False, seq=seg.seq,
                rcv_nxt=seq_add(self.proxy.client.rcv_isn, 1), payload_len=seg.length,
                fin=bool(seg.flags & FIN),
                request_complete=eligibility.request_head_complete(payload),
                request_parseable=head is not None,
                length_changing_rewrite=self.cfg.length_changing_rewrite)
            reason = HandoffReason(eligibility.classify(facts))
            ev = (FastPathEvent.CLIENT_REQUEST_OK if reason is HandoffReason.NONE
                  else FastPathEvent.CLIENT_REQUEST_HANDOFF)
            return ev, reason
        if seg.flags & FIN:
            return FastPathEvent.CLIENT_FIN, HandoffReason.NONE
        if seg.length:
            return FastPathEvent.CLIENT_DATA, HandoffReason.NONE
        return FastPathEvent.CLIENT_ACK, HandoffReason.NONE

    @staticmethod
    def _server_event(seg: Segment) -> FastPathEvent:
        if seg.flags & RST:
            return FastPathEvent.SERVER_RST
        if seg.flags & SYN:
            return FastPathEvent.SERVER_SYNACK
        if seg.flags & FIN:
            return FastPathEvent.SERVER_FIN
        return FastPathEvent.SERVER_SEGMENT

    # ---- entry points
    def from_client(self, seg: Segment, now: float, *, fragment: bool = False) -> Emitted:
        if self.state is FastPathState.HANDED_OFF:
            assert self.normal is not None
            return self.normal.from_client(seg, now)
        ev, reason = self._client_event(seg, fragment)
        return self._step(fast_path_step(self.state, ev), seg, now, reason)

    def from_server(self, seg: Segment, now: float) -> Emitted:
        if self.state is FastPathState.HANDED_OFF:
            assert self.normal is not None
            return self.normal.from_server(seg, now)
        t = fast_path_step(self.state, self._server_event(seg))
        return self._step(t, seg, now, HandoffReason.NONE)

    def _step(self, t: Transition, seg: Segment, now: float, reason: HandoffReason) -> Emitted:
        self._next = t.next
        out = self._apply(t.effect, seg, now, reason=reason)
        self.state = self._next
        self.effects.append(t.effect)
        return out

    OPEN_RETRIES = 5

    def next_deadline(self) -> float | None:
        if self.normal is not None:
            return self.normal.next_deadline()
        return self.open_deadline if self.state is FastPathState.SERVER_OPENING else None

    def on_timer(self, now: float) -> Emitted:
        """The fast path's only timer: retrying the SYN to the server while it opens."""
        if self.normal is not None:
            return self.normal.on_timer(now)
        if self.state is not FastPathState.SERVER_OPENING or self.open_deadline is None \
                or now < self.open_deadline:
            return Emitted()
        self.open_tries += 1
        ev = (FastPathEvent.OPEN_RETRY if self.open_tries <= self.OPEN_RETRIES
              else FastPathEvent.OPEN_TIMEOUT)
        return self._step(fast_path_step(self.state, ev), Segment(seq=0), now,
                          HandoffReason.NONE)

    # ---- effects
    def _apply(self, effect: Effect, seg: Segment, now: float, *,
               reason: HandoffReason) -> Emitted:
        """Carry out one table effect; may overrule the table's next state via ``_next``."""
        out = Emitted()
        p = self.proxy
        if effect in (Effect.ANSWER_SYN, Effect.RESEND_SYNACK):
            if effect is Effect.ANSWER_SYN:
                p = self.proxy = self._new_session(seg)
            assert p is not None
            ack = fp_ack_to_client(effect, p.client, None, 0, 0)
            out.to_client.append(Segment(seq=p.client.snd_isn, ack=ack, flags=SYN | ACK,
                                         window=self.cfg.rcv_window,
                                         mss=p.client.negotiated.local_mss))
        elif effect is Effect.HOLD_AND_OPEN_SERVER:
            assert p is not None
            p.held = HeldRequest(seq=seg.seq, payload=bytes(seg.payload or b""),
                                 window=seg.window)
            mss = translate.mss_clamp(p.client.negotiated.peer_mss, self.cfg.local_mss)
            p.server = ServerSessionRecord(
                tuple=FourTuple("gw", 40000, "server", 80), snd_isn=self.isn_s,
                syn_options=SynOptions(mss=mss))
            out.to_server.append(Segment(seq=self.isn_s, flags=SYN, window=self.cfg.rcv_window,
                                         mss=mss))
            self.open_deadline = now + RTO
        elif effect is Effect.RESEND_SERVER_SYN:
            assert p is not None and p.server is not None
            out.to_server.append(Segment(seq=self.isn_s, flags=SYN, window=self.cfg.rcv_window,
                                         mss=p.server.syn_options.mss))
            self.open_deadline = now + RTO * (1 << self.open_tries)
        elif effect is Effect.RESET_UNACCEPTABLE_ACK:
            if seg.flags & ACK and seg.ack != seq_add(self.isn_s, 1):
                out.to_server.append(Segment(seq=seg.ack, flags=RST))
        elif effect is Effect.SPLICE:
            assert p is not None and p.server is not None and p.held is not None
            if seg.ack != seq_add(self.isn_s, 1):  # not our SYN's answer: ignore, stay
                self._next = FastPathState.SERVER_OPENING
                return out
            p.server.rcv_isn = seg.seq
            p.server.peer_options = SynOptions(mss=seg.mss)
            p.server.negotiated = Negotiated(peer_mss=seg.mss or translate.RFC9293_DEFAULT_MSS,
                                             local_mss=p.server.syn_options.mss or DEFAULT_MSS)
            p.splice = translate.make_splice(p.client, p.server)
            held, p.held = p.held, None
            sp = p.splice
            req = Segment(seq=translate.seq_to_server(sp, held.seq),
                          ack=seq_add(seg.seq, 1), flags=ACK | 0x08,
                          window=translate.window_to_server(sp, held.window),
                          payload=held.payload)
            out.to_server.extend(self._split(req, sp.server_mss))
        elif effect is Effect.RELAY_TO_SERVER:
            assert p is not None and p.splice is not None
            sp = p.splice
            rel = seg.with_(seq=translate.seq_to_server(sp, seg.seq),
                            ack=translate.ack_to_server(sp, seg.ack),
                            window=translate.window_to_server(sp, seg.window),
                            sack=tuple(translate.sack_to_server(sp, list(seg.sack))))
            out.to_server.extend(self._split(rel, sp.server_mss))
        elif effect is Effect.RELAY_TO_CLIENT:
            assert p is not None and p.splice is not None
            sp = p.splice
            ack = fp_ack_to_client(effect, p.client, sp, seg.ack, 0)
            rel = seg.with_(seq=translate.seq_to_client(sp, seg.seq), ack=ack,
                            window=translate.window_to_client(sp, seg.window),
                            sack=tuple(translate.sack_to_client(sp, list(seg.sack))),
                            flags=seg.flags & ~SYN if seg.flags & SYN else seg.flags)
            if seg.flags & SYN:  # a retransmitted SYN/ACK: answer it with a plain ACK
                out.to_server.append(Segment(seq=translate.seq_to_server(
                    sp, seq_add(p.client.rcv_isn, 1)), ack=seq_add(seg.seq, 1), flags=ACK))
                return out
            self.client_acked_to_client = max(
                self.client_acked_to_client,
                seq_diff(ack, seq_add(p.client.rcv_isn, 1)))
            out.to_client.append(rel)
        elif effect is Effect.HANDOFF:
            assert p is not None
            self.handoff_reason = reason
            self.normal = NormalPathModel(self, p, seg, now)
            out.extend(self.normal.start_output)
        elif effect in (Effect.RESET_BOTH, Effect.RESET_CLIENT) and p is not None:
            out.to_client.append(Segment(seq=seq_add(p.client.snd_isn, 1), flags=RST))
        # COMPLETE_HANDSHAKE, DROP, STEER, RETIRE and the relayed RSTs: nothing more to send
        return out

    @staticmethod
    def _split(seg: Segment, mss: int) -> list[Segment]:
        """Cut a relayed segment to the receiver's MSS (no buffering: all pieces go now)."""
        payload = seg.payload or b""
        if len(payload) <= mss:
            return [seg]
        pieces = []
        off = 0
        while off < len(payload):
            n = translate.split_point(len(payload) - off, mss)
            pieces.append(seg.with_(seq=seq_add(seg.seq, off), payload=payload[off:off + n]))
            off += n
        return pieces

    def _new_session(self, syn: Segment) -> ProxySessionRecord:
        opts = SynOptions(mss=syn.mss, wscale=syn.wscale, sack_permitted=syn.sack_permitted,
                          tsval=syn.tsval)
        peer_mss = syn.mss or translate.RFC9293_DEFAULT_MSS
        neg = Negotiated(peer_mss=peer_mss,
                         local_mss=translate.mss_clamp(peer_mss, self.cfg.local_mss))
        client = ClientSessionRecord(tuple=FourTuple("client", 40000, "vip", 80),
                                     rcv_isn=syn.seq, snd_isn=self.isn_c, syn_options=opts,
                                     negotiated=neg, rcv_wnd_field=syn.window)
        return ProxySessionRecord(client=client, service="model", state=FastPathState.SYN_RCVD)

    def holds_payload(self) -> int:
        """Payload bytes the fast path holds (only the one request segment, only while the
        server side opens)."""
        if self.proxy is None or self.proxy.held is None:
            return 0
        return len(self.proxy.held.payload)


# --- the normal path --------------------------------------------------------------------------


class NormalPathModel:
    """A full proxy with buffers, taking over a session from the fast path (claim 1).

    The client leg is a :class:`TcpPeer` born from the handoff's TCB; the server leg is a
    :class:`TcpPeer` the normal path opens once the request head is complete.
    """

    def __init__(self, fp: FastPathModel, first: ProxySessionRecord, trigger: Segment,
                 now: float) -> None:
        self.result = handoff.handoff(first, trigger, rcv_wnd=fp.cfg.rcv_window)
        tcb = self.result.client.tcb
        assert tcb is not None and self.result.client.buffers is not None
        self.buffers = self.result.client.buffers
        self.client = TcpPeer.from_handoff(tcb, self.buffers.send)
        self.client.received = self.buffers.receive
        self.server: TcpPeer | None = None
        self.isn_s = fp.isn_s
        self.start_output = Emitted(to_client=[self.result.reply])
        self.start_output.extend(self._pump(now))

    def _pump(self, now: float) -> Emitted:
        out = Emitted()
        if self.server is None and eligibility.request_head_complete(bytes(self.client.received)):
            self.server = TcpPeer(iss=self.isn_s)
            out.to_server += self.server.connect(now)
        if self.server is not None and self.server.established:
            fwd = len(self.client.received) - len(self.server.outgoing)
            if fwd > 0:
                self.server.outgoing += self.client.received[len(self.server.outgoing):]
            out.to_server += self.server.transmit(now)
            back = len(self.server.received) - len(self.client.outgoing)
            if back > 0:
                self.client.outgoing += self.server.received[len(self.client.outgoing):]
            out.to_client += self.client.transmit(now)
        return out

    def from_client(self, seg: Segment, now: float) -> Emitted:
        out = Emitted(to_client=self.client.on_segment(seg, now))
        out.extend(self._pump(now))
        return out

    def from_server(self, seg: Segment, now: float) -> Emitted:
        out = Emitted()
        if self.server is not None:
            out.to_server += self.server.on_segment(seg, now)
        out.extend(self._pump(now))
        return out

    def next_deadline(self) -> float | None:
        times = [t for t in (self.client.timer, self.server.timer if self.server else None)
                 if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> Emitted:
        out = Emitted(to_client=self.client.on_timer(now))
        if self.server is not None:
            out.to_server += self.server.on_timer(now)
        out.extend(self._pump(now))
        return out

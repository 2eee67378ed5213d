"""A sans-I/O RFC 9293 TCP connection: the normal path's endpoint on each leg.

Theory of operation. The normal path is a full proxy, so each leg needs a real TCP endpoint
with buffers. The client leg is *born* ESTABLISHED at a handoff (claim 1 of US 9,386,088):
:meth:`TcpConnection.from_handoff` adopts the ``TCB`` and ``PacketBuffers`` that
``spec.handoff`` built from the fast path's records and simply carries on in that sequence
space (its first byte goes out at ISS + 1, its ACKs acknowledge RCV.NXT). The server leg is an
ordinary active open, :meth:`TcpConnection.connect`.

Rule 1: the ``TCB`` (``spec.records``) is the one copy of the RFC state variables, and every
state change goes through ``spec.states.tcp_step``, except two transitions its table does not
have (SYN-RECEIVED -> ESTABLISHED on the handshake's ACK, and ABORT -> CLOSED), which
:meth:`_force` names. Rule 2: all sequence, acknowledgment and timestamp arithmetic uses
``spec.seq``; the buffers' byte offsets are the only plain integer arithmetic.

Nothing here reads a clock or draws a random number: every input carries ``now`` (seconds),
outputs are the segments to transmit, and the caller re-arms one timer at
:meth:`TcpConnection.next_deadline`. Helpers: ``_endpoint`` (shared state, the sending half and
the timers), ``_rto`` (RFC 6298), ``_congestion`` (RFC 5681 / 6582), ``_reassembly``
(out-of-order data).
"""

from __future__ import annotations

from reference.gateway._congestion import Reno
from reference.gateway._endpoint import (
    ACCEPTS_SEND,
    DEFAULT_MSS,
    INVALID_REPLY_INTERVAL,
    MAX_RETRIES,
    MAX_WINDOW_FIELD,
    MSL,
    RECEIVES_TEXT,
    SENDS_RST_ON_ABORT,
    TS_HZ,
    Endpoint,
    S,
    SynOffer,
    TcpStats,
)
from spec.records import MAX_WSCALE, TCB, PacketBuffers
from spec.segment import ACK, FIN, RST, SYN, Segment
from spec.seq import (
    HALF,
    segment_acceptable,
    seq_add,
    seq_diff,
    seq_le,
    seq_lt,
    syn_opens_new_incarnation,
)
from spec.states import TcpEvent, TcpState, tcp_step

__all__ = ["DEFAULT_MSS", "MAX_RETRIES", "MSL", "TcpConnection", "TcpStats"]


class TcpConnection(Endpoint):
    """One TCP endpoint. Inputs: :meth:`receive`, :meth:`handle_timer` and the user calls
    (:meth:`send`, :meth:`close`, :meth:`abort`, :meth:`read`, :meth:`flush`); each returns
    the segments to transmit, in order. Build one with :meth:`from_handoff` or
    :meth:`connect`.
    """

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_handoff(cls, tcb: TCB, buffers: PacketBuffers, *, now: float,
                     rto_min: float = 1.0, msl: float = MSL, max_retries: int = MAX_RETRIES,
                     local_mss: int | None = None, fin_received: bool = False
                     ) -> TcpConnection:
        """Claim 1: adopt the TCB and buffers the handoff created, without a handshake.

        Bytes already in ``buffers.receive`` are readable, ``buffers.out_of_order`` is kept
        (normalised, and drained if it now touches RCV.NXT), queued ``buffers.send`` bytes
        go out from SND.NXT. TSvals continue from ``tcb.ts_sent`` so the client's PAWS check
        never sees time go backwards.

        :param local_mss: the MSS the fast path announced to the client (default: tcb.mss).
        :param fin_received: the trigger carried a FIN, which ``spec.handoff.receive``
            already counted in RCV.NXT: start in CLOSE-WAIT.
        """
        if tcb.state not in (S.ESTABLISHED, S.SYN_RECEIVED):
            raise ValueError(f"a handoff TCB is ESTABLISHED or SYN_RECEIVED, not {tcb.state}")
        conn = cls(tcb, buffers, now=now, rto_min=rto_min, msl=msl, max_retries=max_retries,
                   local_mss=tcb.mss if local_mss is None else local_mss,
                   ts_origin=tcb.ts_sent if tcb.ts_enabled else None)
        ready, tcb.rcv_nxt = conn._reasm.adopt(tcb.rcv_nxt)
        buffers.receive += ready
        conn._last_ack_sent = tcb.rcv_nxt
        conn._sync_rcv_wnd()
        if fin_received:
            conn.eof_received = True
            conn._step(TcpEvent.RCV_FIN, now=now)
        return conn

    @classmethod
    def connect(cls, *, iss: int, mss: int, wscale: int | None, sack_permitted: bool,
                tsval: int | None, now: float, buffer_bytes: int = 262144,
                rto_min: float = 1.0, msl: float = MSL, max_retries: int = MAX_RETRIES
                ) -> tuple[TcpConnection, list[Segment]]:
        """Active open (RFC 9293 §3.10.1): returns the connection in SYN-SENT and its SYN.

        ``mss``, ``wscale``, ``sack_permitted`` and ``tsval`` are what our SYN offers
        (``tsval=None``: no timestamps); the SYN/ACK settles what is used.
        """
        if wscale is not None and not 0 <= wscale <= MAX_WSCALE:
            raise ValueError(f"wscale must be in 0..{MAX_WSCALE}, got {wscale}")
        wnd = min(buffer_bytes, MAX_WINDOW_FIELD)
        tcb = TCB(state=tcp_step(S.CLOSED, TcpEvent.CONNECT), iss=iss, irs=0, snd_una=iss,
                  snd_nxt=seq_add(iss, 1), snd_wnd=0, snd_wl1=0, snd_wl2=0, rcv_nxt=0,
                  rcv_wnd=wnd, mss=DEFAULT_MSS, snd_wscale=0, rcv_wscale=0,
                  sack_permitted=False, ts_enabled=False)
        conn = cls(tcb, PacketBuffers(capacity=buffer_bytes), now=now, rto_min=rto_min,
                   msl=msl, max_retries=max_retries, local_mss=mss, ts_origin=tsval)
        conn._snd_base = tcb.snd_nxt
        conn._syn_offer = SynOffer(mss, wscale, sack_permitted, tsval is not None)
        conn._rtt_end, conn._rtt_start = tcb.snd_nxt, now
        out = [conn._syn(now)]
        conn._arm_timers(now)
        return conn, out

    # --- read-only views ------------------------------------------------------------------

    @property
    def state(self) -> TcpState:
        return self.tcb.state

    @property
    def closed(self) -> bool:
        return self.tcb.state is S.CLOSED

    def reopened_by(self, seg: Segment) -> bool:
        """Whether ``seg`` is a SYN that may open a new incarnation of this connection's
        4-tuple while it is in TIME-WAIT: with timestamps on both, SEG.TSval > TS.Recent
        (RFC 6191 §2); otherwise SEG.SEQ > RCV.NXT (RFC 1122 §4.2.2.13). A client's kernel
        reuses a port as soon as its own side is closed; answering such a SYN with an ACK,
        as the rest of TIME-WAIT does, would stall that client for 2*MSL."""
        tcb = self.tcb
        if tcb.state is not S.TIME_WAIT or seg.flags & (ACK | RST) or not seg.flags & SYN:
            return False
        return bool(syn_opens_new_incarnation(tcb.ts_enabled, tcb.ts_recent, seg.tsval,
                                              tcb.rcv_nxt, seg.seq))

    @property
    def buffered_bytes(self) -> int:
        """Bytes this connection holds: unread, out-of-order and unacknowledged."""
        return self.buffers.buffered()

    @property
    def readable(self) -> int:
        return len(self.buffers.receive)

    @property
    def send_space(self) -> int:
        """Free send-buffer bytes (what :meth:`send` would take now, if it takes data)."""
        return max(0, self.buffers.capacity - len(self.buffers.send))

    def send_capacity(self) -> int:
        """Bytes :meth:`send` accepts right now: 0 once closed, closing or dead."""
        ok = self.tcb.state in ACCEPTS_SEND and not self._fin_queued
        return self.send_space if ok else 0

    @property
    def state_is_established(self) -> bool:
        """The handshake is complete and the connection is not CLOSED."""
        return self.tcb.state not in (S.SYN_SENT, S.SYN_RECEIVED, S.CLOSED)

    @property
    def reset(self) -> bool:
        """The connection died abnormally (peer RST, refused, retransmission limit)."""
        return self.error is not None

    # --- user calls -------------------------------------------------------------------------

    def send(self, data: bytes, *, now: float) -> list[Segment]:
        """Queue ``data`` (as much as the send buffer holds: see :attr:`last_accepted`) and
        return what can be transmitted now. Raises ValueError after :meth:`close`."""
        if self._fin_queued:
            raise ValueError("send() after close(): the FIN is already queued")
        if self.tcb.state not in ACCEPTS_SEND:
            self.last_accepted = 0
            return []
        take = data[:self.send_space]
        self.buffers.send += take
        self.last_accepted = len(take)
        return self._finish(self._output(now), now)

    def close(self, *, now: float) -> list[Segment]:
        """RFC 9293 §3.10.4 CLOSE: our FIN follows the queued data. Idempotent."""
        st = self.tcb.state
        if st is S.SYN_SENT:
            self._force(S.CLOSED, now=now)
            return []
        if self._fin_queued or st not in (S.ESTABLISHED, S.CLOSE_WAIT, S.SYN_RECEIVED):
            return []
        self._fin_queued = True
        if st is not S.SYN_RECEIVED:  # else: sent once ESTABLISHED (§3.10.4)
            self._step(TcpEvent.CLOSE, now=now)
        return self._finish(self._output(now), now)

    def abort(self, *, now: float) -> list[Segment]:
        """RFC 9293 §3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST> where the peer is synchronized."""
        out = []
        if self.tcb.state in SENDS_RST_ON_ABORT:
            out.append(self._make(self.tcb.snd_nxt, RST, now=now))
        self._force(S.CLOSED, now=now)
        return out

    def read(self, max_bytes: int | None = None) -> bytes:
        """Take in-order received bytes. The freed space reaches the peer with the next
        segment we send; call :meth:`flush` to send a window update now."""
        rcv = self.buffers.receive
        n = len(rcv) if max_bytes is None else min(max_bytes, len(rcv))
        data = bytes(rcv[:n])
        del rcv[:n]
        return data

    def flush(self, *, now: float) -> list[Segment]:
        """Whatever is owed: sendable data, or a window update if reading opened the
        window by enough to be worth it (receiver SWS avoidance, RFC 9293 §3.8.6.2.2)."""
        if self.tcb.state in (S.CLOSED, S.SYN_SENT):
            return []
        out = self._output(now)
        if not out and self.tcb.state in RECEIVES_TEXT and self._window_opens():
            out.append(self._ack(now))
        return self._finish(out, now)

    # --- timers -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest pending timer (retransmission, persist or TIME-WAIT), or None."""
        times = [t for t in (self._rto_deadline, self._persist_deadline,
                             self._timewait_deadline) if t is not None]
        return min(times) if times else None

    def handle_timer(self, *, now: float) -> list[Segment]:
        """Run every timer due at ``now``; returns retransmissions / probes."""
        if self._timewait_deadline is not None and now >= self._timewait_deadline:
            self._step(TcpEvent.TIMEOUT_2MSL, now=now)
            return []
        out: list[Segment] = []
        if self._rto_deadline is not None and now >= self._rto_deadline:
            out += self._on_rto(now)
        if self._persist_deadline is not None and now >= self._persist_deadline:
            out += self._on_persist(now)
        return self._finish(out, now)

    # --- segment arrival --------------------------------------------------------------------

    def receive(self, seg: Segment, *, now: float) -> list[Segment]:
        """Segment arrival, RFC 9293 §3.10.7; returns the segments to send in reply."""
        self.stats.segments_in += 1
        self.stats.bytes_in += seg.length
        st = self.tcb.state
        if st is S.CLOSED:
            return self._reset_reply(seg)
        if st is S.SYN_SENT:
            out = self._receive_syn_sent(seg, now)
        else:
            out = self._receive_synchronized(seg, now)
        return self._finish(out, now)

    def _reset_reply(self, seg: Segment) -> list[Segment]:
        """RFC 9293 §3.10.7.1: a closed endpoint answers anything but a RST with a RST."""
        if seg.flags & RST:
            return []
        if seg.flags & ACK:
            rst = Segment(seq=seg.ack, ack=0, flags=RST, window=0)
        else:
            rst = Segment(seq=0, ack=seq_add(seg.seq, seg.seg_len), flags=RST | ACK, window=0)
        self.stats.segments_out += 1
        return [rst]

    def _receive_syn_sent(self, seg: Segment, now: float) -> list[Segment]:
        """RFC 9293 §3.10.7.3. Simultaneous open (a SYN without ACK) is not supported: the
        server leg always talks to a listener, so such a SYN is dropped."""
        tcb, flags = self.tcb, seg.flags
        if flags & ACK and not (seq_lt(tcb.iss, seg.ack) and seq_le(seg.ack, tcb.snd_nxt)):
            return [] if flags & RST else [Segment(seq=seg.ack, ack=0, flags=RST, window=0)]
        if flags & RST:
            if flags & ACK:
                self._die("connection refused", TcpEvent.RCV_RST, now)
            return []
        if not flags & SYN or not flags & ACK:
            return []
        self._negotiate(seg)
        tcb.irs, tcb.rcv_nxt = seg.seq, seq_add(seg.seq, 1)
        tcb.snd_wnd, tcb.snd_wl1, tcb.snd_wl2 = seg.window, seg.seq, seg.ack  # unscaled in SYN
        self._max_sndwnd = tcb.snd_wnd
        self._reasm = self._new_reassembly(seq_add(seg.seq, 1))
        self._rcv_adv = seq_add(tcb.rcv_nxt, tcb.rcv_wnd)
        self._rtt_sample(seg, now)
        if self._syn_retransmitted:
            self.rtt.after_syn_timeout()
        tcb.snd_una = seg.ack
        self._rto_deadline, self._retries = None, 0
        self.congestion = Reno(self._smss)
        self._step(TcpEvent.RCV_SYNACK, now=now)
        self._last_ack_sent = tcb.rcv_nxt
        self._ack_pending = True  # the handshake's third segment
        if seg.length or flags & FIN:  # text on the SYN/ACK: §3.10.7.3 goes on to step 6
            self._process_text(seg.with_(seq=tcb.rcv_nxt, flags=flags & ~SYN), now)
        return self._output(now)

    def _negotiate(self, synack: Segment) -> None:
        """Settle MSS (RFC 9293 §3.7.1), window scale (RFC 7323 §2), SACK-permitted
        (RFC 2018) and timestamps (RFC 7323 §3): each needs both SYNs."""
        tcb, offer = self.tcb, self._syn_offer
        assert offer is not None  # connect() sets it before SYN-SENT can receive
        tcb.mss = synack.mss or DEFAULT_MSS
        if offer.wscale is not None and synack.wscale is not None:
            tcb.snd_wscale = min(synack.wscale, MAX_WSCALE)
            tcb.rcv_wscale = offer.wscale
        tcb.sack_permitted = offer.sack_permitted and synack.sack_permitted
        tcb.ts_enabled = offer.ts and synack.tsval is not None
        if tcb.ts_enabled:
            tcb.ts_recent = synack.tsval

    def _receive_synchronized(self, seg: Segment, now: float) -> list[Segment]:
        """RFC 9293 §3.10.7.4, steps in the RFC's order."""
        tcb, flags = self.tcb, seg.flags
        # RFC 7323 §3.2 / §5.3: a timestamp is mandatory once agreed; PAWS drops old ones.
        if tcb.ts_enabled and not flags & RST:
            if seg.tsval is None:
                return []
            if tcb.ts_recent is not None and seq_lt(seg.tsval, tcb.ts_recent):
                self.stats.paws_drops += 1
                return [self._ack(now)]
        # First: the acceptability test.
        if not segment_acceptable(seg.seq, seg.seg_len, tcb.rcv_nxt, tcb.rcv_wnd):
            if flags & RST:
                return []
            out: list[Segment] = []
            if tcb.rcv_wnd == 0 and flags & ACK and not flags & SYN:
                # §3.10.7.4: with a zero window "special allowance should be made to accept
                # valid ACKs" (the peer's window probe advanced its SEG.SEQ past RCV.NXT);
                # the SND.WL1/WL2 rule still keeps old segments off SND.WND.
                out = self._process_ack(seg, now)[1]
            if tcb.state is S.TIME_WAIT and flags & FIN:
                self._timewait_deadline = now + 2 * self.msl
            if seg.seg_len == 0 and not self._may_answer_invalid(now):
                return out  # two zero windows would otherwise ping-pong ACKs forever
            return [*out, self._ack(now)]
        # Second: RST, with RFC 5961 §3.2's exact-match rule.
        if flags & RST:
            if tcb.state is S.TIME_WAIT:
                return []  # RFC 1337: TIME-WAIT ignores RSTs (TCP_TABLE has no such row)
            if seg.seq == tcb.rcv_nxt:
                self._die("connection reset", TcpEvent.RCV_RST, now)
                return []
            return self._challenge_ack(now)
        # Fourth: a SYN in a synchronized state (RFC 5961 §4).
        if flags & SYN:
            return self._challenge_ack(now)
        # Fifth: the ACK field.
        if not flags & ACK:
            return []
        if tcb.state is S.SYN_RECEIVED:
            if not (seq_le(tcb.snd_una, seg.ack) and seq_le(seg.ack, tcb.snd_nxt)):
                return [self._make(seg.ack, RST, now=now)]
            self._force(S.ESTABLISHED, now=now)
            if self._fin_queued:
                self._step(TcpEvent.CLOSE, now=now)
        self._update_ts_recent(seg)
        drop, out = self._process_ack(seg, now)
        if drop or tcb.state is S.CLOSED:
            return out
        # Seventh and eighth: text and FIN.
        if tcb.state in RECEIVES_TEXT:
            self._process_text(seg, now)
        elif tcb.state is S.TIME_WAIT and flags & FIN:
            self._ack_pending = True
            self._timewait_deadline = now + 2 * self.msl
        return out + self._output(now)

    def _may_answer_invalid(self, now: float) -> bool:
        """Rate limit for ACKs answering unacceptable empty segments (what Linux's
        tcp_invalid_ratelimit does; RFC 5961 §7 throttles challenge ACKs alike)."""
        last = self._last_invalid_reply
        if last is not None and now - last < INVALID_REPLY_INTERVAL:
            return False
        self._last_invalid_reply = now
        return True

    def _update_ts_recent(self, seg: Segment) -> None:
        """RFC 7323 §4.3: TS.Recent <- SEG.TSval if SEG.SEQ =< Last.ACK.sent (and newer)."""
        tcb = self.tcb
        if tcb.ts_enabled and seg.tsval is not None and seq_le(seg.seq, self._last_ack_sent) \
                and (tcb.ts_recent is None or seq_le(tcb.ts_recent, seg.tsval)):
            tcb.ts_recent = seg.tsval

    def _challenge_ack(self, now: float) -> list[Segment]:
        self.stats.challenge_acks += 1
        return [self._ack(now)]

    def _process_ack(self, seg: Segment, now: float) -> tuple[bool, list[Segment]]:
        """§3.10.7.4 step 5 for synchronized states; returns (drop the segment, replies)."""
        tcb, ack = self.tcb, seg.ack
        if seq_lt(tcb.snd_nxt, ack):
            return True, [self._ack(now)]  # acknowledges something not yet sent
        if seq_lt(ack, tcb.snd_una):
            return False, []  # an old duplicate: ignore the ACK field
        out: list[Segment] = []
        self._probes = 0
        wnd = seg.window << tcb.snd_wscale
        if seq_lt(tcb.snd_una, ack):
            acked = seq_diff(ack, tcb.snd_una)
            self._rtt_sample(seg, now)
            tcb.snd_una = ack
            if seq_lt(self._snd_base, ack):
                n = min(seq_diff(ack, self._snd_base), len(self.buffers.send))
                del self.buffers.send[:n]
                self._snd_base = seq_add(self._snd_base, n)
            self._retries = self._persist_shift = 0
            if self._rexmit_nxt is not None and seq_lt(self._rexmit_nxt, ack):
                self._rexmit_nxt = ack
            if self.congestion.on_new_ack(acked, ack, self._flight) and self._flight:
                out.append(self._retransmit_first(now))
                self.stats.retransmissions += 1
            self._rto_deadline = now + self.rtt.rto if self._flight else None  # §5.2, §5.3
            if self._fin_sent and ack == tcb.snd_nxt:
                self._step(TcpEvent.RCV_ACK_OF_FIN, now=now)
        elif (self._flight and not seg.length and not seg.flags & (SYN | FIN)
              and wnd == tcb.snd_wnd and wnd
              # RFC 5681 §2's duplicate ACK (a zero window is a probe answer, not a loss hint)
              and self.congestion.on_dupack(ack, self._flight, tcb.snd_nxt)):
            out.append(self._retransmit_first(now))
            self.stats.retransmissions += 1
            self.stats.fast_retransmits += 1
        if seq_lt(tcb.snd_wl1, seg.seq) or (tcb.snd_wl1 == seg.seq
                                            and seq_le(tcb.snd_wl2, ack)):
            if wnd and not tcb.snd_wnd:
                self._persist_shift = 0
            tcb.snd_wnd, tcb.snd_wl1, tcb.snd_wl2 = wnd, seg.seq, ack
            self._max_sndwnd = max(self._max_sndwnd, wnd)
        return False, out

    def _rtt_sample(self, seg: Segment, now: float) -> None:
        """RFC 7323 §4.1 (timestamps: any ACK of new data) or one timed segment at a time
        with Karn's rule (RFC 6298 §3: retransmissions clear the timed segment)."""
        if self.tcb.ts_enabled and seg.tsecr is not None:
            ticks = seq_diff(self._tsval(now), seg.tsecr)
            if ticks < HALF:
                self.rtt.sample(ticks / TS_HZ)
        elif self._rtt_end is not None and seq_le(self._rtt_end, seg.ack):
            self.rtt.sample(now - self._rtt_start)
            self._rtt_end = None

    def _process_text(self, seg: Segment, now: float) -> None:
        """Steps 7-8: trim to the window, deliver in order or reassemble, then the FIN."""
        tcb = self.tcb
        seq, payload, fin = seg.seq, seg.payload or b"", bool(seg.flags & FIN)
        if seq_lt(seq, tcb.rcv_nxt):
            skip = seq_diff(tcb.rcv_nxt, seq)
            if skip > len(payload):
                payload, fin = b"", False
            payload, seq = payload[skip:], tcb.rcv_nxt
        room = tcb.rcv_wnd - seq_diff(seq, tcb.rcv_nxt)
        if len(payload) > room:
            payload, fin = payload[:max(room, 0)], False
        if seg.seg_len:
            self._ack_pending = True  # ACK every segment that occupies sequence space
        if payload:
            if seq == tcb.rcv_nxt:  # in-order fast path
                self.buffers.receive += payload
                tcb.rcv_nxt = seq_add(tcb.rcv_nxt, len(payload))
                more = self._reasm.pop_ready(tcb.rcv_nxt) if self._reasm else b""
                if more:
                    self.buffers.receive += more
                    tcb.rcv_nxt = seq_add(tcb.rcv_nxt, len(more))
            else:
                self._reasm.insert(seq, payload, tcb.rcv_nxt)
        if fin:
            self._peer_fin = seq_add(seq, len(payload))
        if self._peer_fin is not None and tcb.rcv_nxt == self._peer_fin:
            self._peer_fin = None
            tcb.rcv_nxt = seq_add(tcb.rcv_nxt, 1)
            self.eof_received = True
            self._step(TcpEvent.RCV_FIN, now=now)
        self._sync_rcv_wnd()

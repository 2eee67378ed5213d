"""Shared state and the sending half of :class:`reference.gateway.tcp.TcpConnection`.

Split from ``tcp.py`` only to keep modules small: this half builds every outgoing segment
(ACK field, advertised window, timestamps in one place: :meth:`Endpoint._make`), decides what
the windows allow (:meth:`Endpoint._output`), runs the retransmission and persist timers and
changes state through ``spec.states.tcp_step``. ``tcp.py`` holds the public API and segment
arrival. The rules of ``tcp.py``'s header apply here too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from reference.gateway._congestion import Reno
from reference.gateway._reassembly import Reassembly
from reference.gateway._rto import RTO_MAX, RtoEstimator
from spec.records import TCB, PacketBuffers
from spec.segment import ACK, FIN, PSH, RST, SYN, Segment
from spec.seq import seq_add, seq_diff, seq_le, seq_lt, seq_sub
from spec.states import TcpEvent, TcpState, tcp_step

DEFAULT_MSS = 536
"""RFC 9293 §3.7.1: the send MSS when the peer's SYN carried no MSS option."""
MAX_RETRIES = 12
"""Consecutive timeouts (or unanswered window probes) before giving up (RFC 1122
§4.2.3.5's R2)."""
MSL = 30.0
"""Maximum segment lifetime, seconds (RFC 9293 §3.4.2 suggests 2 min; a constructor
parameter); TIME-WAIT lasts 2*MSL (the §3.3.2 state diagram)."""
TS_HZ = 1000
"""Our TCP timestamp clock: 1 ms per tick (RFC 7323 §5.4 allows 1 ms .. 1 s)."""
TS_OPTION_LEN = 12
"""RFC 7323 §3 / Appendix A: the 10-byte timestamp option, padded, eats into the MSS."""
MAX_WINDOW_FIELD = 0xFFFF
INVALID_REPLY_INTERVAL = 0.5
"""Seconds between ACKs answering unacceptable empty segments (Linux's default)."""

S = TcpState
TRANSMITS = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
"""States in which data or our FIN may still be (re)transmitted."""
RECEIVES_TEXT = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})
"""RFC 9293 §3.10.7.4 step 7: states that accept segment text (no FIN received yet)."""
ACCEPTS_SEND = frozenset({S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT})
SENDS_RST_ON_ABORT = frozenset({S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2,
                                S.CLOSE_WAIT})
"""RFC 9293 §3.10.5 ABORT: the states that tell the peer with a RST."""


@dataclass(slots=True)
class TcpStats:
    """Counters; bytes count payload only, duplicates and retransmissions included."""

    retransmissions: int = 0
    segments_in: int = 0
    segments_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    timeouts: int = 0
    fast_retransmits: int = 0
    window_probes: int = 0
    challenge_acks: int = 0
    paws_drops: int = 0


@dataclass(frozen=True, slots=True)
class SynOffer:
    """The options our SYN carried (negotiation finishes when the SYN/ACK arrives)."""

    mss: int
    wscale: int | None
    sack_permitted: bool
    ts: bool


class Endpoint:
    """The state of one TCP endpoint and everything that sends (see the module doc)."""

    def __init__(self, tcb: TCB, buffers: PacketBuffers, *, now: float, rto_min: float,
                 msl: float, max_retries: int, local_mss: int, ts_origin: int | None) -> None:
        self.tcb = tcb
        self.buffers = buffers
        self.stats = TcpStats()
        self.error: str | None = None
        """Why the connection died: "connection reset", "connection refused",
        "retransmission limit"; None after a clean close or a local abort."""
        self.eof_received = False
        self.last_accepted = 0
        """How many bytes the last :meth:`send` took into the send buffer."""
        self.msl = msl
        self.max_retries = max_retries
        self.local_mss = local_mss
        """The MSS we announced (the receiver-side SWS threshold, RFC 9293 §3.8.6.2.2)."""
        self.rtt = RtoEstimator(rto_min=rto_min)
        self.congestion = Reno(self._smss)
        self._ts_offset = 0 if ts_origin is None else seq_sub(ts_origin, self._ts_clock(now))
        self._snd_base = tcb.snd_una
        """Sequence number of ``buffers.send[0]``."""
        self._fin_queued = False
        self._fin_sent = False
        self._peer_fin: int | None = None
        self._rcv_adv = seq_add(tcb.rcv_nxt, tcb.rcv_wnd)
        """Right edge of the window we advertised (never moved left)."""
        self._last_ack_sent = tcb.rcv_nxt
        self._ack_pending = False
        self._max_sndwnd = tcb.snd_wnd
        self._rexmit_nxt: int | None = None
        """Go-back-N point after a timeout: next byte to resend (RFC 5681 §3.1)."""
        self._rtt_end: int | None = None
        self._rtt_start = 0.0
        self._rto_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._timewait_deadline: float | None = None
        self._retries = 0
        self._probes = 0
        self._persist_shift = 0
        self._syn_offer: SynOffer | None = None
        self._syn_retransmitted = False
        self._last_invalid_reply: float | None = None
        self._reasm = self._new_reassembly(seq_add(tcb.irs, 1))

    def _new_reassembly(self, origin: int) -> Reassembly:
        return Reassembly(self.buffers.out_of_order, origin)

    @property
    def _smss(self) -> int:
        """Eff.snd.MSS (RFC 9293 §3.7.1): the peer's MSS less our per-segment options."""
        return max(1, self.tcb.mss - (TS_OPTION_LEN if self.tcb.ts_enabled else 0))

    @property
    def _data_end(self) -> int:
        return seq_add(self._snd_base, len(self.buffers.send))

    @property
    def _flight(self) -> int:
        return seq_diff(self.tcb.snd_nxt, self.tcb.snd_una)

    @property
    def _unsent(self) -> int:
        return 0 if self._fin_sent else seq_diff(self._data_end, self.tcb.snd_nxt)

    # --- timers -------------------------------------------------------------------------------

    def _on_rto(self, now: float) -> list[Segment]:
        """RFC 6298 §5.4-5.6: resend the earliest unacknowledged segment, back off."""
        self._rto_deadline = None
        self._retries += 1
        if self._retries > self.max_retries:
            self._die("retransmission limit", TcpEvent.RETRANSMIT_LIMIT, now)
            return []
        self.stats.timeouts += 1
        self.rtt.backoff()
        self._rtt_end = None  # Karn: nothing in flight may be timed any more
        if self.tcb.state is S.SYN_SENT:
            self._syn_retransmitted = True
            seg = self._syn(now)
        else:
            self.congestion.on_timeout(self._flight, self.tcb.snd_nxt,
                                       first=self._retries == 1)
            seg = self._retransmit_first(now)
            self._rexmit_nxt = seq_add(self.tcb.snd_una, seg.seg_len)
        self.stats.retransmissions += 1
        self._rto_deadline = now + self.rtt.rto
        return [seg]

    def _on_persist(self, now: float) -> list[Segment]:
        """Zero-window probe (RFC 9293 §3.8.6.1) or the sender-SWS override timeout
        (§3.8.6.2.1): send what is held back, at least one octet."""
        self._persist_deadline = None
        self._probes += 1
        if self._probes > self.max_retries:
            self._die("retransmission limit", TcpEvent.RETRANSMIT_LIMIT, now)
            return []
        self._persist_shift += 1
        self.stats.window_probes += 1
        tcb = self.tcb
        if tcb.snd_wnd > 0:
            return self._output(now, override=True)
        if tcb.snd_una != tcb.snd_nxt:
            self.stats.retransmissions += 1
            return [self._segment_at(tcb.snd_una, 1, now, new=False)]
        seg = self._segment_at(tcb.snd_nxt, 1, now, new=True)
        self._advance_snd_nxt(seg)
        return [seg]

    def _persist_interval(self) -> float:
        return min(self.rtt.rto * (1 << min(self._persist_shift, 16)), RTO_MAX)

    def _arm_timers(self, now: float) -> None:
        """One place decides which of the retransmission and persist timers runs."""
        tcb, st = self.tcb, self.tcb.state
        if st in (S.CLOSED, S.TIME_WAIT):
            self._rto_deadline = self._persist_deadline = None
            return
        outstanding = tcb.snd_una != tcb.snd_nxt
        held = st in TRANSMITS and (self._unsent > 0 or (self._fin_queued and not self._fin_sent))
        probing = st in TRANSMITS and tcb.snd_wnd == 0 and outstanding
        if probing or (held and (tcb.snd_wnd == 0 or not outstanding)):
            self._rto_deadline = None
            if self._persist_deadline is None:
                self._persist_deadline = now + self._persist_interval()
        else:
            self._persist_deadline = None
            if not outstanding:
                self._rto_deadline = None
            elif self._rto_deadline is None:  # RFC 6298 §5.1
                self._rto_deadline = now + self.rtt.rto

    # --- segment construction ---------------------------------------------------------------

    def _output(self, now: float, *, override: bool = False) -> list[Segment]:
        """Send what the windows allow: first the go-back-N resend after a timeout, then new
        data in segments of at most Eff.snd.MSS within min(SND.WND, cwnd), then our FIN.

        Sender SWS avoidance (RFC 9293 §3.8.6.2.1): a short segment goes only if it empties
        the queue or fills half the largest window seen; ``override`` is the timeout case.
        """
        tcb = self.tcb
        if tcb.state not in TRANSMITS:
            return []
        out: list[Segment] = []
        smss, wnd = self._smss, min(tcb.snd_wnd, self.congestion.cwnd)
        while self._rexmit_nxt is not None:
            if not seq_lt(self._rexmit_nxt, tcb.snd_nxt):
                self._rexmit_nxt = None
                break
            room = wnd - seq_diff(self._rexmit_nxt, tcb.snd_una)
            if room <= 0:
                return out
            seg = self._segment_at(self._rexmit_nxt, min(smss, room), now, new=False)
            self._rexmit_nxt = seq_add(self._rexmit_nxt, seg.seg_len)
            self.stats.retransmissions += 1
            out.append(seg)
        while True:
            unsent = self._unsent
            n = min(smss, unsent, max(wnd - self._flight, 0))
            fin = self._fin_queued and not self._fin_sent and n == unsent
            if n == 0 and not fin:
                break
            if n < smss and n < unsent and n < self._max_sndwnd // 2 and not override:
                break
            override = False
            seg = self._segment_at(tcb.snd_nxt, n, now, new=True)
            self._advance_snd_nxt(seg)
            out.append(seg)
        return out

    def _advance_snd_nxt(self, seg: Segment) -> None:
        self.tcb.snd_nxt = seq_add(seg.seq, seg.seg_len)
        if seg.flags & FIN:
            self._fin_sent = True

    def _segment_at(self, seq: int, max_len: int, now: float, *, new: bool) -> Segment:
        """Data from the send buffer starting at ``seq``; FIN when it ends where the FIN is
        (a new segment may carry a queued FIN, a resend only one already sent)."""
        send = self.buffers.send
        off = seq_diff(seq, self._snd_base)
        limit = len(send) - off
        if not new and not self._fin_sent:
            limit = min(limit, seq_diff(self.tcb.snd_nxt, seq))
        n = max(0, min(max_len, limit))
        payload = bytes(send[off:off + n])
        ends = off + n == len(send)
        fin = ends and self._fin_queued and (new or self._fin_sent)
        flags = ACK | (PSH if ends and n else 0) | (FIN if fin else 0)
        if new and self._rtt_end is None:
            self._rtt_end, self._rtt_start = seq_add(seq, n + fin), now
        self.stats.bytes_out += n
        return self._make(seq, flags, payload, now=now)

    def _retransmit_first(self, now: float) -> Segment:
        """The earliest unacknowledged segment (RFC 6298 §5.4), never timed (Karn)."""
        self._rtt_end = None
        return self._segment_at(self.tcb.snd_una, self._smss, now, new=False)

    def _syn(self, now: float) -> Segment:
        offer, tcb = self._syn_offer, self.tcb
        assert offer is not None  # only SYN-SENT sends a SYN, and connect() set the offer
        self.stats.segments_out += 1
        return Segment(seq=tcb.iss, ack=0, flags=SYN, window=tcb.rcv_wnd, mss=offer.mss,
                       wscale=offer.wscale, sack_permitted=offer.sack_permitted,
                       tsval=self._tsval(now) if offer.ts else None,
                       tsecr=0 if offer.ts else None)

    def _ack(self, now: float) -> Segment:
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (RFC 9293 §3.10.7.4)."""
        return self._make(self.tcb.snd_nxt, ACK, now=now)

    def stamp(self, seg: Segment, now: float) -> Segment:
        """A segment built outside this endpoint (the handoff's reply, spec.handoff C1.j) with
        the timestamps it owes on every non-RST segment once they are negotiated (RFC 7323
        §3.2); a peer may drop a segment without them."""
        tcb = self.tcb
        if not tcb.ts_enabled or seg.flags & RST:
            return seg
        tsval = tcb.ts_sent = self._tsval(now)
        tsecr = tcb.ts_recent if tcb.ts_recent is not None else 0
        return dataclasses.replace(seg, tsval=tsval, tsecr=tsecr)

    def _make(self, seq: int, flags: int, payload: bytes = b"", *, now: float) -> Segment:
        """Every outgoing segment: ACK field, window and timestamps filled in one place."""
        tcb = self.tcb
        ack, window = 0, 0
        if flags & ACK:
            ack, window = tcb.rcv_nxt, self._advertise()
            self._last_ack_sent = ack
            self._ack_pending = False
        tsval = tsecr = None
        if tcb.ts_enabled:
            tsval = tcb.ts_sent = self._tsval(now)
            tsecr = tcb.ts_recent if tcb.ts_recent is not None else 0
        self.stats.segments_out += 1
        return Segment(seq=seq, ack=ack, flags=flags, window=window, payload=payload,
                       tsval=tsval, tsecr=tsecr)

    @staticmethod
    def _ts_clock(now: float) -> int:
        return math.floor(now * TS_HZ)

    def _tsval(self, now: float) -> int:
        return seq_add(self._ts_clock(now), self._ts_offset)

    # --- receive window ---------------------------------------------------------------------

    def _sws_threshold(self) -> int:
        """RFC 9293 §3.8.6.2.2: min(Fr * RCV.BUFF, Eff.snd.MSS) with Fr = 1/2."""
        return max(1, min(self.buffers.capacity // 2, self.local_mss))

    def _sync_rcv_wnd(self) -> None:
        """RCV.WND after RCV.NXT moved: the rest of the advertised window (edge fixed)."""
        tcb = self.tcb
        tcb.rcv_wnd = (seq_diff(self._rcv_adv, tcb.rcv_nxt)
                       if seq_le(tcb.rcv_nxt, self._rcv_adv) else 0)

    def _window_field(self) -> tuple[int, int]:
        """(the window field to send now, the field that merely keeps the right edge).

        RFC 9293 §3.8.6.2.2: the right edge RCV.NXT + RCV.WND never moves left, and moves
        right to the free buffer space only once that gains at least the SWS threshold.
        Keeping the edge rounds the scaled field up (RFC 7323 §2.3), and a shift coarser than
        the free space still opens by one unit, so the buffer may take up to
        2^rcv_wscale - 1 bytes beyond its capacity.
        """
        s, cur = self.tcb.rcv_wscale, self.tcb.rcv_wnd
        keep = (cur + (1 << s) - 1) >> s
        free = self.buffers.capacity - len(self.buffers.receive)
        field = keep
        if free - cur >= self._sws_threshold():
            field = max(keep, (free >> s) or 1)
        return min(field, MAX_WINDOW_FIELD), keep

    def _window_opens(self) -> bool:
        field, keep = self._window_field()
        return field > keep

    def _advertise(self) -> int:
        """The window field for an outgoing segment; RCV.WND follows it."""
        tcb = self.tcb
        field = self._window_field()[0]
        tcb.rcv_wnd = field << tcb.rcv_wscale
        self._rcv_adv = seq_add(tcb.rcv_nxt, tcb.rcv_wnd)
        return field

    # --- state changes ----------------------------------------------------------------------

    def _finish(self, out: list[Segment], now: float) -> list[Segment]:
        """Every input ends here: owe an ACK -> send one; then re-arm the timers."""
        if self._ack_pending and self.tcb.state is not S.CLOSED:
            out.append(self._ack(now))
        self._ack_pending = False
        self._arm_timers(now)
        return out

    def _step(self, event: TcpEvent, *, now: float) -> None:
        """Drive the state through ``spec.states.tcp_step`` and start/stop timers."""
        self._enter(tcp_step(self.tcb.state, event), now)

    def _force(self, state: TcpState, *, now: float) -> None:
        """The transitions TCP_TABLE lacks: SYN-RECEIVED -> ESTABLISHED (the handshake's
        ACK, as ``spec.handoff.receive`` does it) and any state -> CLOSED (ABORT, or a RST
        / timeout in SYN-RECEIVED)."""
        self._enter(state, now)

    def _enter(self, state: TcpState, now: float) -> None:
        old, self.tcb.state = self.tcb.state, state
        if state is S.TIME_WAIT and old is not S.TIME_WAIT:
            self._timewait_deadline = now + 2 * self.msl
        if state in (S.TIME_WAIT, S.CLOSED):
            self._rto_deadline = self._persist_deadline = None
        if state is S.CLOSED:
            self._timewait_deadline = None

    def _die(self, reason: str, event: TcpEvent, now: float) -> None:
        """Reset or timeout: CLOSED through the table (forced where the table has no row)."""
        self.error = reason
        self._step(event, now=now)
        if self.tcb.state is not S.CLOSED and self.tcb.state is not S.TIME_WAIT:
            self._force(S.CLOSED, now=now)

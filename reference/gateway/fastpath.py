"""The fast path: light-weight TCP with no packet buffers (claim 1's fast path module).

Rule 1: every decision is a lookup in ``spec.states.FAST_PATH_TABLE``; every rewrite of a
relayed segment uses ``spec.translate`` (through ``codec.rewrite``, in place, with incremental
checksums). Rule 2: the only payload ever held is the one request segment of a session whose
server side is opening (``spec.states.HOLDS_PAYLOAD``); it is not acknowledged to the client
before the server has acknowledged it.

A session's records are the claim-1 records of ``spec.records``; when a first request segment
is not eligible (``spec.eligibility.classify``), the session and that very packet go to the
normal path (``reference.gateway.normalpath``), which carries out the handoff.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reference.gateway import codec
from reference.gateway.actions import Action, Drop, Emit
from spec import eligibility, translate
from spec.eligibility import HandoffReason, SegmentFacts
from spec.records import (
    ClientSessionRecord,
    FourTuple,
    HeldRequest,
    Negotiated,
    ProxySessionRecord,
    ServerSessionRecord,
    SynOptions,
)
from spec.segment import ACK, FIN, PSH, RST, SYN, URG, Segment
from spec.seq import seq_add, seq_diff, seq_le, seq_lt, syn_opens_new_incarnation
from spec.states import Effect, FastPathEvent, FastPathState, Transition, fast_path_step

if TYPE_CHECKING:
    from reference.gateway.config import VirtualService
    from reference.gateway.gateway import Gateway

S, E = FastPathState, FastPathEvent
MASK32 = 0xFFFFFFFF
SYN_WINDOW = 65535
"""Window field of the gateway's SYN/ACK and SYN (never scaled, RFC 7323 §2.2)."""


@dataclass(slots=True, eq=False)
class FastSession:
    """One client session while the fast path owns it (or until the normal path takes it)."""

    proxy: ProxySessionRecord
    version: int
    client: tuple[bytes, int]
    vip: tuple[bytes, int]
    service: VirtualService
    created: float
    last_active: float
    server: tuple[bytes, int] | None = None
    gw: tuple[bytes, int] | None = None
    server_name: str = ""
    deadline: float | None = None
    open_tries: int = 0
    ts_base: int = 0
    client_fin_end: int | None = None
    """Client-leg sequence number just past the client's FIN, once relayed."""
    server_fin_end: int | None = None
    """Server-leg sequence number just past the server's FIN, once relayed."""
    client_fin_acked: bool = False
    """The server acknowledged the client's FIN (its ACK reached the gateway)."""
    server_fin_acked: bool = False
    client_rcv_nxt: int | None = None
    """Client-leg RCV.NXT as the server last acknowledged it (its ACK, translated), and the
    window it offered in bytes: together the range an RST from the client must fall in
    (RFC 5961 §3); None until the server's first ACK is relayed."""
    client_rcv_wnd: int = 0
    client_snd_nxt: int | None = None
    """Client-leg sequence number just past the last byte (or FIN) relayed to the client,
    and the same on the server leg: where an RST of ours must sit to land in the peer's
    window (RFC 9293 §3.10.7.1 checks RST sequence numbers; RFC 5961 §3 tightens it)."""
    server_snd_nxt: int | None = None
    counted: bool = field(default=False)
    queued: float | None = None
    """Deadline of this session's one entry in the gateway's timer heap (None: none)."""

    @property
    def state(self) -> FastPathState:
        return self.proxy.state  # type: ignore[no-any-return]


def _furthest(snd_nxt: int | None, seq: int, plen: int, flags: int) -> int:
    """SND.NXT of one relayed direction after a segment at ``seq`` (payload and FIN)."""
    end = seq_add(seq, plen + (1 if flags & FIN else 0))
    return end if snd_nxt is None or seq_lt(snd_nxt, end) else snd_nxt


def family_mss(mss: int, version: int) -> int:
    """The configured MSS is for IPv4; an IPv6 header is 20 bytes longer (RFC 8200 vs RFC
    791), so on the same links an IPv6 session announces 20 bytes less (RFC 9293 §3.7.1:
    MSS = MTU - IP header - TCP header), or a peer trusting it sends frames over the MTU."""
    return mss - 20 if version == 6 else mss


_NEGOTIATED: dict[Negotiated, Negotiated] = {}


def _shared(n: Negotiated) -> Negotiated:
    """One object per distinct outcome of a negotiation (it is frozen, and a few dozen
    outcomes cover nearly every session): 80 bytes less per record that holds one."""
    kept = _NEGOTIATED.get(n)
    if kept is None:
        if len(_NEGOTIATED) >= 1024:
            _NEGOTIATED.clear()
        kept = _NEGOTIATED[n] = n
    return kept


def _syn_options(pkt: codec.Packet) -> SynOptions:
    return SynOptions(mss=pkt.mss, wscale=pkt.wscale, sack_permitted=pkt.sack_permitted,
                      tsval=pkt.tsval)


class FastPath:
    """The fast-path module of one gateway (its sessions live in the gateway's tables)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.cfg = gw.config
        self._next = S.NO_SESSION
        """The state the current step ends in (an effect may overrule the table's)."""

    # ---- classification of an arriving packet into a table event -----------------------
    def client_event(self, s: FastSession, pkt: codec.Packet, fragment: bool
                     ) -> tuple[FastPathEvent, HandoffReason]:
        if pkt.flags & RST:
            return E.CLIENT_RST, HandoffReason.NONE
        if pkt.flags & SYN:
            return E.CLIENT_SYN, HandoffReason.NONE
        first = s.state in (S.SYN_RCVD, S.ESTABLISHED)
        plen = len(pkt.payload)
        if first and (plen or pkt.flags & FIN or fragment):
            payload = bytes(pkt.payload)
            head = eligibility.parse_request_head(payload)
            facts = SegmentFacts(
                is_fragment=fragment,
                unsupported_flags=bool(pkt.flags & URG),
                unsupported_option=bool(pkt.unknown_options),
                seq=pkt.seq, rcv_nxt=seq_add(s.proxy.client.rcv_isn, 1), payload_len=plen,
                fin=bool(pkt.flags & FIN),
                request_complete=eligibility.request_head_complete(payload),
                request_parseable=head is not None,
                length_changing_rewrite=s.service.needs_length_changing_rewrite)
            reason = HandoffReason(eligibility.classify(facts))
            return (E.CLIENT_REQUEST_OK if reason is HandoffReason.NONE
                    else E.CLIENT_REQUEST_HANDOFF), reason
        if pkt.flags & FIN:
            return E.CLIENT_FIN, HandoffReason.NONE
        if plen:
            return E.CLIENT_DATA, HandoffReason.NONE
        return E.CLIENT_ACK, HandoffReason.NONE

    @staticmethod
    def server_event(pkt: codec.Packet) -> FastPathEvent:
        if pkt.flags & RST:
            return E.SERVER_RST
        if pkt.flags & SYN:
            return E.SERVER_SYNACK
        if pkt.flags & FIN:
            return E.SERVER_FIN
        return E.SERVER_SEGMENT

    # ---- entry points ---------------------------------------------------------------------
    def new_session(self, pkt: codec.Packet, service: VirtualService, now: float
                    ) -> FastSession:
        """ANSWER_SYN's records: client session record and first proxy session record."""
        cfg = self.cfg
        peer_mss = pkt.mss or translate.RFC9293_DEFAULT_MSS
        ws = pkt.wscale is not None
        ts = pkt.tsval is not None
        neg = _shared(Negotiated(peer_mss=peer_mss,
                                 local_mss=family_mss(cfg.mss, pkt.version),
                                 snd_wscale=min(pkt.wscale or 0, 14) if ws else 0,
                                 rcv_wscale=cfg.window_scale if ws else 0,
                                 sack=pkt.sack_permitted, timestamps=ts))
        isn = self.gw.isn(pkt.dst, pkt.dport, pkt.src, pkt.sport, now)
        ts_base = self.gw.ts_clock(now)
        crec = ClientSessionRecord(
            tuple=FourTuple(pkt.src_str, pkt.sport, pkt.dst_str, pkt.dport), rcv_isn=pkt.seq,
            snd_isn=isn, syn_options=_syn_options(pkt), negotiated=neg,
            ts_sent=ts_base if ts else None, ts_recent=pkt.tsval, rcv_wnd_field=pkt.window)
        proxy = ProxySessionRecord(client=crec, service=service.name, state=S.NO_SESSION)
        return FastSession(proxy=proxy, version=pkt.version, client=(pkt.src, pkt.sport),
                           vip=(pkt.dst, pkt.dport), service=service, created=now,
                           last_active=now, ts_base=ts_base)

    def from_client(self, s: FastSession, pkt: codec.Packet, buf: bytearray, now: float, *,
                    fragment: bool = False) -> list[Action]:
        if pkt.flags & RST and not self._rst_in_window(s, pkt):
            # RFC 5961 §3.2: an RST outside the window is dropped. Relaying it would end the
            # gateway's session while the server, which ignores it, carries on; a blind
            # attacker could then cut any spliced connection with a guessed RST.
            self.gw.stats.drops["fast_path:rst_out_of_window"] += 1
            return [Drop("client", "fast_path:rst_out_of_window")]
        ev, reason = self.client_event(s, pkt, fragment)
        return self.step(s, fast_path_step(s.state, ev), pkt, buf, now, reason, "client")

    def from_server(self, s: FastSession, pkt: codec.Packet, buf: bytearray, now: float
                    ) -> list[Action]:
        return self.step(s, fast_path_step(s.state, self.server_event(pkt)), pkt, buf, now,
                         HandoffReason.NONE, "server")

    def on_timer(self, s: FastSession, now: float) -> list[Action]:
        """Open retries/timeout, linger and idle timeouts of one session."""
        if s.deadline is None or now < s.deadline:
            return []
        if s.state is S.SERVER_OPENING:
            s.open_tries += 1
            ev = E.OPEN_RETRY if s.open_tries <= self.cfg.open_retries else E.OPEN_TIMEOUT
        elif s.state is S.CLOSING and s.client_fin_acked and s.server_fin_acked:
            ev = E.LINGER_TIMEOUT  # both FINs acknowledged and no packet for a linger
        elif s.state is S.CLOSING and now < s.last_active + self.cfg.idle_timeout:
            s.deadline = now + self.cfg.linger  # a FIN still unacknowledged: keep relaying
            self.gw.schedule(s)
            return []
        elif now < s.last_active + self.cfg.idle_timeout:
            s.deadline = s.last_active + self.cfg.idle_timeout  # active since: not idle yet
            self.gw.schedule(s)
            return []
        else:
            ev = E.IDLE_TIMEOUT
        return self.step(s, fast_path_step(s.state, ev), None, None, now, HandoffReason.NONE,
                         "timer")

    # ---- the effects --------------------------------------------------------------------------
    def step(self, s: FastSession, t: Transition, pkt: codec.Packet | None,
             buf: bytearray | None, now: float, reason: HandoffReason, origin: str
             ) -> list[Action]:
        before = s.state
        if origin != "timer":
            s.last_active = now
        self._next = t.next
        out = self._apply(s, t.effect, pkt, buf, now, reason, before)
        s.proxy.state = self._next
        if self._next is not before:
            s.deadline = None  # each state arms its own timer afresh
        self._arm(s, now)
        if s.proxy.state is S.CLOSED:
            self.gw.retire_fast(s)
        return out

    def _arm(self, s: FastSession, now: float) -> None:
        st = s.proxy.state
        if st is S.SERVER_OPENING:
            if s.deadline is None or s.deadline <= now:
                s.deadline = now + self.cfg.open_timeout * (1 << min(s.open_tries, 6))
        elif st is S.CLOSING:
            s.deadline = now + self.cfg.linger  # restarted by every packet
        elif st in (S.HANDED_OFF, S.CLOSED):
            s.deadline = None
        else:
            want = s.last_active + self.cfg.idle_timeout
            if s.deadline is not None and now < s.deadline <= want:
                # Pushed back lazily: on_timer re-arms it if the session was active since, so
                # a busy session does not add a timer entry per packet.
                return
            s.deadline = want
        self.gw.schedule(s)

    def _apply(self, s: FastSession, effect: Effect, pkt: codec.Packet | None,
               buf: bytearray | None, now: float, reason: HandoffReason, before: FastPathState
               ) -> list[Action]:
        if effect is Effect.RELAY_TO_CLIENT:  # the steady state first: once per segment
            assert pkt is not None and buf is not None
            return self._relay_to_client(s, pkt, buf)
        if effect is Effect.RELAY_TO_SERVER:
            assert pkt is not None and buf is not None
            return self._relay_to_server(s, pkt, buf)
        p = s.proxy
        if effect is Effect.DROP:
            self.gw.stats.drops[f"fast_path:{before.name}"] += 1
            return [Drop("client" if pkt is None or pkt.dst == s.vip[0] else "server",
                         f"fast_path:{before.name}")]
        if effect in (Effect.ANSWER_SYN, Effect.RESEND_SYNACK):
            return [self._synack(s)]
        if effect is Effect.COMPLETE_HANDSHAKE:
            assert pkt is not None
            self._note_client(s, pkt)
            return []
        if effect is Effect.HOLD_AND_OPEN_SERVER:
            assert pkt is not None
            return self._hold_and_open(s, pkt, now)
        if effect is Effect.RESEND_SERVER_SYN:
            return [self._server_syn(s)]
        if effect is Effect.RESET_UNACCEPTABLE_ACK:
            assert pkt is not None
            return self._reset_unacceptable_ack(s, pkt)
        if effect is Effect.SPLICE:
            assert pkt is not None
            return self._splice(s, pkt, now)
        if effect is Effect.HANDOFF:
            assert pkt is not None
            return self.gw.normal.take_over(s, pkt, buf, reason, now)  # claim 1
        if effect is Effect.STEER_TO_NORMAL_PATH:  # pragma: no cover - gateway steers first
            return []
        if effect in (Effect.RELAY_RST_TO_SERVER, Effect.RELAY_RST_TO_CLIENT):
            assert pkt is not None and buf is not None
            if effect is Effect.RELAY_RST_TO_SERVER:
                return self._relay_to_server(s, pkt, buf)
            return self._relay_to_client(s, pkt, buf)
        out: list[Action] = []
        if effect in (Effect.RESET_CLIENT, Effect.RESET_BOTH):
            out.append(self._rst_client(s))
        if effect is Effect.RESET_BOTH and p.server is not None and s.server is not None:
            out.append(self._rst_server(s))
        return out  # RETIRE: nothing to send

    @staticmethod
    def reopened_by(s: FastSession, pkt: codec.Packet) -> bool:
        """Whether a client SYN starts a new session on the 4-tuple of ``s``, which lingers
        after both FINs were acknowledged: the server's TCP is in TIME-WAIT or closed, and
        takes such a SYN as a new incarnation when it is newer, by timestamp with timestamps
        on (RFC 6191 §2), else by sequence number (RFC 1122 §4.2.2.13). Dropping it, as the
        table does for a segment in CLOSING, would stall the client for the linger time."""
        if s.proxy.state is not S.CLOSING or pkt.flags & (ACK | RST) or \
                not (s.client_fin_acked and s.server_fin_acked) or s.client_fin_end is None:
            return False
        c = s.proxy.client
        return bool(syn_opens_new_incarnation(c.negotiated.timestamps, c.ts_recent,
                                              pkt.tsval, s.client_fin_end, pkt.seq))

    @staticmethod
    def _rst_in_window(s: FastSession, pkt: codec.Packet) -> bool:
        """Whether a client RST falls in the receive window of whoever answers the client:
        the server once it has acknowledged something through the splice, else the fast path
        itself (RCV.NXT = IRS + 1, the window of its SYN/ACK)."""
        c = s.proxy.client
        if s.client_rcv_nxt is None:
            left = seq_add(c.rcv_isn, 1)
            span = SYN_WINDOW << c.negotiated.rcv_wscale
        else:
            left, span = s.client_rcv_nxt, s.client_rcv_wnd
        return 0 <= seq_diff(pkt.seq, left) < max(span, 1)

    # ---- handshake with the client ----------------------------------------------------------
    def _note_client(self, s: FastSession, pkt: codec.Packet) -> None:
        c = s.proxy.client
        c.rcv_wnd_field = pkt.window
        if pkt.tsval is not None:
            c.ts_recent = pkt.tsval

    def _synack(self, s: FastSession) -> Emit:
        c = s.proxy.client
        n = c.negotiated
        pkt = codec.build(
            version=s.version, src=s.vip[0], dst=s.client[0], sport=s.vip[1], dport=s.client[1],
            seq=c.snd_isn, ack=seq_add(c.rcv_isn, 1), flags=SYN | ACK, window=SYN_WINDOW,
            mss=n.local_mss, wscale=n.rcv_wscale if c.syn_options.wscale is not None else None,
            sack_permitted=n.sack, tsval=c.ts_sent if n.timestamps else None,
            tsecr=c.ts_recent if n.timestamps else None)
        return self.gw.emit("client", pkt)

    def _rst_client(self, s: FastSession) -> Emit:
        c = s.proxy.client
        self.gw.stats.resets_sent += 1
        return self.gw.emit("client", codec.build(
            version=s.version, src=s.vip[0], dst=s.client[0], sport=s.vip[1],
            dport=s.client[1], seq=s.client_snd_nxt if s.client_snd_nxt is not None
            else seq_add(c.snd_isn, 1), ack=0, flags=RST, window=0))

    def _rst_server(self, s: FastSession) -> Emit:
        srv = s.proxy.server
        assert srv is not None and s.server is not None and s.gw is not None
        self.gw.stats.resets_sent += 1
        return self.gw.emit("server", codec.build(
            version=s.version, src=s.gw[0], dst=s.server[0], sport=s.gw[1],
            dport=s.server[1], seq=s.server_snd_nxt if s.server_snd_nxt is not None
            else seq_add(srv.snd_isn, 1), ack=0, flags=RST, window=0))

    def _reset_unacceptable_ack(self, s: FastSession, pkt: codec.Packet) -> list[Action]:
        """RFC 9293 §3.10.7.3 in SYN-SENT: an ACK that does not acknowledge our SYN gets
        <SEQ=SEG.ACK><CTL=RST> (see ``Effect.RESET_UNACCEPTABLE_ACK``); anything else is
        dropped."""
        srv = s.proxy.server
        assert srv is not None and s.server is not None and s.gw is not None
        if not pkt.flags & ACK or pkt.ack == seq_add(srv.snd_isn, 1):
            self.gw.stats.drops["fast_path:SERVER_OPENING"] += 1
            return [Drop("server", "fast_path:SERVER_OPENING")]
        self.gw.stats.resets_sent += 1
        return [self.gw.emit("server", codec.build(
            version=s.version, src=s.gw[0], dst=s.server[0], sport=s.gw[1],
            dport=s.server[1], seq=pkt.ack, ack=0, flags=RST, window=0))]

    # ---- delayed binding: hold the request, open the server side ------------------------
    def _hold_and_open(self, s: FastSession, pkt: codec.Packet, now: float) -> list[Action]:
        p = s.proxy
        self._note_client(s, pkt)
        payload = bytes(pkt.payload)
        head = eligibility.parse_request_head(payload)
        assert head is not None  # eligibility guarantees a parseable head
        pool, server = self.gw.selector.pick(s.service, head, (pkt.src_str, pkt.sport))
        s.server_name = sys.intern(f"{pool}/{server.address}:{server.port}")
        p.server_name = s.server_name
        s.server = (codec.addr_bytes(server.address), server.port)
        gw_addr = self.gw.server_side_address(s.version)
        gw_port = self.gw.allocate_port(s.server, gw_addr)
        s.gw = (gw_addr, gw_port)
        n = p.client.negotiated
        ts_now = self.gw.ts_clock(now)
        srec = ServerSessionRecord(
            tuple=FourTuple(codec.addr_str(gw_addr), gw_port, server.address, server.port),
            snd_isn=self.gw.isn(gw_addr, gw_port, s.server[0], s.server[1], now),
            syn_options=SynOptions(
                mss=translate.mss_clamp(n.peer_mss, family_mss(self.cfg.mss, s.version)),
                wscale=n.snd_wscale if p.client.syn_options.wscale is not None else None,
                sack_permitted=n.sack, tsval=ts_now if n.timestamps else None),
            ts_sent=ts_now if n.timestamps else None)
        p.server = srec
        p.held = HeldRequest(seq=pkt.seq, payload=payload, tsval=pkt.tsval, tsecr=pkt.tsecr,
                             window=pkt.window)
        self.gw.stats.held_request_bytes += len(payload)
        self.gw.index_server_side(s)
        return [self._server_syn(s)]

    def _server_syn(self, s: FastSession) -> Emit:
        srv = s.proxy.server
        assert srv is not None and s.server is not None and s.gw is not None
        o = srv.syn_options
        return self.gw.emit("server", codec.build(
            version=s.version, src=s.gw[0], dst=s.server[0], sport=s.gw[1], dport=s.server[1],
            seq=srv.snd_isn, ack=0, flags=SYN, window=SYN_WINDOW, mss=o.mss, wscale=o.wscale,
            sack_permitted=o.sack_permitted, tsval=o.tsval, tsecr=0 if o.tsval is not None
            else None))

    def _splice(self, s: FastSession, pkt: codec.Packet, now: float) -> list[Action]:
        p = s.proxy
        srv, held = p.server, p.held
        assert srv is not None and held is not None
        if not pkt.flags & ACK or pkt.ack != seq_add(srv.snd_isn, 1):
            self._next = S.SERVER_OPENING  # not the answer to our SYN: ignore it
            self.gw.stats.drops["fast_path:bad_synack"] += 1
            return [Drop("server", "fast_path:bad_synack")]
        mine = srv.syn_options
        srv.rcv_isn = pkt.seq
        srv.peer_options = _syn_options(pkt)
        ws = mine.wscale is not None and pkt.wscale is not None
        srv.negotiated = _shared(Negotiated(
            peer_mss=pkt.mss or translate.RFC9293_DEFAULT_MSS, local_mss=mine.mss or 536,
            snd_wscale=min(pkt.wscale or 0, 14) if ws else 0,
            rcv_wscale=(mine.wscale or 0) if ws else 0,
            sack=mine.sack_permitted and pkt.sack_permitted,
            timestamps=mine.tsval is not None and pkt.tsval is not None))
        cn = p.client.negotiated
        if cn.timestamps and not srv.negotiated.timestamps:
            # The client was promised timestamps and the server refused them: the fast path
            # cannot invent TSvals for every relayed segment, so this session must not splice.
            return self._abandon(s, "server_refused_timestamps")
        sp = translate.make_splice(p.client, srv,
                                   client_tsval_now=held.tsval if cn.timestamps else None,
                                   server_tsval_now=pkt.tsval if cn.timestamps else None)
        p.splice = sp
        p.held = None
        self.gw.stats.held_request_bytes -= len(held.payload)
        self.gw.stats.sessions_spliced += 1
        self.gw.note_spliced(s, now)
        seg = Segment(seq=translate.seq_to_server(sp, held.seq), ack=seq_add(pkt.seq, 1),
                      flags=ACK | PSH, window=translate.window_to_server(sp, held.window),
                      payload=held.payload,
                      tsval=translate.tsval_to_server(sp, held.tsval) if sp.timestamps else None,
                      tsecr=pkt.tsval if sp.timestamps else None)
        out: list[Action] = []
        for piece in _split(seg, _payload_room(sp.server_mss, seg)):
            out.append(self.gw.emit("server", self._build_server(s, piece)))
        self.gw.stats.bytes_client_to_server += len(held.payload)
        s.server_snd_nxt = seq_add(seg.seq, len(held.payload))
        return out

    def _abandon(self, s: FastSession, why: str) -> list[Action]:
        self.gw.stats.drops[f"fast_path:{why}"] += 1
        out: list[Action] = [self._rst_server(s), self._rst_client(s)]
        self._next = S.CLOSED
        return out

    # ---- the splice ---------------------------------------------------------------------------
    def _relay_to_server(self, s: FastSession, pkt: codec.Packet, buf: bytearray
                         ) -> list[Action]:
        sp = s.proxy.splice
        assert sp is not None and s.server is not None and s.gw is not None
        ack_flag = pkt.flags & ACK
        ts = sp.timestamps and pkt.tsval is not None
        plen = len(pkt.payload)
        stats = self.gw.stats
        stats.relayed_segments += 1
        stats.bytes_client_to_server += plen
        if pkt.tsval is not None:
            s.proxy.client.ts_recent = pkt.tsval
        if pkt.flags & FIN:
            s.client_fin_end = seq_add(pkt.seq, plen + 1)
        if ack_flag and s.server_fin_end is not None and \
                seq_le(translate.seq_to_client(sp, s.server_fin_end), pkt.ack):
            s.server_fin_acked = True
        new_seq = translate.seq_to_server(sp, pkt.seq)
        s.server_snd_nxt = _furthest(s.server_snd_nxt, new_seq, plen, pkt.flags)
        new_ack = translate.ack_to_server(sp, pkt.ack) if ack_flag else pkt.ack
        room = _payload_room(sp.server_mss, pkt)
        whole = plen > room and self.cfg.gso_output  # the driver cuts it (GSO)
        if plen > room and not whole:
            seg = pkt.to_segment().with_(
                seq=new_seq, ack=new_ack, window=translate.window_to_server(sp, pkt.window),
                tsval=translate.tsval_to_server(sp, pkt.tsval) if ts else None,
                tsecr=translate.tsecr_to_server(sp, pkt.tsecr) if ts else None,
                sack=tuple(translate.sack_to_server(sp, list(pkt.sack))) if sp.sack else ())
            return [self.gw.emit("server", self._build_server(s, piece))
                    for piece in _split(seg, room)]
        codec.rewrite(
            buf, pkt, src=s.gw[0], dst=s.server[0], sport=s.gw[1], dport=s.server[1],
            seq=new_seq, ack=new_ack, window=translate.window_to_server(sp, pkt.window),
            tsval=translate.tsval_to_server(sp, pkt.tsval) if ts else None,
            tsecr=translate.tsecr_to_server(sp, pkt.tsecr) if ts else None,
            sack=tuple(translate.sack_to_server(sp, list(pkt.sack))) if pkt.sack else None)
        return [self.gw.emit("server", bytes(buf), room if whole else 0)]

    def _relay_to_client(self, s: FastSession, pkt: codec.Packet, buf: bytearray
                         ) -> list[Action]:
        sp = s.proxy.splice
        assert sp is not None
        if pkt.flags & SYN:
            # A retransmitted SYN/ACK: our ACK (with the request) was lost. Re-ACK; the client,
            # never acknowledged, retransmits the request itself.
            srv = s.proxy.server
            assert srv is not None
            seg = Segment(seq=translate.seq_to_server(sp, seq_add(s.proxy.client.rcv_isn, 1)),
                          ack=seq_add(pkt.seq, 1), flags=ACK, window=SYN_WINDOW,
                          tsval=self.gw.ts_clock(0) if sp.timestamps else None,
                          tsecr=pkt.tsval if sp.timestamps else None)
            return [self.gw.emit("server", self._build_server(s, seg))]
        ts = sp.timestamps and pkt.tsval is not None
        plen = len(pkt.payload)
        stats = self.gw.stats
        stats.relayed_segments += 1
        stats.bytes_server_to_client += plen
        if pkt.flags & FIN:
            s.server_fin_end = seq_add(pkt.seq, plen + 1)
        if pkt.flags & ACK and s.client_fin_end is not None and \
                seq_le(translate.seq_to_server(sp, s.client_fin_end), pkt.ack):
            s.client_fin_acked = True
        new_seq = translate.seq_to_client(sp, pkt.seq)
        new_ack = translate.ack_to_client(sp, pkt.ack) if pkt.flags & ACK else pkt.ack
        s.client_snd_nxt = _furthest(s.client_snd_nxt, new_seq, plen, pkt.flags)
        if pkt.flags & ACK:
            s.client_rcv_nxt, s.client_rcv_wnd = new_ack, pkt.window << sp.server_snd_wscale
        room = _payload_room(sp.client_mss, pkt)
        whole = plen > room and self.cfg.gso_output  # the driver cuts it (GSO)
        if plen > room and not whole:
            seg = pkt.to_segment().with_(
                seq=new_seq, ack=new_ack, window=translate.window_to_client(sp, pkt.window),
                tsval=translate.tsval_to_client(sp, pkt.tsval) if ts else None,
                tsecr=translate.tsecr_to_client(sp, pkt.tsecr) if ts else None,
                sack=tuple(translate.sack_to_client(sp, list(pkt.sack))) if sp.sack else ())
            return [self.gw.emit("client", self._build_client(s, piece))
                    for piece in _split(seg, room)]
        codec.rewrite(
            buf, pkt, src=s.vip[0], dst=s.client[0], sport=s.vip[1], dport=s.client[1],
            seq=new_seq, ack=new_ack, window=translate.window_to_client(sp, pkt.window),
            tsval=translate.tsval_to_client(sp, pkt.tsval) if ts else None,
            tsecr=translate.tsecr_to_client(sp, pkt.tsecr) if ts else None,
            sack=tuple(translate.sack_to_client(sp, list(pkt.sack))) if pkt.sack else None)
        return [self.gw.emit("client", bytes(buf), room if whole else 0)]

    def _build_server(self, s: FastSession, seg: Segment) -> bytes:
        assert s.server is not None and s.gw is not None
        return codec.build(version=s.version, src=s.gw[0], dst=s.server[0], sport=s.gw[1],
                           dport=s.server[1], seq=seg.seq, ack=seg.ack, flags=seg.flags,
                           window=seg.window, payload=seg.payload or b"", tsval=seg.tsval,
                           tsecr=seg.tsecr, sack=seg.sack)

    def _build_client(self, s: FastSession, seg: Segment) -> bytes:
        return codec.build(version=s.version, src=s.vip[0], dst=s.client[0], sport=s.vip[1],
                           dport=s.client[1], seq=seg.seq, ack=seg.ack, flags=seg.flags,
                           window=seg.window, payload=seg.payload or b"", tsval=seg.tsval,
                           tsecr=seg.tsecr, sack=seg.sack)


def _payload_room(mss: int, seg: codec.Packet | Segment) -> int:
    """Payload octets that fit the receiver's MSS once this segment's options are counted
    (RFC 6691: the MSS bounds data plus options beyond the fixed 20-octet header)."""
    opts = 0
    if seg.tsval is not None:
        opts += 12  # NOP NOP TS
    if seg.sack:
        opts += 4 + 8 * len(seg.sack)  # NOP NOP SACK
    return max(1, mss - opts)


def _split(seg: Segment, mss: int) -> list[Segment]:
    """Cut a relayed segment to the receiver's MSS (``spec.translate.split_point``); every
    piece is emitted at once, nothing is buffered. FIN/PSH stay on the last piece."""
    payload = seg.payload or b""
    if len(payload) <= mss:
        return [seg]
    pieces, off = [], 0
    while off < len(payload):
        n = translate.split_point(len(payload) - off, mss)
        last = off + n >= len(payload)
        flags = seg.flags if last else seg.flags & ~(FIN | PSH)
        pieces.append(seg.with_(seq=seq_add(seg.seq, off), payload=payload[off:off + n],
                                flags=flags))
        off += n
    return pieces


"""Differential: Hypothesis drives the core against the spec/ model (same decisions, same
translated numbers).

One hand-played client and one hand-played server talk, segment by segment, to both
``spec.models.FastPathModel`` (abstract ``Segment``s) and a real ``Gateway`` (IPv4 packets
built with ``codec.build``; the client is 198.51.100.2:40000, the VIP 192.0.2.10:80, the
server answers from wherever the gateway's SYN went). Both get the same ISNs: the model
through its constructor, the gateway through ``isn_source``, which tells the client side
(local port 80, the VIP's) from the server side (an ephemeral local port).

After every step the two must agree on the fast-path state and the handoff reason; on the
fast path every segment the model emits has a twin from the gateway with the same seq, ack,
payload and core flags. The normal paths are different TCP implementations, so after a
handoff only the handoff itself and the numbers claim 1 fixes are compared.

TCP options: the model negotiates none (its ``Negotiated`` records keep window scale 0, no
SACK, no timestamps), so the client and the server offer only MSS here; with options on, the
gateway would rescale windows and translate timestamps the model does not know about.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from reference.gateway import codec
from reference.gateway.actions import Action, Drop, Emit
from reference.gateway.config import default_config
from reference.gateway.fastpath import FastSession
from reference.gateway.gateway import Gateway
from reference.gateway.sim import fragment_ipv4
from spec.eligibility import HandoffReason
from spec.models import RTO, Emitted, FastPathModel
from spec.segment import ACK, FIN, PSH, RST, SYN, Segment
from spec.seq import seq_add, seq_diff
from spec.states import Effect, FastPathState
from spec.topology import CLIENT_IP, CLIENT_PORT, VIP, VPORT

MOD = 1 << 32
CORE_FLAGS = SYN | ACK | FIN | RST
"""Flags compared between model and core. PSH is not: the model keeps it on every piece of a
split segment, the core only on the last (both are valid TCP)."""
CLIENT = codec.addr_bytes(CLIENT_IP)
VIP_B = codec.addr_bytes(VIP)
STEP = 0.001
"""Simulated seconds between steps: a whole exchange stays far below every timer (the
model's 1 s RTO, the core's 3 s open timeout), so no timer decides anything here."""

isns = st.one_of(st.integers(0, 3000).map(lambda k: MOD - 1 - k), st.integers(0, MOD - 1))
"""Near the wrap (every stream below crosses 2^32) or anywhere."""


def make_request(path: str, pad: int) -> bytes:
    extra = f"X-Pad: {'a' * pad}\r\n" if pad else ""
    return f"GET /{path} HTTP/1.1\r\nHost: vip.example\r\n{extra}\r\n".encode()


def pattern(n: int, salt: int = 0) -> bytes:
    return bytes((i * 7 + salt) % 251 for i in range(n))


@dataclass(frozen=True)
class Common:
    c_isn: int
    s_isn: int
    g: int
    gs: int
    client_mss: int | None
    server_mss: int | None
    client_window: int
    server_window: int
    request: bytes
    handshake_ack: bool
    """The client sends the handshake's ACK on its own before the request (else the request
    completes the handshake, from SYN_RCVD)."""


@st.composite
def commons(draw: st.DrawFn) -> Common:
    path = draw(st.text("abcdefghij0123456789/", max_size=30))
    return Common(
        c_isn=draw(isns), s_isn=draw(isns), g=draw(isns), gs=draw(isns),
        client_mss=draw(st.one_of(st.none(), st.integers(536, 1460))),
        server_mss=draw(st.one_of(st.none(), st.integers(40, 200), st.integers(200, 1460))),
        client_window=draw(st.integers(1, 0xFFFF)),
        server_window=draw(st.integers(1, 0xFFFF)),
        request=make_request(path, draw(st.integers(0, 400))),
        handshake_ack=draw(st.booleans()))


@dataclass
class Twin:
    """What one step produced on each side."""

    model: Emitted
    actions: list[Action]

    def gw(self, leg: str) -> list[codec.Packet]:
        return [codec.parse(a.packet) for a in self.actions
                if isinstance(a, Emit) and a.leg == leg]


def numbers(segs: list[Segment], windows: bool) -> list[tuple[object, ...]]:
    return [(s.seq, s.ack, s.flags & CORE_FLAGS, bytes(s.payload or b""))
            + ((s.window,) if windows else ()) for s in segs]


@dataclass
class Duo:
    """The model and the core side by side, fed the same segments."""

    cm: Common
    model: FastPathModel = field(init=False)
    gw: Gateway = field(init=False)
    now: float = 0.0
    session: FastSession | None = None
    server: tuple[bytes, int] | None = None
    """Where the core's SYN went (the server the selector picked)."""
    gw_side: tuple[bytes, int] | None = None
    """The core's own address and port towards that server."""
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        cm = self.cm

        def isn_source(laddr: bytes, lport: int, raddr: bytes, rport: int, now: float) -> int:
            return cm.g if lport == VPORT else cm.gs

        self.model = FastPathModel(isn_client_side=cm.g, isn_server_side=cm.gs)
        self.gw = Gateway(default_config(), isn_source=isn_source)

    # ---- feeding both ---------------------------------------------------------------------
    def client(self, seg: Segment, *, fragment: int | None = None) -> Twin:
        self.now += STEP
        self.log.append(f"client seq={seg.seq} ack={seg.ack} flags={seg.flags:#x} "
                        f"len={seg.length} fragment={fragment}")
        pkt = codec.build(version=4, src=CLIENT, dst=VIP_B, sport=CLIENT_PORT, dport=VPORT,
                          seq=seg.seq, ack=seg.ack, flags=seg.flags, window=seg.window,
                          payload=seg.payload or b"", mss=seg.mss)
        pieces = fragment_ipv4(pkt, fragment) if fragment is not None else [pkt]
        if fragment is not None:
            assert len(pieces) > 1, "the test meant to fragment this packet"
        actions: list[Action] = []
        for p in pieces:
            actions += self.gw.handle("client", p, now=self.now)
        out = self.model.from_client(seg, self.now, fragment=fragment is not None)
        if self.session is None:
            self.session = self.gw.client_sessions.get(self.key)
        return self._checked(Twin(out, actions))

    def from_server(self, seg: Segment) -> Twin:
        assert self.server is not None and self.gw_side is not None
        self.now += STEP
        self.log.append(f"server seq={seg.seq} ack={seg.ack} flags={seg.flags:#x} "
                        f"len={seg.length}")
        pkt = codec.build(version=4, src=self.server[0], dst=self.gw_side[0],
                          sport=self.server[1], dport=self.gw_side[1], seq=seg.seq, ack=seg.ack,
                          flags=seg.flags, window=seg.window, payload=seg.payload or b"",
                          mss=seg.mss)
        actions = self.gw.handle("server", pkt, now=self.now)
        return self._checked(Twin(self.model.from_server(seg, self.now), actions))

    # ---- comparing ------------------------------------------------------------------------
    @property
    def key(self) -> tuple[bytes, int, bytes, int]:
        return (CLIENT, CLIENT_PORT, VIP_B, VPORT)

    def gw_state(self) -> FastPathState:
        return FastPathState.NO_SESSION if self.session is None else self.session.state

    def gw_reason(self) -> HandoffReason:
        ns = self.gw.normal_by_client.get(self.key)
        return HandoffReason.NONE if ns is None else ns.reason

    def _checked(self, t: Twin) -> Twin:
        """Same state and reason after every step; what the model ignores the core drops."""
        where = " / ".join(self.log)
        assert self.model.state is self.gw_state(), where
        assert self.model.handoff_reason is self.gw_reason(), where
        if self.model.state is not FastPathState.HANDED_OFF:
            effect = self.model.effects[-1]
            # a SYN/ACK that does not answer the gateway's SYN: the model's SPLICE ignores it
            # (stays SERVER_OPENING, sends nothing), the core counts it as a drop
            # and a server segment without SYN while opening: the model answers only an
            # unacceptable ACK (with an RST), the core counts anything else as a drop
            ignored = effect is Effect.DROP or (
                effect is Effect.SPLICE and self.model.state is FastPathState.SERVER_OPENING
            ) or (effect is Effect.RESET_UNACCEPTABLE_ACK and not t.model.to_server)
            assert ignored == any(isinstance(a, Drop) for a in t.actions), where
        return t

    def same_numbers(self, t: Twin, *, windows: bool) -> None:
        """Every segment the model emits has a twin from the core, in order, on each leg.

        ``windows``: compare window fields too. Only for segments relayed or released with
        translation (both rescale the peer's own field the same way, shift 0 here); the
        windows of segments the gateway makes itself (SYN/ACK, SYN, re-ACK) are constants of
        each implementation, not a decision.
        """
        where = " / ".join(self.log)
        for leg, mine in (("client", t.model.to_client), ("server", t.model.to_server)):
            theirs = [p.to_segment() for p in t.gw(leg)]
            assert numbers(theirs, windows) == numbers(mine, windows), f"{leg} leg: {where}"
        for p in t.gw("server"):
            assert self.server is None or (p.dst, p.dport) == self.server, where


# --- the fast path ------------------------------------------------------------------------


@settings(max_examples=300)
@given(cm=commons(), data=st.data())
def test_fast_path_session_matches_the_model_state_by_state_and_number_by_number(
        cm: Common, data: st.DataObject) -> None:
    duo = Duo(cm)
    c1, g1, s1, gs1 = (seq_add(x, 1) for x in (cm.c_isn, cm.g, cm.s_isn, cm.gs))
    req = cm.request
    cw, sw = cm.client_window, cm.server_window

    t = duo.client(Segment(seq=cm.c_isn, flags=SYN, window=cw, mss=cm.client_mss))
    duo.same_numbers(t, windows=False)
    assert [p.seq for p in t.gw("client")] == [cm.g]
    assert duo.model.state is FastPathState.SYN_RCVD
    if data.draw(st.booleans(), "the client sends its SYN again"):
        t = duo.client(Segment(seq=cm.c_isn, flags=SYN, window=cw, mss=cm.client_mss))
        duo.same_numbers(t, windows=False)
        assert [p.seq for p in t.gw("client")] == [cm.g], "the same ISN, answered again"
    if cm.handshake_ack:
        duo.same_numbers(duo.client(Segment(seq=c1, ack=g1, window=cw)), windows=False)
        assert duo.model.state is FastPathState.ESTABLISHED

    # the one request segment: held, not acknowledged, the server side opens
    request = Segment(seq=c1, ack=g1, flags=ACK | PSH, window=cw, payload=req)
    t = duo.client(request)
    duo.same_numbers(t, windows=False)
    assert duo.model.state is FastPathState.SERVER_OPENING
    assert t.model.to_client == [] and t.gw("client") == []
    (syn,) = t.gw("server")
    assert (syn.seq, syn.flags) == (cm.gs, SYN)
    assert syn.mss == t.model.to_server[0].mss, "both clamp the MSS to the client's"
    duo.server, duo.gw_side = (syn.dst, syn.dport), (syn.src, syn.sport)
    syn_mss = syn.mss
    assert syn_mss is not None
    assert duo.session is not None and duo.session.proxy.held is not None

    if data.draw(st.booleans(), "client retransmits the request while the server opens"):
        t = duo.client(request)
        duo.same_numbers(t, windows=False)
        assert t.model.to_server == [] and duo.model.state is FastPathState.SERVER_OPENING

    stray = data.draw(st.integers(0, MOD - 2), "a SYN/ACK for some other SYN arrives first")
    if stray:
        t = duo.from_server(Segment(seq=cm.s_isn, ack=seq_add(gs1, stray), flags=SYN | ACK,
                                    window=sw, mss=cm.server_mss))
        duo.same_numbers(t, windows=False)
        assert t.gw("client") == t.gw("server") == []
        assert duo.model.state is FastPathState.SERVER_OPENING

    # splice: the held request goes out translated (cut to the server's MSS)
    t = duo.from_server(Segment(seq=cm.s_isn, ack=gs1, flags=SYN | ACK, window=sw,
                                mss=cm.server_mss))
    duo.same_numbers(t, windows=True)
    assert duo.model.state is FastPathState.SPLICED
    assert duo.session.proxy.held is None
    sent = b"".join(bytes(p.payload) for p in t.gw("server"))
    assert sent == req and t.gw("server")[0].seq == gs1

    if data.draw(st.booleans(), "server retransmits its SYN/ACK"):
        t = duo.from_server(Segment(seq=cm.s_isn, ack=gs1, flags=SYN | ACK, window=sw,
                                    mss=cm.server_mss))
        duo.same_numbers(t, windows=False)
        assert t.model.to_client == []

    # the server acknowledges the request: relayed to the client, translated
    sent_c = len(req)
    t = duo.from_server(Segment(seq=s1, ack=seq_add(gs1, sent_c), window=sw))
    duo.same_numbers(t, windows=True)
    assert [(p.seq, p.ack) for p in t.gw("client")] == [(g1, seq_add(c1, sent_c))]

    # the response, in drawn segment sizes no larger than the MSS the gateway announced
    resp = pattern(data.draw(st.integers(0, 5000), "response length"))
    fin_on_data = data.draw(st.booleans(), "FIN rides on the last response segment")
    off = 0
    server_fin = False
    while off < len(resp):
        n = min(data.draw(st.integers(1, syn_mss), "segment size"), len(resp) - off)
        last = off + n == len(resp)
        flags = ACK | PSH | (FIN if last and fin_on_data else 0)
        t = duo.from_server(Segment(seq=seq_add(s1, off), ack=seq_add(gs1, sent_c),
                                    flags=flags, window=sw, payload=resp[off:off + n]))
        duo.same_numbers(t, windows=True)
        assert [p.seq for p in t.gw("client")] == [seq_add(g1, off)]
        off += n
        server_fin = server_fin or bool(flags & FIN)
        if data.draw(st.booleans(), "client ACKs now"):
            t = duo.client(Segment(seq=seq_add(c1, sent_c), ack=seq_add(g1, off + server_fin),
                                   window=cw))
            duo.same_numbers(t, windows=True)
            assert [p.ack for p in t.gw("server")] == [seq_add(s1, off + server_fin)]

    # pipelined client data after the response (cut to the server's MSS when it must be)
    more = pattern(data.draw(st.integers(0, 1400), "pipelined bytes"), salt=3)
    if more:
        t = duo.client(Segment(seq=seq_add(c1, sent_c), ack=seq_add(g1, off + server_fin),
                               flags=ACK | PSH, window=cw, payload=more))
        duo.same_numbers(t, windows=True)
        out = t.gw("server")
        assert b"".join(bytes(p.payload) for p in out) == more
        assert out[0].seq == seq_add(gs1, sent_c)
        sent_c += len(more)

    # closing: the FINs in a drawn order, each relayed translated
    client_first = data.draw(st.booleans(), "the client closes first")
    client_fin = False
    for who in (("client", "server") if client_first else ("server", "client")):
        if who == "server" and not server_fin:
            t = duo.from_server(Segment(seq=seq_add(s1, off), ack=seq_add(gs1, sent_c),
                                        flags=FIN | ACK, window=sw))
            duo.same_numbers(t, windows=True)
            server_fin = True
        elif who == "client":
            t = duo.client(Segment(seq=seq_add(c1, sent_c), ack=seq_add(g1, off + server_fin),
                                   flags=FIN | ACK, window=cw))
            duo.same_numbers(t, windows=True)
            client_fin = True
        assert duo.model.state is {(True, False): FastPathState.CLIENT_FIN,
                                   (False, True): FastPathState.SERVER_FIN,
                                   (True, True): FastPathState.CLOSING}[(client_fin,
                                                                          server_fin)]
    # the last ACKs of both FINs, relayed
    t = duo.client(Segment(seq=seq_add(c1, sent_c + 1), ack=seq_add(g1, off + 1), window=cw))
    duo.same_numbers(t, windows=True)
    assert [p.ack for p in t.gw("server")] == [seq_add(s1, off + 1)]
    t = duo.from_server(Segment(seq=seq_add(s1, off + 1), ack=seq_add(gs1, sent_c + 1),
                                window=sw))
    duo.same_numbers(t, windows=True)
    assert [p.ack for p in t.gw("client")] == [seq_add(c1, sent_c + 1)]
    assert duo.model.state is FastPathState.CLOSING
    assert duo.gw.stats.sessions_handed_off == 0


# --- the handoff -------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """How the first request data reaches the gateway (always something it cannot splice)."""

    split: int | None
    """Offset of the cut into two segments; None: one segment."""
    swapped: bool
    """The second piece is delivered first (out-of-order first data)."""
    fragment: int | None
    """The first delivered packet arrives as IP fragments of this size; None: whole."""

    def expected_reason(self) -> HandoffReason:
        if self.fragment is not None:
            return HandoffReason.IP_FRAGMENT
        if self.swapped:
            return HandoffReason.OUT_OF_ORDER_FIRST_DATA
        return HandoffReason.PARTIAL_REQUEST


@st.composite
def deliveries(draw: st.DrawFn, req_len: int) -> Delivery:
    split = draw(st.one_of(st.none(), st.integers(1, req_len - 1)))
    swapped = split is not None and draw(st.booleans())
    first_len = req_len if split is None else (req_len - split if swapped else split)
    # A fragment size >= 48 keeps the TCP header (20 bytes, no options) in the first
    # fragment; below the packet's 20 + payload bytes, so that it really is fragmented.
    can_fragment = 20 + first_len - 1 >= 48
    fragment = None
    if split is None:  # a whole request is only refused when it comes as fragments
        assert can_fragment, "every request here is longer than 28 bytes"
        fragment = draw(st.integers(48, 20 + first_len - 1))
    elif can_fragment and draw(st.booleans()):
        fragment = draw(st.integers(48, 20 + first_len - 1))
    return Delivery(split, swapped, fragment)


@settings(max_examples=300)
@given(cm=commons(), data=st.data())
def test_handoff_matches_the_model_and_continues_the_clients_sequence_space(
        cm: Common, data: st.DataObject) -> None:
    req = cm.request
    dv = data.draw(deliveries(len(req)), "delivery")
    duo = Duo(cm)
    c1, g1, gs1 = (seq_add(x, 1) for x in (cm.c_isn, cm.g, cm.gs))
    cw = cm.client_window

    duo.same_numbers(duo.client(Segment(seq=cm.c_isn, flags=SYN, window=cw,
                                        mss=cm.client_mss)), windows=False)
    if cm.handshake_ack:
        duo.same_numbers(duo.client(Segment(seq=c1, ack=g1, window=cw)), windows=False)

    def piece(a: int, b: int) -> Segment:
        return Segment(seq=seq_add(c1, a), ack=g1, flags=ACK | PSH, window=cw,
                       payload=req[a:b])

    if dv.split is None:
        order = [(0, len(req))]
    else:
        order = [(0, dv.split), (dv.split, len(req))]
        if dv.swapped:
            order.reverse()
    first_lo, first_hi = order[0]

    t = duo.client(piece(first_lo, first_hi), fragment=dv.fragment)
    assert duo.model.state is FastPathState.HANDED_OFF
    assert duo.model.handoff_reason is dv.expected_reason()
    ns = duo.gw.normal_by_client[duo.key]
    assert (ns.handoff.client.rcv_isn, ns.handoff.client.snd_isn) == (cm.c_isn, cm.g)
    mrec = duo.model.normal.result.client if duo.model.normal is not None else None
    assert mrec is not None and (mrec.rcv_isn, mrec.snd_isn) == (cm.c_isn, cm.g)
    # the normal path's first packet to the client: a plain ACK continuing the gateway's ISN
    first_gw = t.gw("client")[0]
    first_model = t.model.to_client[0]
    assert first_gw.flags == ACK and first_gw.seq == g1
    assert first_model.flags == ACK and first_model.seq == g1
    in_order = first_lo == 0
    want_ack = seq_add(c1, first_hi) if in_order else c1
    assert first_gw.ack == first_model.ack == want_ack
    assert duo.gw.stats.sessions_spliced == 0 and duo.gw.server_sessions == {}

    # the rest of the request; the model's normal path takes data in order only (its
    # TcpPeer drops what is ahead of RCV.NXT, which RFC 9293 permits), so after an
    # out-of-order start the client retransmits the piece the model dropped
    rest = order[1:]
    if dv.swapped:
        rest.append(order[0])
    twins = [t]
    for lo, hi in rest:
        twins.append(duo.client(piece(lo, hi)))
    for tw in twins:
        for leg_out in (tw.gw("client"), list(tw.model.to_client)):
            for p in leg_out:
                assert not p.flags & (SYN | RST), "no second SYN/ACK, no RST"
                assert p.seq == g1, "nothing sent to the client yet: SND.NXT = ISN_g + 1"
    whole = seq_add(c1, len(req))
    assert max((p.ack for tw in twins for p in tw.gw("client")),
               key=lambda a: seq_diff(a, c1)) == whole
    assert max((s.ack for tw in twins for s in tw.model.to_client),
               key=lambda a: seq_diff(a, c1)) == whole
    gw_syns = [p for tw in twins for p in tw.gw("server") if p.flags & SYN]
    model_syns = [s for tw in twins for s in tw.model.to_server if s.flags & SYN]
    assert [p.seq for p in gw_syns] == [s.seq for s in model_syns] == [cm.gs]
    duo.server, duo.gw_side = (gw_syns[0].dst, gw_syns[0].dport), (gw_syns[0].src,
                                                                   gw_syns[0].sport)

    # The normal path's server connection: the whole request follows its SYN, from GS + 1.
    # A full window and MSS here, so both proxies send all of it at once (the core's
    # congestion window would otherwise hold part of a long request back on a tiny MSS).
    t = duo.from_server(Segment(seq=cm.s_isn, ack=gs1, flags=SYN | ACK, window=0xFFFF,
                                mss=1460))
    for segs in ([p.to_segment() for p in t.gw("server")], t.model.to_server):
        assert stream_from(segs, gs1) == req
    assert duo.model.state is FastPathState.HANDED_OFF
    assert duo.gw_state() is FastPathState.HANDED_OFF


def stream_from(segs: list[Segment], origin: int) -> bytes:
    """The bytes ``segs`` carry, laid out from sequence number ``origin``."""
    out = bytearray()
    for s in segs:
        data = s.payload or b""
        if not data:
            continue
        off = seq_diff(s.seq, origin)
        assert 0 <= off <= len(out), f"a hole before offset {off}"
        out[off:off + len(data)] = data
    return bytes(out)


# --- regressions ---------------------------------------------------------------------------


def test_lost_server_syn_is_sent_again_within_the_open_timeout_like_the_model() -> None:
    # This used to wait for the 300 s idle deadline (FastPath._arm kept it on entering
    # SERVER_OPENING) while the model resends after one RTO.
    cm = Common(c_isn=MOD - 1, s_isn=MOD - 2, g=MOD - 3, gs=MOD - 4, client_mss=1460,
                server_mss=1460, client_window=0xFFFF, server_window=0xFFFF,
                request=make_request("index.html", 0), handshake_ack=True)
    duo = Duo(cm)
    c1, g1 = seq_add(cm.c_isn, 1), seq_add(cm.g, 1)
    duo.client(Segment(seq=cm.c_isn, flags=SYN, window=0xFFFF, mss=1460))
    duo.client(Segment(seq=c1, ack=g1, window=0xFFFF))
    t = duo.client(Segment(seq=c1, ack=g1, flags=ACK | PSH, window=0xFFFF,
                           payload=cm.request))
    assert [p.seq for p in t.gw("server")] == [cm.gs]  # this SYN is lost on the way
    later = duo.now + max(RTO, duo.gw.config.open_timeout) + STEP
    again_model = [s.seq for s in duo.model.on_timer(later).to_server if s.flags & SYN]
    assert again_model == [cm.gs]
    deadline = duo.gw.next_deadline()
    again_gw = [codec.parse(a.packet) for a in duo.gw.handle_timer(now=later)
                if isinstance(a, Emit) and a.leg == "server"]
    assert [p.seq for p in again_gw if p.flags & SYN] == [cm.gs], \
        f"the core's next deadline is t={deadline}, the SYN went out at t={duo.now}"

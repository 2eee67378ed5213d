"""The normal path's TCP endpoint (reference/gateway/tcp.py), in simulated time only.

Most tests build a connected pair the way the gateway does: ``a`` is an active open
(``connect``, the server-leg code), its SYN is answered by a hand-written "fast path" SYN/ACK,
and ``a``'s handshake ACK is the trigger ``spec.handoff.handoff`` turns into the TCB and buffers
that ``b`` adopts (``from_handoff``). ISNs and TSvals sit just below 2^32 so every exchange
crosses the wrap.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.gateway import _endpoint
from reference.gateway._reassembly import Reassembly
from reference.gateway._rto import RTO_MAX, RtoEstimator
from reference.gateway.tcp import TcpConnection
from spec.handoff import handoff
from spec.records import (
    TCB,
    ClientSessionRecord,
    FourTuple,
    Negotiated,
    PacketBuffers,
    ProxySessionRecord,
    SynOptions,
)
from spec.segment import ACK, FIN, PSH, RST, SYN, Segment
from spec.seq import seq_add, seq_sub
from spec.states import FastPathState, TcpState

MOD = 1 << 32
TUPLE = FourTuple("192.0.2.1", 40000, "198.51.100.1", 80)
near_wrap = st.integers(1, 4000).map(lambda k: MOD - k)
sizes = st.one_of(st.integers(0, 3000), st.integers(30000, 120000))
"""Stream lengths: small ones, and ones that cross many windows."""
LINGER = 300.0
"""MSL for lossy runs: TIME-WAIT (2*MSL) must outlast the LAST-ACK side's backed-off FIN
retransmissions (up to 60 s apart), or a closed endpoint resets it. Simulated time is free."""


# --- building connections -------------------------------------------------------------------


@dataclass
class PairConfig:
    iss_a: int = MOD - 100
    iss_b: int = MOD - 7
    ts: bool = False
    ts_a: int = MOD - 50
    ts_b: int = MOD - 30
    mss_a: int = 1460
    mss_b: int = 1460
    wscale_a: int | None = None
    wscale_b: int | None = None
    buf_a: int = 262144
    buf_b: int = 262144
    rto_min: float = 1.0
    msl: float = 30.0


def pair(cfg: PairConfig | None = None, *, now: float = 0.0
         ) -> tuple[TcpConnection, TcpConnection]:
    """(a, b): ``a`` connected, ``b`` born ESTABLISHED through spec.handoff.handoff."""
    c = cfg or PairConfig()
    a, [syn] = TcpConnection.connect(iss=c.iss_a, mss=c.mss_a, wscale=c.wscale_a,
                                     sack_permitted=True, tsval=c.ts_a if c.ts else None,
                                     now=now, buffer_bytes=c.buf_a, rto_min=c.rto_min,
                                     msl=c.msl)
    both_ws = c.wscale_a is not None and c.wscale_b is not None
    synack = Segment(seq=c.iss_b, ack=seq_add(syn.seq, 1), flags=SYN | ACK,
                     window=min(c.buf_b, 0xFFFF), mss=c.mss_b, wscale=c.wscale_b,
                     sack_permitted=True, tsval=c.ts_b if c.ts else None,
                     tsecr=syn.tsval if c.ts else None)
    [hs_ack] = a.receive(synack, now=now)
    assert a.state is TcpState.ESTABLISHED and hs_ack.flags == ACK
    client = ClientSessionRecord(
        tuple=TUPLE, rcv_isn=syn.seq, snd_isn=c.iss_b,
        syn_options=SynOptions(mss=syn.mss, wscale=syn.wscale, sack_permitted=True,
                               tsval=syn.tsval),
        negotiated=Negotiated(peer_mss=c.mss_a, local_mss=c.mss_b,
                              snd_wscale=c.wscale_a if both_ws else 0,
                              rcv_wscale=c.wscale_b if both_ws else 0,
                              sack=True, timestamps=c.ts),
        ts_sent=c.ts_b if c.ts else None, ts_recent=syn.tsval,
        rcv_wnd_field=hs_ack.window)
    first = ProxySessionRecord(client=client, service="t", state=FastPathState.SYN_RCVD)
    res = handoff(first, hs_ack, rcv_wnd=synack.window, buffer_capacity=c.buf_b)
    assert res.accepted and res.client.tcb is not None and res.client.buffers is not None
    b = TcpConnection.from_handoff(res.client.tcb, res.client.buffers, now=now,
                                   rto_min=c.rto_min, msl=c.msl, local_mss=c.mss_b)
    return a, b


def shuttle(x: TcpConnection, y: TcpConnection, segs: list[Segment], *, now: float,
            limit: int = 10000) -> None:
    """Deliver ``segs`` from x to y and every reply back and forth, losslessly, at ``now``."""
    queue = [(y, x, s) for s in segs]
    while queue:
        limit -= 1
        assert limit > 0, "ping-pong did not settle"
        dst, src, seg = queue.pop(0)
        queue += [(src, dst, r) for r in dst.receive(seg, now=now)]


# --- a lossy in-memory link -------------------------------------------------------------------


@dataclass
class Link:
    """Drops, duplicates and reorders (by random delay) with a seeded random.Random."""

    rng: random.Random
    loss: float = 0.0
    dup: float = 0.0
    jitter: float = 0.0
    delay: float = 0.01
    queue: list[tuple[float, int, int, Segment]] = field(default_factory=list)
    n: int = 0

    def put(self, dst: int, segs: list[Segment], now: float) -> None:
        for s in segs:
            if self.rng.random() < self.loss:
                continue
            for _ in range(2 if self.rng.random() < self.dup else 1):
                self.n += 1
                at = now + self.delay + self.rng.random() * self.jitter
                heapq.heappush(self.queue, (at, self.n, dst, s))


@dataclass
class Outcome:
    sent: tuple[bytes, bytes]
    got: list[bytearray]
    conns: tuple[TcpConnection, TcpConnection]
    finished: bool
    now: float


def transfer(a: TcpConnection, b: TcpConnection, data_a: bytes, data_b: bytes, link: Link,
             *, read_chunk: int | None = None, read_every: float = 0.0, chunk: int = 7000,
             max_steps: int = 60000) -> Outcome:
    """Both sides write their data and close; readers take ``read_chunk`` bytes every
    ``read_every`` seconds (None: everything, at once). Event-driven simulated time."""
    conns, datas = (a, b), (data_a, data_b)
    sent, got = [0, 0], [bytearray(), bytearray()]
    closing, next_read = [False, False], [0.0, 0.0]
    now = 0.0
    for _ in range(max_steps):
        for i, c in enumerate(conns):
            out: list[Segment] = []
            while sent[i] < len(datas[i]) and c.send_capacity():
                out += c.send(datas[i][sent[i]:sent[i] + chunk], now=now)
                sent[i] += c.last_accepted
            if sent[i] == len(datas[i]) and not closing[i]:
                closing[i] = True
                out += c.close(now=now)
            if now >= next_read[i] and c.readable:
                got[i] += c.read(read_chunk)
                next_read[i] = now + read_every
                out += c.flush(now=now)
            link.put(1 - i, out, now)
        if all(c.closed for c in conns):
            break
        times = [t for t in (a.next_deadline(), b.next_deadline()) if t is not None]
        times += [link.queue[0][0]] if link.queue else []
        times += [next_read[i] for i in (0, 1) if conns[i].readable]
        if not times:
            break
        now = max(now, min(times))
        while link.queue and link.queue[0][0] <= now:
            _, _, dst, seg = heapq.heappop(link.queue)
            link.put(1 - dst, conns[dst].receive(seg, now=now), now)
        for i, c in enumerate(conns):
            d = c.next_deadline()
            if d is not None and d <= now:
                link.put(1 - i, c.handle_timer(now=now), now)
    for i, c in enumerate(conns):
        got[i] += c.read()
    return Outcome((data_a, data_b), got, (a, b), all(c.closed for c in conns), now)


def check_exact(o: Outcome) -> None:
    """The byte-exact property: each side read exactly what the other wrote, then EOF,
    and both closed cleanly (through TIME-WAIT or LAST-ACK, no error)."""
    a, b = o.conns
    assert bytes(o.got[1]) == o.sent[0], "a -> b stream differs"
    assert bytes(o.got[0]) == o.sent[1], "b -> a stream differs"
    assert a.eof_received and b.eof_received
    assert o.finished, f"not closed: {a.state.name} / {b.state.name}"
    assert a.error is None and b.error is None, (a.error, b.error)


# --- end to end over a lossy link -------------------------------------------------------------


@given(seed=st.integers(0, 2**32), iss_a=near_wrap, iss_b=near_wrap, n_a=sizes, n_b=sizes,
       ts=st.booleans(), loss=st.sampled_from([0.0, 0.05, 0.15]),
       mss=st.sampled_from([100, 536, 1460]))
@settings(max_examples=80)
def test_lossy_link_delivers_byte_exact_both_ways(seed: int, iss_a: int, iss_b: int, n_a: int,
                                                  n_b: int, ts: bool, loss: float,
                                                  mss: int) -> None:
    rng = random.Random(seed)
    a, b = pair(PairConfig(iss_a=iss_a, iss_b=iss_b, ts=ts, mss_a=mss, mss_b=mss,
                           rto_min=0.2, msl=LINGER))
    link = Link(rng, loss=loss, dup=0.05, jitter=0.03)
    o = transfer(a, b, rng.randbytes(n_a), rng.randbytes(n_b), link)
    check_exact(o)
    if ts:
        assert a.tcb.ts_enabled and b.tcb.ts_enabled


@given(seed=st.integers(0, 2**32), ws_a=st.integers(0, 14), ws_b=st.integers(0, 14),
       ts=st.booleans())
@settings(max_examples=15)
def test_window_scaling_lossy(seed: int, ws_a: int, ws_b: int, ts: bool) -> None:
    rng = random.Random(seed)
    a, b = pair(PairConfig(ts=ts, wscale_a=ws_a, wscale_b=ws_b, buf_a=1 << 20,
                           buf_b=1 << 20, rto_min=0.2, msl=LINGER))
    assert (a.tcb.snd_wscale, a.tcb.rcv_wscale) == (ws_b, ws_a)
    assert (b.tcb.snd_wscale, b.tcb.rcv_wscale) == (ws_a, ws_b)
    o = transfer(a, b, rng.randbytes(150000), rng.randbytes(20000),
                 Link(rng, loss=0.03, dup=0.02, jitter=0.02), chunk=65536)
    check_exact(o)


@given(seed=st.integers(0, 2**32), buf=st.integers(600, 4000), ts=st.booleans(),
       ws=st.sampled_from([None, 0, 3]))
@settings(max_examples=15)
def test_tiny_receive_buffer_zero_window_and_persist(seed: int, buf: int, ts: bool,
                                                     ws: int | None) -> None:
    rng = random.Random(seed)
    a, b = pair(PairConfig(ts=ts, mss_a=536, mss_b=536, buf_a=buf, buf_b=buf, wscale_a=ws,
                           wscale_b=ws, rto_min=0.2, msl=LINGER))
    o = transfer(a, b, rng.randbytes(12000), rng.randbytes(3000),
                 Link(rng, loss=0.05, dup=0.02, jitter=0.02), read_chunk=300,
                 read_every=0.25)
    check_exact(o)
    assert a.stats.window_probes + b.stats.window_probes > 0


def test_zero_window_probe_then_window_update() -> None:
    a, b = pair(PairConfig(buf_b=1000, mss_a=536, mss_b=536, rto_min=0.2))
    data = bytes(range(256)) * 12
    segs = a.send(data, now=0.0)
    shuttle(a, b, segs, now=0.0)
    # Sender SWS avoidance: 536 bytes went, the 464-byte tail of the window waits for the
    # override timer (RFC 9293 §3.8.6.2.1), which the persist timer doubles as.
    assert b.readable == 536 and a.tcb.snd_wnd == 464
    rto = a.rtt.rto
    assert rto == 0.2  # the handshake's RTT sample was 0: the configured minimum
    deadline = a.next_deadline()
    assert deadline == rto
    [tail] = a.handle_timer(now=deadline)
    assert tail.length == 464
    shuttle(a, b, [tail], now=deadline)
    assert b.readable == 1000 and a.tcb.snd_wnd == 0 and b.tcb.rcv_wnd == 0
    deadline = a.next_deadline()
    assert deadline == pytest.approx(2 * rto)  # the persist timer starts at one RTO
    [probe] = a.handle_timer(now=deadline)
    assert probe.length == 1 and probe.seq == a.tcb.snd_una
    [reply] = b.receive(probe, now=deadline)  # window still closed: refused and ACKed
    assert reply.window == 0 and reply.ack == b.tcb.rcv_nxt
    a.receive(reply, now=deadline)
    # Receiver SWS avoidance: reading a little does not reopen the window.
    first = b.read(100)
    assert b.flush(now=deadline) == []
    rest = b.read()
    [update] = b.flush(now=deadline)
    assert update.window == 1000
    shuttle(b, a, [update], now=deadline)
    got = first + rest
    t = deadline
    while len(got) < len(data):
        t += 0.1
        shuttle(a, b, a.handle_timer(now=t), now=t)
        got += b.read()
        shuttle(b, a, b.flush(now=t), now=t)
    assert got == data and a.stats.window_probes >= 1


def test_both_windows_closed_no_ack_war_then_recovery() -> None:
    """Regression: with both windows zero, each side's probe byte put its SEG.SEQ past the
    other's RCV.NXT, so every pure ACK was unacceptable and answered: an endless ping-pong
    at one instant, and neither side took the other's window updates."""
    a, b = pair(PairConfig(buf_a=3000, buf_b=1000, mss_a=536, mss_b=536, rto_min=0.2))
    data = {a: bytes(range(256)) * 40, b: bytes(reversed(range(256))) * 40}
    sent = {a: 0, b: 0}
    got: dict[TcpConnection, bytearray] = {a: bytearray(), b: bytearray()}

    def step(t: float, *, read: bool) -> None:
        for x, y in ((a, b), (b, a)):
            out = []
            while sent[x] < len(data[x]) and x.send_capacity():
                out += x.send(data[x][sent[x]:], now=t)
                sent[x] += x.last_accepted
            if read:
                got[x] += x.read()
                out += x.flush(now=t)
            shuttle(x, y, out + x.handle_timer(now=t), now=t)  # asserts it settles

    t = 0.0
    for _ in range(12):  # nobody reads: both windows close, both sides probe
        t += 0.5
        step(t, read=False)
    assert a.tcb.snd_wnd == 0 and b.tcb.snd_wnd == 0
    assert a.stats.window_probes > 0 and b.stats.window_probes > 0
    while len(got[a]) < len(data[b]) or len(got[b]) < len(data[a]):
        t += 0.25
        assert t < 120, (len(got[a]), len(got[b]))
        step(t, read=True)
    assert (bytes(got[a]), bytes(got[b])) == (data[b], data[a])


@pytest.mark.parametrize("ws", [10, 14])
def test_window_scale_coarser_than_the_buffer_still_flows(ws: int) -> None:
    """Regression: 2^rcv_wscale above the buffer size once kept the window shut for good."""
    rng = random.Random(ws)
    a, b = pair(PairConfig(wscale_a=ws, wscale_b=ws, buf_a=3000, buf_b=3000, mss_a=536,
                           mss_b=536, rto_min=0.2, msl=LINGER))
    check_exact(transfer(a, b, rng.randbytes(20000), rng.randbytes(5000),
                         Link(rng, loss=0.05, jitter=0.02), read_chunk=400, read_every=0.1))


# --- the handoff ------------------------------------------------------------------------------


def mirrored_peer(isn_c: int, isn_g: int, *, ts: bool = False) -> TcpConnection:
    """A client endpoint already ESTABLISHED with the gateway (the fast path's handshake)."""
    tcb = TCB(state=TcpState.ESTABLISHED, iss=isn_c, irs=isn_g, snd_una=seq_add(isn_c, 1),
              snd_nxt=seq_add(isn_c, 1), snd_wnd=65535, snd_wl1=isn_g, snd_wl2=isn_c,
              rcv_nxt=seq_add(isn_g, 1), rcv_wnd=65535, mss=1460, snd_wscale=0,
              rcv_wscale=0, sack_permitted=False, ts_enabled=ts,
              ts_recent=MOD - 5 if ts else None, ts_sent=MOD - 9 if ts else None)
    return TcpConnection.from_handoff(tcb, PacketBuffers(capacity=65535), now=0.0)


def gateway_record(isn_c: int, isn_g: int, *, ts: bool = False) -> ProxySessionRecord:
    client = ClientSessionRecord(
        tuple=TUPLE, rcv_isn=isn_c, snd_isn=isn_g, syn_options=SynOptions(mss=1460),
        negotiated=Negotiated(peer_mss=1460, local_mss=1460, timestamps=ts),
        ts_sent=MOD - 5 if ts else None, ts_recent=MOD - 9 if ts else None,
        rcv_wnd_field=65535)
    return ProxySessionRecord(client=client, service="web", state=FastPathState.ESTABLISHED)


@given(isn_c=near_wrap, isn_g=near_wrap, ts=st.booleans(),
       request=st.binary(min_size=1, max_size=3000), response=st.binary(max_size=20000))
@settings(max_examples=40)
def test_from_handoff_continues_the_sequence_space(isn_c: int, isn_g: int, ts: bool,
                                                   request: bytes, response: bytes) -> None:
    client = mirrored_peer(isn_c, isn_g, ts=ts)
    trigger, *more = client.send(request, now=0.0)
    res = handoff(gateway_record(isn_c, isn_g, ts=ts), trigger)
    assert res.client.tcb is not None and res.client.buffers is not None
    gw = TcpConnection.from_handoff(res.client.tcb, res.client.buffers, now=0.0)
    shuttle(client, gw, [res.reply], now=0.0)
    shuttle(client, gw, more, now=0.0)
    assert gw.read() == request  # the trigger's bytes were already in the buffers
    first, *rest = gw.send(response, now=0.0) + gw.close(now=0.0)
    assert first.seq == seq_add(isn_g, 1)
    assert first.ack == seq_add(isn_c, 1 + len(request))
    if ts:
        assert first.tsval == MOD - 5 and first.tsecr is not None
    shuttle(gw, client, [first, *rest], now=0.0)
    assert client.read() == response and client.eof_received
    shuttle(client, gw, client.close(now=0.0), now=0.0)
    assert gw.state is TcpState.TIME_WAIT and client.closed and client.error is None


def test_from_handoff_keeps_out_of_order_bytes() -> None:
    isn_c, isn_g = MOD - 3, 17
    request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
    early = Segment(seq=seq_add(isn_c, 11), ack=seq_add(isn_g, 1), flags=ACK | PSH,
                    payload=request[10:])
    res = handoff(gateway_record(isn_c, isn_g), early)
    assert res.client.buffers is not None and res.client.buffers.out_of_order
    assert res.client.tcb is not None
    gw = TcpConnection.from_handoff(res.client.tcb, res.client.buffers, now=0.0)
    assert gw.readable == 0
    [ack] = gw.receive(Segment(seq=seq_add(isn_c, 1), ack=seq_add(isn_g, 1), flags=ACK,
                               payload=request[:10]), now=0.0)
    assert gw.read() == request and ack.ack == seq_add(isn_c, 1 + len(request))


def test_from_handoff_with_fin_starts_in_close_wait() -> None:
    isn_c, isn_g = 5, MOD - 1
    trigger = Segment(seq=6, ack=0, flags=ACK | FIN, payload=b"x")
    res = handoff(gateway_record(isn_c, isn_g), trigger)
    assert res.client.tcb is not None and res.client.buffers is not None
    gw = TcpConnection.from_handoff(res.client.tcb, res.client.buffers, now=0.0,
                                    fin_received=True)
    assert gw.state is TcpState.CLOSE_WAIT and gw.eof_received and gw.read() == b"x"
    [fin] = gw.close(now=0.0)
    assert fin.flags & FIN and fin.seq == 0 and gw.state is TcpState.LAST_ACK


def test_from_handoff_in_syn_received_waits_for_the_handshake_ack() -> None:
    isn_c, isn_g = MOD - 2, MOD - 9
    first = gateway_record(isn_c, isn_g)
    first.state = FastPathState.SYN_RCVD
    trigger = Segment(seq=seq_add(isn_c, 1), flags=PSH, payload=b"early")  # no ACK bit
    res = handoff(first, trigger)
    assert res.client.tcb is not None and res.client.buffers is not None
    gw = TcpConnection.from_handoff(res.client.tcb, res.client.buffers, now=0.0)
    assert gw.state is TcpState.SYN_RECEIVED and gw.read() == b"early"
    assert gw.send(b"held", now=0.0) == [] and gw.close(now=0.0) == []
    out = gw.receive(Segment(seq=seq_add(isn_c, 6), ack=seq_add(isn_g, 1)), now=0.1)
    assert gw.state is TcpState.FIN_WAIT_1
    assert [(s.seq, s.payload, bool(s.flags & FIN)) for s in out] == [
        (seq_add(isn_g, 1), b"held", True)]


# --- retransmission timer ---------------------------------------------------------------------


def test_rto_deadlines_back_off_exactly_then_give_up() -> None:
    _, b = pair()
    [seg] = b.send(b"x" * 100, now=0.0)  # dropped, and every retransmission too
    expected, t, rto = [], 0.0, 1.0
    for _ in range(12):
        t += rto
        expected.append(t)
        rto = min(rto * 2, RTO_MAX)
    seen = []
    for _ in range(12):
        d = b.next_deadline()
        assert d is not None
        seen.append(d)
        [again] = b.handle_timer(now=d)
        assert (again.seq, again.payload) == (seg.seq, seg.payload)
    assert seen == expected  # 1, 3, 7, 15, 31, 63, 123, 183, ...
    d = b.next_deadline()
    assert d == expected[-1] + RTO_MAX
    assert b.handle_timer(now=d) == []
    assert b.closed and b.error == "retransmission limit" and b.next_deadline() is None
    assert b.stats.retransmissions == 12


def test_rto_timer_fires_only_at_its_deadline() -> None:
    _, b = pair(PairConfig(rto_min=0.2))
    b.send(b"hello", now=5.0)
    assert b.next_deadline() == 6.0  # initial RTO 1 s (RFC 6298 §2.1), no sample yet
    assert b.handle_timer(now=5.999) == []
    assert len(b.handle_timer(now=6.0)) == 1
    assert b.next_deadline() == 8.0


def test_rtt_estimation_follows_rfc6298_section2() -> None:
    a, b = pair(PairConfig(rto_min=0.2))
    expected = []
    srtt = rttvar = None
    for t0, rtt in ((0.0, 0.5), (1.0, 0.3), (2.0, 0.9), (4.0, 0.1)):
        segs = b.send(b"d" * 10, now=t0)
        acks = [r for s in segs for r in a.receive(s, now=t0)]
        for r in acks:
            b.receive(r, now=t0 + rtt)
        if srtt is None:
            srtt, rttvar = rtt, rtt / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - rtt)
            srtt = 0.875 * srtt + 0.125 * rtt
        expected.append((srtt, rttvar, max(0.2, srtt + max(0.001, 4 * rttvar))))
        assert (b.rtt.srtt, b.rtt.rttvar, b.rtt.rto) == pytest.approx(expected[-1])
    assert expected[0] == (0.5, 0.25, 1.5)
    assert expected[1] == pytest.approx((0.475, 0.2375, 1.425))
    # Karn: the ACK of a retransmitted segment gives no sample; the backed-off RTO stays.
    before = (b.rtt.srtt, b.rtt.rttvar, b.rtt.rto)
    [lost] = b.send(b"k" * 10, now=10.0)
    d = b.next_deadline()
    assert d == pytest.approx(10.0 + before[2])
    [again] = b.handle_timer(now=d)
    assert again.payload == lost.payload
    [ack] = a.receive(again, now=d)
    b.receive(ack, now=d + 0.05)
    assert (b.rtt.srtt, b.rtt.rttvar) == before[:2] and b.rtt.rto == pytest.approx(2 * before[2])


def test_rtt_from_timestamps_even_after_retransmission() -> None:
    a, b = pair(PairConfig(ts=True, rto_min=0.2))
    b.send(b"z" * 10, now=0.0)
    d = b.next_deadline()
    assert d == 1.0
    [again] = b.handle_timer(now=d)
    [ack] = a.receive(again, now=d)
    assert ack.tsecr == again.tsval
    b.receive(ack, now=d + 0.25)
    assert b.rtt.srtt == pytest.approx(0.25)


def test_rto_estimator_bounds() -> None:
    est = RtoEstimator(rto_min=0.2)
    assert est.rto == 1.0
    est.sample(0.01)
    assert est.rto == 0.2  # RFC 6298 §2.4 lower bound (configured)
    for _ in range(20):
        est.backoff()
    assert est.rto == 60.0  # §2.5 upper bound
    est.sample(0.01)
    assert est.rto == 0.2  # a new sample ends the backoff
    with pytest.raises(ValueError):
        RtoEstimator(rto_min=0)


# --- congestion control -----------------------------------------------------------------------


def test_fast_retransmit_after_three_duplicate_acks() -> None:
    a, b = pair(PairConfig(mss_a=500, mss_b=500, rto_min=0.2))
    cc = b.congestion
    assert cc.cwnd == 2000  # RFC 5681 §3.1: IW = 4 * SMSS for SMSS <= 1095
    segs = b.send(bytes(range(250)) * 8, now=0.0)
    assert [s.length for s in segs] == [500] * 4
    lost, *others = segs
    dupacks = [r for s in others for r in a.receive(s, now=0.01)]
    assert len(dupacks) == 3 and {d.ack for d in dupacks} == {lost.seq}
    out = [r for d in dupacks for r in b.receive(d, now=0.02)]
    assert len(out) == 1 and (out[0].seq, out[0].payload) == (lost.seq, lost.payload)
    assert b.stats.fast_retransmits == 1 and b.stats.timeouts == 0
    assert cc.in_recovery and cc.ssthresh == 1000 and cc.cwnd == 1000 + 3 * 500
    shuttle(b, a, out, now=0.03)
    assert a.read() == bytes(range(250)) * 8
    assert not cc.in_recovery and cc.cwnd <= cc.ssthresh


# --- RST, SYN, unacceptable segments, PAWS ----------------------------------------------------


def test_rst_exact_closes_and_in_window_gets_challenge_ack() -> None:
    _, b = pair()
    nxt = b.tcb.rcv_nxt
    [challenge] = b.receive(Segment(seq=seq_add(nxt, 100), flags=RST), now=0.0)
    assert challenge.flags == ACK and challenge.ack == nxt and b.state is TcpState.ESTABLISHED
    assert b.stats.challenge_acks == 1
    assert b.receive(Segment(seq=seq_sub(nxt, 1), flags=RST), now=0.0) == []  # outside
    assert b.state is TcpState.ESTABLISHED
    assert b.receive(Segment(seq=nxt, flags=RST), now=0.0) == []
    assert b.closed and b.error == "connection reset" and b.reset


def test_unacceptable_segment_is_answered_with_an_ack() -> None:
    _, b = pair(PairConfig(buf_b=4000))
    nxt = b.tcb.rcv_nxt
    for seq in (seq_sub(nxt, 50), seq_add(nxt, 10000)):
        [reply] = b.receive(Segment(seq=seq, ack=b.tcb.snd_nxt, payload=b"q" * 20), now=0.0)
        assert (reply.flags, reply.seq, reply.ack) == (ACK, b.tcb.snd_nxt, nxt)
    assert b.readable == 0 and b.state is TcpState.ESTABLISHED


def test_syn_in_synchronized_state_gets_challenge_ack() -> None:
    _, b = pair()
    [reply] = b.receive(Segment(seq=b.tcb.rcv_nxt, flags=SYN), now=0.0)
    assert reply.flags == ACK and b.state is TcpState.ESTABLISHED


def test_ack_of_unsent_data_is_ignored_and_answered() -> None:
    _, b = pair()
    b.send(b"abc", now=0.0)
    una = b.tcb.snd_una
    [reply] = b.receive(Segment(seq=b.tcb.rcv_nxt, ack=seq_add(b.tcb.snd_nxt, 5),
                                payload=b"zz"), now=0.0)
    assert reply.flags == ACK and b.tcb.snd_una == una and b.readable == 0


def test_paws_drops_old_timestamps() -> None:
    a, b = pair(PairConfig(ts=True))
    [seg] = a.send(b"new", now=1.0)
    b.receive(seg, now=1.0)
    old = Segment(seq=b.tcb.rcv_nxt, ack=b.tcb.snd_nxt, payload=b"old",
                  tsval=seq_sub(b.tcb.ts_recent, 1), tsecr=0)
    [reply] = b.receive(old, now=1.0)
    assert reply.flags == ACK and b.stats.paws_drops == 1 and b.read() == b"new"


def test_every_segment_carries_timestamps_when_enabled() -> None:
    a, b = pair(PairConfig(ts=True))
    segs = a.send(b"x" * 5000, now=0.5) + a.close(now=0.5)
    for s in segs:
        assert s.tsval is not None and s.tsecr == a.tcb.ts_recent
    replies = [r for s in segs for r in b.receive(s, now=0.6)]
    assert all(r.tsval is not None for r in replies)
    assert replies[-1].tsval == seq_add(MOD - 30, 600)  # continues the fast path's TSval


# --- connection establishment and close -------------------------------------------------------


def test_connect_syn_retransmission_and_refusal() -> None:
    a, [syn] = TcpConnection.connect(iss=MOD - 1, mss=1000, wscale=2, sack_permitted=False,
                                     tsval=None, now=0.0)
    assert syn.flags == SYN and syn.mss == 1000 and syn.wscale == 2 and syn.tsval is None
    [again] = a.handle_timer(now=1.0)
    assert again.flags == SYN and a.next_deadline() == 3.0
    bad = Segment(seq=9, ack=MOD - 1, flags=SYN | ACK)  # acknowledges nothing we sent
    [rst] = a.receive(bad, now=1.5)
    assert rst.flags == RST and rst.seq == MOD - 1 and a.state is TcpState.SYN_SENT
    assert a.receive(Segment(seq=0, ack=0, flags=RST | ACK), now=1.6) == []  # ack 0 = ISS+1
    assert a.closed and a.error == "connection refused"


def test_connect_after_syn_loss_uses_three_second_rto() -> None:
    a, _ = TcpConnection.connect(iss=1, mss=1000, wscale=None, sack_permitted=False,
                                 tsval=None, now=0.0)
    a.handle_timer(now=1.0)
    [ack] = a.receive(Segment(seq=MOD - 2, ack=2, flags=SYN | ACK, mss=1200), now=1.2)
    assert ack.ack == MOD - 1 and a.tcb.mss == 1200 and a.rtt.rto == 3.0  # RFC 6298 §5.7


def test_close_sequence_states_and_time_wait() -> None:
    a, b = pair(PairConfig(msl=2.0))
    [fin] = a.close(now=1.0)
    assert fin.flags & FIN and a.state is TcpState.FIN_WAIT_1
    [ack] = b.receive(fin, now=1.0)
    assert b.state is TcpState.CLOSE_WAIT and b.eof_received
    a.receive(ack, now=1.0)
    assert a.state is TcpState.FIN_WAIT_2
    [data_b] = b.send(b"bye", now=1.0)
    [fin_b] = b.close(now=1.0)
    assert fin_b.flags & FIN and fin_b.seq == seq_add(data_b.seq, 3)
    assert b.state is TcpState.LAST_ACK
    a.receive(data_b, now=1.5)
    [last] = a.receive(fin_b, now=1.5)
    assert a.read() == b"bye" and a.eof_received
    assert a.state is TcpState.TIME_WAIT and a.next_deadline() == 5.5
    b.receive(last, now=1.5)
    assert b.closed and b.error is None
    assert a.handle_timer(now=5.5) == [] and a.closed
    [rst] = a.receive(fin_b, now=6.0)  # a late duplicate meets a closed endpoint
    assert rst.flags == RST


def test_simultaneous_close_goes_through_closing() -> None:
    a, b = pair(PairConfig(msl=1.0))
    [fa], [fb] = a.close(now=0.0), b.close(now=0.0)
    ra, rb = a.receive(fb, now=0.1), b.receive(fa, now=0.1)
    assert a.state is TcpState.CLOSING and b.state is TcpState.CLOSING
    a.receive(rb[0], now=0.2)
    b.receive(ra[0], now=0.2)
    assert a.state is TcpState.TIME_WAIT and b.state is TcpState.TIME_WAIT
    assert a.next_deadline() == pytest.approx(2.2)


def test_abort_sends_rst_and_peer_closes() -> None:
    a, b = pair()
    [rst] = b.abort(now=0.0)
    assert rst.flags & RST and rst.seq == b.tcb.snd_nxt and b.closed
    assert a.receive(rst, now=0.0) == [] and a.closed and a.error == "connection reset"
    assert b.send(b"x", now=0.0) == [] and b.last_accepted == 0 and b.send_capacity() == 0


def test_send_after_close_is_a_usage_error() -> None:
    _, b = pair()
    b.close(now=0.0)
    assert b.close(now=0.0) == []  # idempotent
    with pytest.raises(ValueError):
        b.send(b"x", now=0.0)


# --- reassembly -------------------------------------------------------------------------------


@given(data=st.binary(min_size=1, max_size=3000), cuts=st.lists(st.integers(0, 3000)),
       order=st.randoms(use_true_random=False), base=near_wrap)
@settings(max_examples=60)
def test_any_arrival_order_with_overlaps_reassembles(data: bytes, cuts: list[int],
                                                     order: random.Random, base: int) -> None:
    _, b = pair(PairConfig(iss_a=base))
    start = b.tcb.rcv_nxt
    pieces = []
    for c in cuts:  # overlapping and duplicate pieces
        lo = c % len(data)
        hi = min(len(data), lo + 1 + (c * 7) % 700)
        pieces.append((lo, hi))
    pieces += [(i, min(i + 500, len(data))) for i in range(0, len(data), 500)]
    order.shuffle(pieces)
    for lo, hi in pieces:
        b.receive(Segment(seq=seq_add(start, lo), ack=b.tcb.snd_nxt, payload=data[lo:hi]),
                  now=0.0)
    assert b.read() == data and not b.buffers.out_of_order
    assert b.tcb.rcv_nxt == seq_add(start, len(data))


def test_reassembly_coalesces_pieces() -> None:
    store: dict[int, bytes] = {}
    r = Reassembly(store, origin=MOD - 2)
    r.insert(MOD - 2 + 10, b"klm", MOD - 2)
    r.insert(MOD - 2 + 13, b"nop", MOD - 2)
    r.insert(MOD - 2 + 5, b"fghijk", MOD - 2)
    assert store == {5: b"fghijklmnop"} and r.nbytes == 11
    assert r.pop_ready(seq_add(MOD - 2, 7)) == b"hijklmnop" and not r


# --- the byte-exact check can fail ------------------------------------------------------------


class _AppendsOutOfOrder(Reassembly):
    """Broken on purpose: bytes beyond a hole are appended at the next in-order arrival, as
    if they were in order (no regard for their sequence numbers)."""

    def insert(self, seq: int, data: bytes, rcv_nxt: int) -> None:
        self.store[len(self.store)] = data

    def pop_ready(self, rcv_nxt: int) -> bytes:
        out = b"".join(self.store.values())
        self.store.clear()
        return out


def test_byte_exact_check_fails_on_a_broken_reassembly(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    rng = random.Random(7)
    data = rng.randbytes(30000)
    cfg = PairConfig(rto_min=0.2, msl=1.0)
    ok = transfer(*pair(cfg), data, b"", Link(random.Random(1), loss=0.1, jitter=0.05),
                  max_steps=20000)
    check_exact(ok)
    monkeypatch.setattr(_endpoint, "Reassembly", _AppendsOutOfOrder)
    broken = transfer(*pair(cfg), data, b"", Link(random.Random(1), loss=0.1, jitter=0.05),
                      max_steps=20000)
    with pytest.raises(AssertionError, match="a -> b stream differs"):
        check_exact(broken)

"""The gateway core driven packet by packet: handshake, delayed binding, splice, handoff
(each claim-1 step visible in the records), stats, and bad input counted and dropped."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reference.gateway import codec
from reference.gateway.actions import Drop, Emit
from reference.gateway.config import default_config
from reference.gateway.gateway import Gateway
from spec.records import Owner
from spec.segment import ACK, PSH, RST, SYN
from spec.states import FastPathState

CLIENT, VIP, GW = (codec.addr_bytes(a) for a in ("198.51.100.2", "192.0.2.10", "203.0.113.1"))
C_ISN, G_ISN, GS_ISN, S_ISN = 2**32 - 10, 2**32 - 3, 2**32 - 20, 7
REQ = b"GET /x HTTP/1.1\r\nHost: vip.example\r\n\r\n"


def isn_source(laddr: bytes, lport: int, raddr: bytes, rport: int, now: float) -> int:
    return G_ISN if lport == 80 else GS_ISN


def from_client(gw: Gateway, *, seq: int, ack: int = 0, flags: int, payload: bytes = b"",
                **opts: object) -> list:
    pkt = codec.build(version=4, src=CLIENT, dst=VIP, sport=40000, dport=80, seq=seq, ack=ack,
                      flags=flags, window=65535, payload=payload, **opts)  # type: ignore[arg-type]
    return gw.handle("client", pkt, now=0.0)


def emitted(actions: list, leg: str) -> list[codec.Packet]:
    return [codec.parse(a.packet) for a in actions if isinstance(a, Emit) and a.leg == leg]


def handshake(gw: Gateway) -> None:
    synack = emitted(from_client(gw, seq=C_ISN, flags=SYN, mss=1460), "client")
    assert len(synack) == 1 and synack[0].seq == G_ISN and synack[0].ack == C_ISN + 1
    assert not from_client(gw, seq=C_ISN + 1, ack=(G_ISN + 1) % 2**32, flags=ACK)


def session(gw: Gateway):
    return next(iter(gw.client_sessions.values()))


def test_fast_path_holds_the_request_unacknowledged_until_the_server_answers() -> None:
    gw = Gateway(default_config(), isn_source=isn_source)
    handshake(gw)
    out = from_client(gw, seq=(C_ISN + 1) % 2**32, ack=(G_ISN + 1) % 2**32, flags=ACK | PSH,
                      payload=REQ)
    assert emitted(out, "client") == []  # ACK safety: nothing acknowledged yet
    syn = emitted(out, "server")
    assert len(syn) == 1 and syn[0].flags == SYN and syn[0].seq == GS_ISN
    s = session(gw)
    assert s.state is FastPathState.SERVER_OPENING
    assert s.proxy.held is not None and s.proxy.held.payload == REQ
    synack = codec.build(version=4, src=syn[0].dst, dst=GW, sport=80, dport=syn[0].sport,
                         seq=S_ISN, ack=(GS_ISN + 1) % 2**32, flags=SYN | ACK, window=65535,
                         mss=1400)
    out = gw.handle("server", synack, now=0.1)
    req = emitted(out, "server")
    assert [bytes(p.payload) for p in req] == [REQ]
    assert req[0].seq == (GS_ISN + 1) % 2**32 and req[0].ack == S_ISN + 1
    assert s.state is FastPathState.SPLICED and s.proxy.held is None
    # the server's ACK of the request reaches the client translated
    ack = codec.build(version=4, src=syn[0].dst, dst=GW, sport=80, dport=syn[0].sport,
                      seq=S_ISN + 1, ack=(GS_ISN + 1 + len(REQ)) % 2**32, flags=ACK,
                      window=65535)
    back = emitted(gw.handle("server", ack, now=0.2), "client")
    assert back[0].ack == (C_ISN + 1 + len(REQ)) % 2**32 and back[0].seq == (G_ISN + 1) % 2**32
    assert gw.stats.relayed_segments == 1 and gw.stats.sessions_spliced == 1


def _opening_behind_a_half_open_server() -> tuple[Gateway, codec.Packet, list]:
    """SERVER_OPENING, and the server answers the SYN with the ACK of a connection it still
    holds on this 4-tuple (the challenge ACK of RFC 5961 §4, say from before a restart)."""
    gw = Gateway(default_config(), isn_source=isn_source)
    handshake(gw)
    (syn,) = emitted(from_client(gw, seq=(C_ISN + 1) % 2**32, ack=(G_ISN + 1) % 2**32,
                                 flags=ACK | PSH, payload=REQ), "server")
    stale = codec.build(version=4, src=syn.dst, dst=GW, sport=80, dport=syn.sport,
                        seq=123456, ack=987654, flags=ACK, window=65535)
    return gw, syn, gw.handle("server", stale, now=0.1)


def test_an_ack_that_does_not_answer_the_server_syn_gets_an_rst_at_its_ack() -> None:
    """RFC 9293 §3.10.7.3 (SYN-SENT): <SEQ=SEG.ACK><CTL=RST>, so the server drops its
    half-open connection and the SYN's retransmission opens (CI once timed out the first
    curl of four driver tests in a row: each new gateway reused the first source port)."""
    gw, syn, out = _opening_behind_a_half_open_server()
    (rst,) = emitted(out, "server")
    assert rst.flags == RST and rst.seq == 987654 and (rst.sport, rst.dport) == (syn.sport, 80)
    assert session(gw).state is FastPathState.SERVER_OPENING and emitted(out, "client") == []
    synack = codec.build(version=4, src=syn.dst, dst=GW, sport=80, dport=syn.sport, seq=S_ISN,
                         ack=(GS_ISN + 1) % 2**32, flags=SYN | ACK, window=65535, mss=1400)
    assert [bytes(p.payload) for p in emitted(gw.handle("server", synack, now=1.1),
                                              "server")] == [REQ]
    assert session(gw).state is FastPathState.SPLICED


def test_without_the_rst_the_half_open_server_is_only_dropped(monkeypatch) -> None:
    """Companion: the table's old row (drop) sends nothing, so the server keeps its
    half-open connection and answers every retransmitted SYN the same way."""
    from spec import states
    from spec.states import Effect, FastPathEvent, Transition

    row = dict(states.FAST_PATH_TABLE[FastPathState.SERVER_OPENING])
    row[FastPathEvent.SERVER_SEGMENT] = Transition(Effect.DROP, FastPathState.SERVER_OPENING)
    monkeypatch.setitem(states.FAST_PATH_TABLE, FastPathState.SERVER_OPENING, row)
    _, _, out = _opening_behind_a_half_open_server()
    assert emitted(out, "server") == [] and any(isinstance(a, Drop) for a in out)


def test_partial_request_is_handed_off_with_every_claim_1_step_in_the_records() -> None:
    gw = Gateway(default_config(), isn_source=isn_source)
    handshake(gw)
    first = session(gw).proxy
    out = from_client(gw, seq=(C_ISN + 1) % 2**32, ack=(G_ISN + 1) % 2**32, flags=ACK | PSH,
                      payload=REQ[:9])
    assert emitted(out, "server") == []  # no server is chosen from a partial request line
    reply = emitted(out, "client")
    assert len(reply) == 1 and reply[0].flags == ACK
    assert reply[0].seq == (G_ISN + 1) % 2**32 and reply[0].ack == (C_ISN + 1 + 9) % 2**32
    assert not gw.client_sessions and len(gw.normal_by_client) == 1
    ns = next(iter(gw.normal_by_client.values()))
    res = ns.handoff
    assert res.steps == ["C1.d", "C1.e", "C1.f", "C1.g", "C1.h", "C1.i", "C1.j"]
    assert res.proxy.first is first                                    # C1.d / C1.e
    assert res.proxy.client is res.client and res.client.proxy is res.proxy  # C1.f
    assert (res.client.rcv_isn, res.client.snd_isn) == (C_ISN, G_ISN)  # C1.g / C1.i
    tcb = res.client.tcb
    assert tcb is not None and (tcb.irs, tcb.iss) == (C_ISN, G_ISN)    # C1.h
    assert res.client.buffers is not None                              # C1.h: buffers
    assert first.owner is Owner.NORMAL_PATH and first.state is FastPathState.HANDED_OFF
    assert gw.stats.handoffs["PARTIAL_REQUEST"] == 1
    # the rest of the request completes it; the normal path opens the server side itself
    out = from_client(gw, seq=(C_ISN + 10) % 2**32, ack=(G_ISN + 1) % 2**32, flags=ACK | PSH,
                      payload=REQ[9:])
    syn = emitted(out, "server")
    assert len(syn) == 1 and syn[0].flags & SYN


def test_malformed_packets_are_counted_and_dropped() -> None:
    gw = Gateway(default_config(), isn_source=isn_source)
    good = codec.build(version=4, src=CLIENT, dst=VIP, sport=40000, dport=80, seq=1, ack=0,
                       flags=SYN, window=100)
    bad = bytearray(good)
    bad[-1] ^= 0xFF  # corrupt the TCP checksum
    out = gw.handle("client", bytes(bad), now=0.0)
    assert out == [Drop("client", "malformed:bad_checksum")] or (
        len(out) == 1 and isinstance(out[0], Drop) and out[0].reason.startswith("malformed"))
    assert sum(v for k, v in gw.stats.drops.items() if k.startswith("malformed")) == 1
    assert not gw.client_sessions


def test_unknown_vip_and_no_session_are_dropped() -> None:
    gw = Gateway(default_config(), isn_source=isn_source)
    other = codec.build(version=4, src=CLIENT, dst=codec.addr_bytes("192.0.2.99"), sport=1,
                        dport=80, seq=1, ack=0, flags=SYN, window=100)
    assert gw.handle("client", other, now=0.0) == [Drop("client", "unknown_vip")]
    stray = codec.build(version=4, src=CLIENT, dst=VIP, sport=1, dport=80, seq=1, ack=5,
                        flags=ACK, window=100)
    assert gw.handle("client", stray, now=0.0) == [Drop("client", "no_session")]
    srv = codec.build(version=4, src=codec.addr_bytes("203.0.113.11"), dst=GW, sport=80,
                      dport=40000, seq=1, ack=5, flags=ACK | RST, window=0)
    assert gw.handle("server", srv, now=0.0) == [Drop("server", "no_session")]
    assert gw.stats.drops["unknown_vip"] == 1 and gw.stats.drops["no_session"] == 2


@settings(max_examples=300)
@given(data=st.binary(max_size=120), leg=st.sampled_from(["client", "server"]))
def test_arbitrary_bytes_give_actions_never_an_exception(data: bytes, leg: str) -> None:
    gw = Gateway(default_config(), isn_source=isn_source)
    out = gw.handle(leg, data, now=0.0)  # type: ignore[arg-type]
    assert all(isinstance(a, (Drop, Emit)) for a in out)


@settings(max_examples=200)
@given(pos=st.integers(0, 200), val=st.integers(0, 255))
def test_mutated_packets_in_a_live_session_never_raise(pos: int, val: int) -> None:
    gw = Gateway(default_config(), isn_source=isn_source)
    handshake(gw)
    pkt = bytearray(codec.build(version=4, src=CLIENT, dst=VIP, sport=40000, dport=80,
                                seq=(C_ISN + 1) % 2**32, ack=(G_ISN + 1) % 2**32,
                                flags=ACK | PSH, window=65535, payload=REQ))
    pkt[pos % len(pkt)] = val
    out = gw.handle("client", bytes(pkt), now=0.0)
    assert all(isinstance(a, (Drop, Emit)) for a in out)


def test_idle_session_is_reset_and_its_records_retired() -> None:
    gw = Gateway(default_config(), isn_source=isn_source)
    handshake(gw)
    deadline = gw.next_deadline()
    assert deadline is not None
    out = gw.handle_timer(now=deadline)
    rst = emitted(out, "client")
    assert len(rst) == 1 and rst[0].flags & RST
    assert not gw.client_sessions and gw.next_deadline() is None


def test_client_closing_before_any_request_is_closed_back_and_retired() -> None:
    # This used to answer "400 Bad Request" to a client that sent nothing, and to keep the
    # normal-path session forever (no server side, so it was never marked done).
    gw = Gateway(default_config(), isn_source=isn_source)
    handshake(gw)
    out = from_client(gw, seq=(C_ISN + 1) % 2**32, ack=(G_ISN + 1) % 2**32, flags=ACK | 0x01)
    to_client = emitted(out, "client")
    assert all(not p.payload for p in to_client)  # no HTTP answer
    assert any(p.flags & 0x01 for p in to_client)  # our FIN
    assert gw.stats.handoffs["EARLY_FIN"] == 1
    fin = next(p for p in to_client if p.flags & 0x01)
    from_client(gw, seq=(C_ISN + 2) % 2**32, ack=(fin.seq + 1) % 2**32, flags=ACK)
    assert not gw.normal_by_client and not gw.client_sessions

"""A client's SYN that reuses the 4-tuple of a proxied session whose client side is in
TIME-WAIT opens a new session (RFC 6191 with timestamps, RFC 1122 §4.2.2.13 without), as
the client's own kernel expects: it reuses a port as soon as its side is closed. Found by
bench_lab (wrk, 1 KiB requests with Connection: close): one run in four stalled for 2*MSL."""

from __future__ import annotations

import itertools

import pytest

from reference.gateway import scenarios
from reference.gateway.config import default_config
from reference.gateway.gateway import CoreSettings, Gateway
from reference.gateway.sim import ClientPlan, Network, ServerBehaviour
from spec.segment import ACK, SYN, Segment
from spec.states import TcpState
from spec.topology import SERVER_IPS, SERVER_PORT, VIP, VPORT

SIZE = 5000
PORT = 40001


def _network(timestamps: bool) -> tuple[Network, Gateway]:
    gw = Gateway(default_config(), core=CoreSettings(rto_min=0.2, linger=0.5))
    isns = itertools.count(1_000_000, 7_000_000)  # rising: the no-timestamp test needs it
    net = Network(gw, seed=4, isn=lambda: next(isns) & 0xFFFFFFFF)
    for ip in SERVER_IPS:
        net.add_server(ip, SERVER_PORT, ServerBehaviour(response_size=lambda h: SIZE))
    net.start_client(VIP, VPORT, _plan(), timestamps=timestamps)
    net.run(until=5.0)
    return net, gw


def _plan() -> ClientPlan:
    # a request in two writes: handed off, so the normal path's TCP owns the client side
    return ClientPlan(request=scenarios.request(size=SIZE), writes=(10,), port=PORT)


def _old_session(gw: Gateway):
    (ns,) = gw.normal_by_client.values()
    return ns


@pytest.mark.parametrize("timestamps", [True, False])
def test_a_syn_on_a_time_wait_4_tuple_opens_a_new_session(timestamps: bool) -> None:
    net, gw = _network(timestamps)
    assert len(net.results[PORT].received) >= SIZE
    ns = _old_session(gw)
    assert ns.client.tcb.state is TcpState.TIME_WAIT  # the gateway closed first
    net.start_client(VIP, VPORT, _plan(), at=5.0, timestamps=timestamps)
    net.run(until=15.0)  # 2*MSL is 60 s: without the rule the client would still wait
    assert len(net.results[PORT].received) >= SIZE and net.results[PORT].closed
    assert gw.stats.sessions_reopened == 1


def test_without_the_rule_the_reused_port_stalls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Gateway, "_new_incarnation", staticmethod(lambda ns, pkt: False))
    net, gw = _network(True)
    net.start_client(VIP, VPORT, _plan(), at=5.0)
    net.run(until=15.0)
    assert not net.results[PORT].received and gw.stats.sessions_reopened == 0


def test_only_a_newer_syn_reopens_time_wait() -> None:
    _, gw = _network(True)
    conn = _old_session(gw).client
    tcb = conn.tcb
    assert tcb.ts_enabled and tcb.ts_recent is not None

    def syn(seq: int, tsval: int | None, flags: int = SYN) -> Segment:
        return Segment(seq=seq, ack=0, flags=flags, window=65535, tsval=tsval,
                       tsecr=0 if tsval is not None else None)

    later, earlier = tcb.ts_recent + 1, tcb.ts_recent - 1
    assert conn.reopened_by(syn(tcb.rcv_nxt - 5, later))  # timestamps decide (RFC 6191)
    assert not conn.reopened_by(syn(tcb.rcv_nxt + 5, earlier))
    assert not conn.reopened_by(syn(tcb.rcv_nxt + 5, tcb.ts_recent))
    assert conn.reopened_by(syn(tcb.rcv_nxt + 5, None))  # no TS: sequence (RFC 1122)
    assert not conn.reopened_by(syn(tcb.rcv_nxt, None))
    assert not conn.reopened_by(syn(tcb.rcv_nxt + 5, later, SYN | ACK))


@pytest.mark.parametrize("timestamps", [True, False])
def test_a_newer_syn_replaces_a_spliced_session_lingering_after_both_fins(
        timestamps: bool) -> None:
    gw = Gateway(default_config(), core=CoreSettings(rto_min=0.2, linger=30.0))
    isns = itertools.count(1_000_000, 7_000_000)
    net = Network(gw, seed=4, isn=lambda: next(isns) & 0xFFFFFFFF)
    for ip in SERVER_IPS:
        net.add_server(ip, SERVER_PORT, ServerBehaviour(response_size=lambda h: SIZE))
    one_write = ClientPlan(request=scenarios.request(size=SIZE), port=PORT)  # spliced
    net.start_client(VIP, VPORT, one_write, timestamps=timestamps)
    net.run(until=5.0)
    (s,) = gw.fast_sessions()
    assert s.state.name == "CLOSING" and s.client_fin_acked and s.server_fin_acked
    assert gw.rows4.live == 1  # idle for seconds: compacted, the new SYN finds it in a row
    net.start_client(VIP, VPORT, one_write, at=5.0, timestamps=timestamps)
    net.run(until=10.0)  # well inside the 30 s linger
    assert len(net.results[PORT].received) >= SIZE and gw.stats.sessions_reopened == 1
    assert gw.stats.sessions_spliced == 2


def test_without_the_fast_path_rule_the_reused_port_waits_out_the_linger(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from reference.gateway.fastpath import FastPath

    monkeypatch.setattr(FastPath, "reopened_by", staticmethod(lambda s, pkt: False))
    gw = Gateway(default_config(), core=CoreSettings(rto_min=0.2, linger=30.0))
    net = Network(gw, seed=4)
    for ip in SERVER_IPS:
        net.add_server(ip, SERVER_PORT, ServerBehaviour(response_size=lambda h: SIZE))
    one_write = ClientPlan(request=scenarios.request(size=SIZE), port=PORT)
    net.start_client(VIP, VPORT, one_write)
    net.run(until=5.0)
    net.start_client(VIP, VPORT, one_write, at=5.0)
    net.run(until=10.0)
    assert not net.results[PORT].received and gw.stats.sessions_reopened == 0

"""Compaction of idle spliced sessions (``session_rows``): a row gives back exactly the
session it stored, its index finds exactly the rows it holds, and a gateway that compacts is
indistinguishable on the wire from one that never does. Each check has a companion showing
it fails on a broken table."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reference.gateway import codec, scenarios
from reference.gateway.actions import Emit
from reference.gateway.config import default_config, loads
from reference.gateway.fastpath import FastSession
from reference.gateway.gateway import CoreSettings, Gateway
from reference.gateway.session_rows import COMPACTABLE, RowTable, flow_key
from reference.gateway.sim import ClientPlan, Impairment, Network, ServerBehaviour
from spec.segment import ACK, PSH, SYN
from spec.states import FastPathState
from spec.topology import SERVER_IPS, SERVER_PORT, VIP, VPORT

REQ = b"GET /x HTTP/1.1\r\nHost: vip.example\r\n\r\n"
SERVERS6 = ("2001:db8:2::11", "2001:db8:2::12", "2001:db8:2::13")
U32 = st.one_of(st.integers(2**32 - 4096, 2**32 - 1), st.integers(0, 2**32 - 1))
"""32-bit numbers, often just below the wrap."""


def differences(a: FastSession, b: FastSession) -> list[str]:
    """Fields in which two sessions differ (``queued`` is the timer heap's bookkeeping, not
    the session's: a compacted session's timer lives in the row table)."""
    out = []
    for f in dataclasses.fields(FastSession):
        if f.name == "queued":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        same = x is y if f.name == "service" else (x == y and type(x) is type(y))
        if not same:
            out.append(f"{f.name}: {x!r} != {y!r}")
    return out


@dataclasses.dataclass(frozen=True)
class Opts:
    mss: int | None
    wscale: int | None
    sack: bool
    tsval: int | None


OPTS = st.builds(Opts, mss=st.one_of(st.none(), st.integers(64, 65535)),
                 wscale=st.one_of(st.none(), st.integers(0, 14)), sack=st.booleans(),
                 tsval=st.one_of(st.none(), U32))


def spliced(gw: Gateway, *, version: int, port: int, c_isn: int, s_isn: int, client: Opts,
            server: Opts, now: float = 0.0) -> FastSession:
    """Drive one session to SPLICED through the gateway with crafted packets."""
    cli, vip = (("2001:db8:1::2", scenarios.IPV6_VIP) if version == 6
                else ("198.51.100.2", VIP))
    ca, va = codec.addr_bytes(cli), codec.addr_bytes(vip)

    def c(seq: int, ack: int, flags: int, payload: bytes = b"", syn: bool = False) -> list:
        ts = client.tsval if client.tsval is not None else None
        return gw.handle("client", codec.build(
            version=version, src=ca, dst=va, sport=port, dport=VPORT, seq=seq, ack=ack,
            flags=flags, window=1000, payload=payload,
            mss=client.mss if syn else None, wscale=client.wscale if syn else None,
            sack_permitted=client.sack and syn, tsval=ts, tsecr=0 if ts is not None else None),
            now=now)

    synack = [codec.parse(a.packet) for a in c(c_isn, 0, SYN, syn=True) if isinstance(a, Emit)]
    g_isn = synack[0].seq
    c((c_isn + 1) % 2**32, (g_isn + 1) % 2**32, ACK)
    out = c((c_isn + 1) % 2**32, (g_isn + 1) % 2**32, ACK | PSH, REQ)
    (syn,) = [codec.parse(a.packet) for a in out if isinstance(a, Emit) and a.leg == "server"]
    ts = server.tsval
    gw.handle("server", codec.build(
        version=version, src=syn.dst, dst=syn.src, sport=syn.dport, dport=syn.sport,
        seq=s_isn, ack=(syn.seq + 1) % 2**32, flags=SYN | ACK, window=2000, mss=server.mss,
        wscale=server.wscale, sack_permitted=server.sack, tsval=ts,
        tsecr=syn.tsval if ts is not None else None), now=now)
    (s,) = [x for x in gw.client_sessions.values() if x.client[1] == port]
    return s


def isn(laddr: bytes, lport: int, raddr: bytes, rport: int, now: float) -> int:
    """Deterministic gateway ISNs (RFC 6528's keyed hash has a fresh secret per gateway),
    so that two gateways fed the same packets can be compared packet for packet."""
    return (2**32 - 5000 + lport * 7919 + rport * 104729) % 2**32


def gateway(version: int, **core: Any) -> Gateway:
    config = loads(scenarios.IPV6_CONFIG, "<ipv6>") if version == 6 else default_config()
    return Gateway(config, isn_source=isn, core=CoreSettings(**core))


MARKS = st.fixed_dictionaries({
    "state": st.sampled_from(sorted(COMPACTABLE)),
    "client_fin_end": st.one_of(st.none(), U32), "server_fin_end": st.one_of(st.none(), U32),
    "client_fin_acked": st.booleans(), "server_fin_acked": st.booleans(),
    "client_rcv_nxt": st.one_of(st.none(), U32), "client_rcv_wnd": st.integers(0, 2**30),
    "client_snd_nxt": st.one_of(st.none(), U32), "server_snd_nxt": st.one_of(st.none(), U32),
    "counted": st.booleans(), "open_tries": st.integers(0, 9),
    "last_active": st.floats(0, 1e9), "deadline": st.one_of(st.none(), st.floats(0, 1e9)),
    "ts_recent": st.one_of(st.none(), U32)})


def mark(s: FastSession, m: dict[str, Any]) -> None:
    """Give the session's changing fields arbitrary values (any of them must survive)."""
    for k, v in m.items():
        if k == "state":
            s.proxy.state = FastPathState(v)
        elif k == "ts_recent":
            s.proxy.client.ts_recent = v
        else:
            setattr(s, k, v)


@settings(max_examples=60, deadline=None)
@given(version=st.sampled_from([4, 6]), c_isn=U32, s_isn=U32, client=OPTS, server=OPTS,
       marks=MARKS)
def test_a_row_gives_back_exactly_the_session_it_stored(
        version: int, c_isn: int, s_isn: int, client: Opts, server: Opts,
        marks: dict[str, Any]) -> None:
    assume(client.tsval is None or server.tsval is not None)  # else it must not splice
    gw = gateway(version, compact_after=None)
    s = spliced(gw, version=version, port=41000, c_isn=c_isn, s_isn=s_isn, client=client,
                server=server)
    assert s.state is FastPathState.SPLICED
    mark(s, marks)
    table = gw.rows4 if version == 4 else gw.rows6
    row = table.compact(s)
    assert row is not None
    assert differences(s, table.peek(row)) == []
    back = table.restore(row)
    assert differences(s, back) == []
    assert back.proxy.held is None and back.proxy.splice == s.proxy.splice
    assert table.live == 0 and table.find_client(flow_key(
        s.client[0], s.vip[0], s.client[1], s.vip[1])) == -1


def test_the_round_trip_check_fails_on_a_table_that_forgets_a_mark() -> None:
    class Forgetful(RowTable):
        def _build(self, v: tuple, ckey: bytes, skey: bytes) -> FastSession:
            s = super()._build(v, ckey, skey)
            s.server_fin_acked = False  # the bit is stored but not read back
            return s

    gw = gateway(4, compact_after=None)
    s = spliced(gw, version=4, port=41000, c_isn=2**32 - 5, s_isn=9,
                client=Opts(1460, 7, True, 5), server=Opts(1400, 7, True, 77))
    s.server_fin_acked = True
    table = Forgetful(4)
    row = table.compact(s)
    assert row is not None
    assert differences(s, table.restore(row)) == ["server_fin_acked: True != False"]


def test_sessions_that_cannot_be_stored_exactly_stay_objects() -> None:
    gw = gateway(4, compact_after=None)
    s = spliced(gw, version=4, port=41000, c_isn=1, s_isn=2, client=Opts(1460, 7, True, 5),
                server=Opts(1400, 7, True, 77))
    table = RowTable(4)
    s.open_tries = 300  # does not fit its byte
    assert table.compact(s) is None and table.live == 0 and len(table.free_rows) == 16
    s.open_tries = 0
    s.proxy.state = FastPathState.SERVER_OPENING  # not spliced: may hold the request
    assert table.compact(s) is None
    s.proxy.state = FastPathState.SPLICED
    assert RowTable(16).compact(s) is None  # an IPv4 session in the IPv6 table
    assert table.compact(s) is not None


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 39)), min_size=1, max_size=120))
def test_the_index_finds_exactly_the_compacted_sessions(ops: list[tuple[bool, int]]) -> None:
    gw = gateway(4, compact_after=None)
    sessions = [spliced(gw, version=4, port=42000 + i, c_isn=i * 977, s_isn=i * 31,
                        client=Opts(1460, 7, True, i), server=Opts(1400, 7, True, i))
                for i in range(40)]
    table = gw.rows4
    rows: dict[int, int] = {}
    for compact, i in ops:
        if compact and i not in rows:
            r = table.compact(sessions[i])
            assert r is not None
            rows[i] = r
        elif not compact and i in rows:
            assert differences(sessions[i], table.restore(rows.pop(i))) == []
        for j, s in enumerate(sessions):
            assert s.server is not None and s.gw is not None
            ckey = flow_key(s.client[0], s.vip[0], s.client[1], s.vip[1])
            skey = flow_key(s.server[0], s.gw[0], s.server[1], s.gw[1])
            assert table.find_client(ckey) == rows.get(j, -1)
            assert table.find_server(skey) == rows.get(j, -1)
    assert table.live == len(rows) == len(list(table.rows()))


# ---- the gateway: compaction is invisible on the wire -------------------------------------

def wire(core: dict[str, Any], *, seed: int, version: int = 4, size: int = 300_000,
         leg: Impairment = scenarios.LOSSY) -> tuple[Gateway, Network]:
    gw = gateway(version, rto_min=0.2, linger=0.5, **core)
    isns = itertools.chain([2**32 - 3000], itertools.repeat(2**32 - 700))
    net = Network(gw, seed=seed, client_leg=leg, server_leg=leg, isn=lambda: next(isns),
                  **({"client_addr": scenarios.IPV6_CLIENT} if version == 6 else {}))
    for ip in (SERVERS6 if version == 6 else SERVER_IPS):
        net.add_server(ip, SERVER_PORT, ServerBehaviour(response_size=lambda h: size))
    for i in range(3):
        net.start_client(scenarios.IPV6_VIP if version == 6 else VIP, VPORT,
                         ClientPlan(request=scenarios.request(size=size), port=43000 + i),
                         at=i * 0.7)
    net.run(until=600.0)
    return gw, net


def trace(net: Network) -> Iterator[list[tuple[float, bytes]]]:
    yield net.g2c.tap
    yield net.g2s.tap


@pytest.mark.parametrize(("seed", "version"), [(1, 4), (2, 6), (3, 4), (4, 6)])
def test_a_compacting_gateway_sends_exactly_what_a_plain_one_sends(seed: int,
                                                                   version: int) -> None:
    plain, pnet = wire({"compact_after": None}, seed=seed, version=version)
    churn, cnet = wire({"compact_after": 0.0}, seed=seed, version=version)
    assert churn.stats.sessions_compacted > 10 and churn.stats.sessions_restored > 10
    assert plain.stats.sessions_compacted == 0
    assert list(trace(pnet)) == list(trace(cnet))
    assert churn.live_fast() == 0 and churn.rows4.live == churn.rows6.live == 0
    assert churn.next_deadline() is None


def test_the_wire_comparison_fails_on_a_table_that_loses_the_timestamp_offset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = RowTable._build

    def lossy(self: RowTable, v: tuple, ckey: bytes, skey: bytes) -> FastSession:
        s = real(self, v, ckey, skey)
        assert s.proxy.splice is not None
        s.proxy.splice = dataclasses.replace(s.proxy.splice, s2c_ts=0)
        return s

    _, pnet = wire({"compact_after": None}, seed=5)
    monkeypatch.setattr(RowTable, "_build", lossy)
    churn, cnet = wire({"compact_after": 0.0}, seed=5)
    assert churn.stats.sessions_restored > 0
    assert list(trace(pnet)) != list(trace(cnet))


def test_an_idle_session_is_compacted_and_times_out_from_its_row() -> None:
    gw = gateway(4, compact_after=1.0)
    s = spliced(gw, version=4, port=41000, c_isn=2**32 - 5, s_isn=9,
                client=Opts(1460, 7, True, 5), server=Opts(1400, 7, True, 77))
    deadline = s.deadline
    assert deadline == gw.config.idle_timeout
    assert gw.next_deadline() == 1.0 and not gw.handle_timer(now=1.0)
    assert not gw.client_sessions and not gw.server_sessions
    assert gw.rows4.live == 1 and gw.stats.sessions_compacted == 1 and gw.live_fast() == 1
    (copy,) = gw.fast_sessions()
    assert differences(s, copy) == []
    assert gw.next_deadline() == deadline  # the row's timer
    assert gw.handle_timer(now=deadline - 0.001) == []
    out = gw.handle_timer(now=deadline)
    rsts = sorted(a.leg for a in out if isinstance(a, Emit))
    assert rsts == ["client", "server"]  # the idle timeout resets both legs
    assert gw.rows4.live == 0 and gw.live_fast() == 0 and gw.next_deadline() is None
    assert gw.stats.sessions_restored == 1


def test_a_packet_for_a_compacted_session_restores_it_and_is_relayed() -> None:
    gw = gateway(4, compact_after=1.0)
    s = spliced(gw, version=4, port=41000, c_isn=2**32 - 5, s_isn=9,
                client=Opts(1460, 7, True, 5), server=Opts(1400, 7, True, 77))
    gw.handle_timer(now=2.0)
    assert gw.rows4.live == 1
    c = s.proxy.client
    out = gw.handle("client", codec.build(
        version=4, src=s.client[0], dst=s.vip[0], sport=s.client[1], dport=s.vip[1],
        seq=(c.rcv_isn + 1 + len(REQ)) % 2**32, ack=(c.snd_isn + 1) % 2**32,
        flags=ACK | PSH, window=1000, payload=b"more", tsval=9, tsecr=0), now=3.0)
    (sent,) = [codec.parse(a.packet) for a in out if isinstance(a, Emit)]
    assert sent.dst == s.server[0] and bytes(sent.payload) == b"more"  # type: ignore[index]
    assert gw.rows4.live == 0 and len(gw.client_sessions) == 1
    assert gw.stats.sessions_restored == 1
    (back,) = gw.client_sessions.values()
    assert back.last_active == 3.0 and back.server_snd_nxt == sent.seq + 4

"""Byte-exact streams through the core under random segmentation, loss, duplication and
reordering, with every ISN near the 2^32 wrap; record-level invariants after every packet.

Each run is one virtual client, the gateway core and the default servers on the in-memory
``reference.gateway.sim.Network`` (as ``scenarios.run`` sets them up), all in simulated time.
The checks, each a helper returning the problems it found:

* :func:`stream_problems`: the client received exactly the bytes the server sent (read back
  from the server->gateway link's tap) and the server exactly the request;
* :func:`path_problems`: the path and handoff reason follow from how the first request data
  reached the gateway;
* :func:`live_record_problems`: no session record is left at the end, nor left for the idle
  timeout to sweep up;
* :class:`CheckedGateway` (after every packet and timer): a fast-path session holds payload
  only while its server side opens, at most one segment of it, none once spliced; and while
  the fast path owns a session it never acknowledges to the client a byte the server has not
  acknowledged (ACK safety: it has no buffer to retransmit from);
* :func:`continuity_problems`: the client's sequence space is never broken: one SYN/ACK ISN,
  no RST, every segment inside the two streams, across a handoff too.

Every check has a companion test below that breaks the core on purpose and shows the check
catching it. Two core bugs these properties found (a lost server SYN resent only at the idle
deadline; a CLOSING session retired before both FINs were acknowledged) are kept as
regression tests at the end of the file.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.gateway import codec
from reference.gateway.actions import Action, Drop, Emit
from reference.gateway.config import default_config
from reference.gateway.fastpath import FastPath, FastSession
from reference.gateway.gateway import CoreSettings, Gateway, client_key
from reference.gateway.sim import (
    ClientPlan,
    Impairment,
    Network,
    ServerBehaviour,
    response_body,
)
from spec import eligibility, translate
from spec import handoff as spec_handoff
from spec.segment import ACK, FIN, RST, SYN
from spec.seq import seq_add
from spec.states import HOLDS_PAYLOAD, FastPathState
from spec.topology import CLIENT_IP, CLIENT_PORT, SERVER_IPS, SERVER_PORT, VIP, VPORT

MOD = 1 << 32
HALF = 1 << 31
CLIENT_KEY = (codec.addr_bytes(CLIENT_IP), CLIENT_PORT, codec.addr_bytes(VIP), VPORT)
HEAD_END = b"\r\n\r\n"
near_wrap = st.integers(0, 3000).map(lambda k: MOD - 1 - k)


def sdiff(a: int, b: int) -> int:
    """Signed distance from b to a in sequence space."""
    d = (a - b) % MOD
    return d - MOD if d >= HALF else d


def make_request(path: str, pad: int) -> bytes:
    extra = f"X-Pad: {'p' * pad}\r\n" if pad else ""
    return f"GET /{path} HTTP/1.1\r\nHost: vip.example\r\n{extra}\r\n".encode()


@dataclass(frozen=True)
class Case:
    seed: int
    client_leg: Impairment
    server_leg: Impairment
    request: bytes
    writes: tuple[int, ...]
    """ClientPlan.writes: sizes of the first writes (the rest follows in one); () = one."""
    swap: bool
    """The client's first two data segments go out in reverse order."""
    response_size: int
    c_isn: int
    s_isn: int
    g: int
    """The gateway's ISN towards the client."""
    gs: int
    """The gateway's ISN towards the server."""


def permille(hi: int) -> st.SearchStrategy[float]:
    return st.integers(0, hi).map(lambda k: k / 1000)


impairments = st.one_of(
    st.just(Impairment()),
    st.builds(Impairment, loss=permille(50), duplicate=permille(50), reorder=permille(100)))
"""A clean leg, or loss 0..5 %, duplication 0..5 %, reordering 0..10 % per packet."""


@st.composite
def cases(draw: st.DrawFn, *, split: bool) -> Case:
    req = make_request(draw(st.text("abcdefgh0123456789/", max_size=20)),
                       draw(st.integers(0, 600)))
    writes: tuple[int, ...] = ()
    swap = False
    if split:
        cuts = sorted(draw(st.sets(st.integers(1, len(req) - 1), min_size=1, max_size=3)))
        writes = tuple(b - a for a, b in itertools.pairwise([0, *cuts]))
        swap = draw(st.booleans())
    return Case(seed=draw(st.integers(0, 2**16)), client_leg=draw(impairments),
                server_leg=draw(impairments), request=req, writes=writes, swap=swap,
                response_size=draw(st.one_of(st.integers(0, 3000), st.integers(3000, 200_000))),
                c_isn=draw(near_wrap), s_isn=draw(near_wrap), g=draw(near_wrap),
                gs=draw(near_wrap))


# --- the record-level watch ----------------------------------------------------------------


class CheckedGateway(Gateway):
    """The core, with its records inspected after every packet and every timer."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.violations: list[str] = []
        self.server_acked: dict[tuple[bytes, int, bytes, int], int] = {}
        """Per fast session (by client 4-tuple, which survives compaction: a session restored
        from its row is a new object): client octets (+ FIN) the server has acknowledged."""
        self.first_data: dict[tuple[bytes, int, bytes, int], tuple[int, bytes]] = {}
        """Per client 4-tuple: (seq, payload) of the first data segment that arrived."""
        self.emptied_at: float | None = None
        """When the session tables last became empty (None: never, or not again yet)."""
        self.opening_since: dict[int, float] = {}
        self.slow_opens: list[float] = []
        """How long each server side that stayed SERVER_OPENING beyond its open timeouts
        took to open (the regression test below checks there are none)."""
        self.retired_closing: set[tuple[bytes, int, bytes, int]] = set()
        self.dropped_after_linger = 0
        """Client packets dropped as no_session after their session was retired from
        CLOSING (the regression test below checks there are none)."""

    def handle(self, leg: str, packet: bytes | bytearray | memoryview, *, now: float,
               checksum_verified: bool = False) -> list[Action]:
        before = {k: (s, s.state) for k, s in self.client_sessions.items()}
        try:
            pkt: codec.Packet | None = codec.parse(bytes(packet))
        except codec.DecodeError:
            pkt = None
        if pkt is not None and pkt.first_fragment:
            if leg == "client" and len(pkt.payload):
                key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
                self.first_data.setdefault(key, (pkt.seq, bytes(pkt.payload)))
            elif leg == "server":
                self._note_server_ack(pkt)
        out = super().handle(leg, packet, now=now,  # type: ignore[arg-type]
                             checksum_verified=checksum_verified)
        if pkt is not None and pkt.first_fragment and leg == "server":
            self._note_server_ack(pkt)  # a compacted session is in the table only now
        self._check(before, out, now, f"{leg} packet at t={now:.4f}")
        return out

    def handle_timer(self, *, now: float) -> list[Action]:
        before = {k: (s, s.state) for k, s in self.client_sessions.items()}
        out = super().handle_timer(now=now)
        self._check(before, out, now, f"timer at t={now:.4f}")
        return out

    def live_records(self) -> dict[str, int]:
        tables = {"client_sessions": self.client_sessions,
                  "server_sessions": self.server_sessions,
                  "normal_by_client": self.normal_by_client,
                  "normal_by_server": self.normal_by_server}
        return {name: len(t) for name, t in tables.items() if t}

    def _note_server_ack(self, pkt: codec.Packet) -> None:
        s = self.server_sessions.get((pkt.src, pkt.sport, pkt.dst, pkt.dport))
        if s is None or s.proxy.server is None or not pkt.flags & ACK:
            return
        acked = sdiff(pkt.ack, seq_add(s.proxy.server.snd_isn, 1))
        key = client_key(s)
        self.server_acked[key] = max(self.server_acked.get(key, 0), acked)

    def _note_timing(self, before: dict[tuple[bytes, int, bytes, int],
                                        tuple[FastSession, FastPathState]],
                     out: list[Action], now: float) -> None:
        for key, (s, was) in before.items():
            if was is not FastPathState.SERVER_OPENING and s.state is \
                    FastPathState.SERVER_OPENING:
                self.opening_since[id(s)] = now
            if was is FastPathState.SERVER_OPENING and s.state is not \
                    FastPathState.SERVER_OPENING:
                # a core that follows the table: one open timeout per SYN sent again,
                # doubling (open_tries of them), plus a second of slack for the round trip
                took = now - self.opening_since.pop(id(s), now)
                late = took - self.config.open_timeout * ((1 << s.open_tries) - 1) - 1.0
                if late > 0:
                    self.slow_opens.append(round(took, 3))
            if was is FastPathState.CLOSING and key not in self.client_sessions:
                self.retired_closing.add(key)
        for a in out:
            if isinstance(a, Drop) and a.leg == "client" and a.reason == "no_session" \
                    and self.retired_closing:
                self.dropped_after_linger += 1

    def _violate(self, what: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(what)

    def _check(self, before: dict[tuple[bytes, int, bytes, int],
                                  tuple[FastSession, FastPathState]],
               out: list[Action], now: float, where: str) -> None:
        if self.live_records():
            self.emptied_at = None
        elif self.emptied_at is None:
            self.emptied_at = now
        self._note_timing(before, out, now)
        for s in self.client_sessions.values():
            held = s.proxy.held
            if held is None:
                continue
            if s.state not in HOLDS_PAYLOAD:
                self._violate(f"{where}: {len(held.payload)} octets held in {s.state.name}")
            # one segment's worth: no more than the MSS the gateway announced to the client,
            # the largest segment the client may send it
            if len(held.payload) > s.proxy.client.negotiated.local_mss:
                self._violate(f"{where}: {len(held.payload)} octets held, more than one "
                              f"segment ({s.proxy.client.negotiated.local_mss})")
        sessions = {k: s for k, (s, _) in before.items()} | self.client_sessions
        was = {k: state for k, (_, state) in before.items()}
        for a in out:
            if not isinstance(a, Emit) or a.leg != "client":
                continue
            p = codec.parse(a.packet)
            key = (p.dst, p.dport, p.src, p.sport)
            s = sessions.get(key)
            if s is None or s.state is FastPathState.HANDED_OFF:
                continue  # the normal path has buffers: it may acknowledge what it holds
            if was.get(key) is s.state is FastPathState.SERVER_OPENING:
                self._violate(f"{where}: the fast path sent the client a segment "
                              f"({p.flags:#x}) while the server side was opening")
            if not p.flags & ACK:
                continue
            acked = sdiff(p.ack, seq_add(s.proxy.client.rcv_isn, 1))
            if acked > self.server_acked.get(key, 0):
                self._violate(f"{where}: fast path in {s.state.name} acknowledged {acked} "
                              f"client octets, the server only "
                              f"{self.server_acked.get(key, 0)}")


# --- one run ------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    gw: CheckedGateway
    net: Network
    plan: ClientPlan


def run_case(case: Case, *, prepare: Callable[[Network], None] | None = None) -> Outcome:
    def isn_source(laddr: bytes, lport: int, raddr: bytes, rport: int, now: float) -> int:
        return case.g if lport == VPORT else case.gs

    gw = CheckedGateway(default_config(), isn_source=isn_source,
                        core=CoreSettings(rto_min=0.2, linger=0.5))
    endpoint_isns = itertools.chain([case.c_isn], itertools.repeat(case.s_isn))
    net = Network(gw, seed=case.seed, client_leg=case.client_leg, server_leg=case.server_leg,
                  isn=lambda: next(endpoint_isns))
    behaviour = ServerBehaviour(response_size=lambda head: case.response_size)
    for ip in SERVER_IPS:
        net.add_server(ip, SERVER_PORT, behaviour)
    plan = ClientPlan(request=case.request, writes=case.writes,
                      swap_first_two_data=case.swap)
    net.start_client(VIP, VPORT, plan)
    if prepare is not None:
        prepare(net)
    net.run(until=600.0)
    return Outcome(case, gw, net, plan)


def server_streams(net: Network) -> dict[tuple[bytes, int], bytes]:
    """What each server connection sent, rebuilt from the server->gateway tap (every packet
    the servers put on the link, before any impairment, retransmissions included)."""
    isn: dict[tuple[bytes, int], int] = {}
    pieces: dict[tuple[bytes, int], dict[int, bytes]] = {}
    for _, raw in net.s2g.tap:
        p = codec.parse(raw)
        key = (p.src, p.dport)
        if p.flags & SYN:
            isn[key] = p.seq
        elif len(p.payload) and key in isn:
            off = sdiff(p.seq, seq_add(isn[key], 1))
            pieces.setdefault(key, {})[off] = bytes(p.payload)
    out: dict[tuple[bytes, int], bytes] = {}
    for key in isn:
        buf = bytearray()
        for off, data in sorted(pieces.get(key, {}).items()):
            if off > len(buf):
                break  # a hole: only what is contiguous counts
            buf[off:off + len(data)] = data
        out[key] = bytes(buf)
    return out


def first_diff(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


def response_stream(o: Outcome) -> bytes:
    sent = [b for b in server_streams(o.net).values() if b]
    return sent[0] if len(sent) == 1 else b""


# --- the checks ------------------------------------------------------------------------------


def stream_problems(o: Outcome) -> list[str]:
    """Client got exactly the server's bytes; exactly one server got exactly the request."""
    problems = []
    res = o.net.results[o.plan.port]
    got = bytes(res.received)
    requests = [bytes(v) for v in o.net.requests_seen.values() if v]
    if requests != [o.case.request]:
        problems.append(f"servers received {[len(r) for r in requests]} octets, expected one "
                        f"request of {len(o.case.request)}")
    sent = [b for b in server_streams(o.net).values() if b]
    if len(sent) != 1:
        problems.append(f"{len(sent)} server connections sent data, expected 1")
        return problems
    resp = sent[0]
    if resp.partition(b"\r\n\r\n")[2] != response_body(o.case.response_size):
        problems.append("the server did not send the planned body (the oracle is off)")
    if got != resp:
        problems.append(f"client got {len(got)} of {len(resp)} octets, first difference at "
                        f"{first_diff(got, resp)}")
    if res.reset:
        problems.append("the client saw a RST")
    return problems


def path_problems(o: Outcome) -> list[str]:
    """The path follows from the first request data the gateway saw; with a clean client
    leg, from the plan alone."""
    st_ = o.gw.stats
    handed = st_.sessions_handed_off > 0
    got = ("normal", next(iter(st_.handoffs))) if handed else ("fast", "NONE")
    seen = o.gw.first_data.get(CLIENT_KEY)
    if seen is None:
        return ["the gateway never saw request data"]
    seq, payload = seen
    if seq != seq_add(o.case.c_isn, 1):
        want = ("normal", "OUT_OF_ORDER_FIRST_DATA")
    elif HEAD_END not in payload:
        want = ("normal", "PARTIAL_REQUEST")
    else:
        want = ("fast", "NONE")
    problems = []
    if got != want:
        problems.append(f"path {got}, the first data seen ({len(payload)} octets at client "
                        f"offset {sdiff(seq, seq_add(o.case.c_isn, 1))}) means {want}")
    if o.case.client_leg == Impairment():
        planned = ("fast", "NONE") if not o.case.writes else \
            ("normal", "OUT_OF_ORDER_FIRST_DATA" if o.case.swap else "PARTIAL_REQUEST")
        if got != planned:
            problems.append(f"path {got} on a clean client leg, the plan means {planned}")
    if len(st_.handoffs) > 1 or sum(st_.handoffs.values()) > 1:
        problems.append(f"handoffs {dict(st_.handoffs)} for one session")
    return problems


def live_record_problems(o: Outcome) -> list[str]:
    """No session record is left at the end, and none was left for the idle timeout to
    sweep up: the tables emptied while the close itself was being handled (linger, TIME-WAIT)."""
    problems = [f"{n} live {name} record(s) at the end"
                for name, n in o.gw.live_records().items()]
    idle = o.gw.config.idle_timeout
    if not problems and (o.gw.emptied_at is None or o.gw.emptied_at >= idle):
        problems.append(f"the records were only retired at t={o.gw.emptied_at}, by the "
                        f"{idle} s idle timeout")
    return problems


def continuity_problems(o: Outcome) -> list[str]:
    """Everything the gateway sent the client lives in one sequence space: the SYN/ACK's ISN
    G; segments within G+1 .. G+1+len(response)+FIN, laid out from G+1 exactly the response;
    ACKs within the client's request (+ FIN) from its ISN; no RST. After a handoff also no
    segment starts beyond what was already sent (the normal path sends in order; only the
    fast path relays the server's own gaps). Checked for every session: a handed-off one
    must look to the client like one that never left the fast path."""
    problems: list[str] = []
    resp = response_stream(o)
    req_len = len(o.case.request)
    g1, c1 = seq_add(o.case.g, 1), seq_add(o.case.c_isn, 1)
    handed_off = o.gw.stats.sessions_handed_off > 0
    synack_isns = set()
    sent = bytearray(len(resp))
    covered = [False] * len(resp)
    nxt = 0
    for t, raw in o.net.g2c.tap:
        p = codec.parse(raw)
        if p.flags & RST:
            problems.append(f"t={t:.4f}: RST to the client")
            continue
        if p.flags & SYN:
            synack_isns.add(p.seq)
            continue
        lo = sdiff(p.seq, g1)
        data = bytes(p.payload)
        hi = lo + len(data) + (1 if p.flags & FIN else 0)
        if lo < 0 or hi > len(resp) + 1:
            problems.append(f"t={t:.4f}: segment at offset {lo}..{hi} outside the "
                            f"{len(resp)}-octet response space")
        elif handed_off and lo > nxt:
            problems.append(f"t={t:.4f}: segment at offset {lo} after a handoff, only "
                            f"{nxt} octets sent before it")
        else:
            end = min(lo + len(data), len(resp))
            sent[lo:end] = data[:end - lo]
            covered[lo:end] = [True] * (end - lo)
        nxt = max(nxt, hi)
        if p.flags & ACK and not 0 <= sdiff(p.ack, c1) <= req_len + 1:
            problems.append(f"t={t:.4f}: ACK at offset {sdiff(p.ack, c1)} outside the "
                            f"{req_len}-octet request space")
    if not all(covered) or bytes(sent) != resp:
        problems.append("the octets sent to the client, laid out from G+1, are not the "
                        f"response (first hole or difference at {first_hole(sent, covered, resp)})")
    if synack_isns != {o.case.g}:
        problems.append(f"SYN/ACKs with ISNs {sorted(synack_isns)}, expected only "
                        f"{o.case.g}")
    return problems[:20]


def first_hole(sent: bytearray, covered: list[bool], resp: bytes) -> int:
    return next((i for i, c in enumerate(covered) if not c or sent[i] != resp[i]), len(resp))


def all_problems(o: Outcome) -> dict[str, list[str]]:
    found = {"streams": stream_problems(o), "path": path_problems(o),
             "records": list(o.gw.violations), "continuity": continuity_problems(o),
             "live_records": live_record_problems(o)}
    return {k: v for k, v in found.items() if v}


# --- the properties --------------------------------------------------------------------------


@settings(max_examples=400)
@given(case=cases(split=False))
def test_whole_request_streams_are_byte_exact_and_records_stay_clean(case: Case) -> None:
    o = run_case(case)
    assert all_problems(o) == {}, case


@settings(max_examples=400)
@given(case=cases(split=True))
def test_split_or_reordered_request_ends_on_normal_path_byte_exact_and_continuous(
        case: Case) -> None:
    o = run_case(case)
    assert all_problems(o) == {}, case
    if case.client_leg == Impairment():
        assert o.gw.stats.sessions_handed_off == 1


# --- companions: each check catches a broken core -------------------------------------------

CLEAN = Impairment()
WHOLE = Case(seed=7, client_leg=CLEAN, server_leg=CLEAN,
             request=make_request("index.html", 40), writes=(), swap=False,
             response_size=20_000, c_isn=MOD - 100, s_isn=MOD - 2000, g=MOD - 7,
             gs=MOD - 1500)
SPLIT = Case(seed=7, client_leg=CLEAN, server_leg=CLEAN,
             request=make_request("index.html", 40), writes=(10,), swap=False,
             response_size=20_000, c_isn=MOD - 100, s_isn=MOD - 2000, g=MOD - 7,
             gs=MOD - 1500)


def broken(case: Case, check: Callable[[Outcome], list[str]],
           monkeypatch: pytest.MonkeyPatch, breakage: Callable[[], None]) -> list[str]:
    """The check passes on the reference core, and reports problems once it is broken."""
    assert check(run_case(case)) == []
    with monkeypatch.context():
        breakage()
        return check(run_case(case))


def test_byte_exact_check_fails_when_the_splice_shifts_client_seqs_by_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def breakage() -> None:
        monkeypatch.setattr(translate, "seq_to_server",
                            lambda sp, seq: (seq + sp.c2s_seq + 1) & 0xFFFFFFFF)

    assert broken(WHOLE, stream_problems, monkeypatch, breakage)


def test_continuity_check_fails_when_the_handoff_does_not_copy_the_sending_isn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def obtain(client: object) -> tuple[int, int]:
        rcv_isn, snd_isn = spec_handoff.obtain_isns(client)  # type: ignore[arg-type]
        return rcv_isn, (snd_isn + 4096) & 0xFFFFFFFF

    def breakage() -> None:
        monkeypatch.setattr(spec_handoff, "handoff",
                            functools.partial(spec_handoff.handoff, obtain=obtain))

    assert broken(SPLIT, continuity_problems, monkeypatch, breakage)


def test_ack_safety_check_fails_when_the_fast_path_acks_the_held_request_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hold = FastPath._hold_and_open

    def hold_and_ack(self: FastPath, s: FastSession, pkt: codec.Packet, now: float
                     ) -> list[Action]:
        out = hold(self, s, pkt, now)
        c = s.proxy.client
        ack = codec.build(version=s.version, src=s.vip[0], dst=s.client[0], sport=s.vip[1],
                          dport=s.client[1], seq=seq_add(c.snd_isn, 1),
                          ack=seq_add(pkt.seq, len(pkt.payload)), flags=ACK, window=0xFFFF)
        return [*out, self.gw.emit("client", ack)]

    def breakage() -> None:
        monkeypatch.setattr(FastPath, "_hold_and_open", hold_and_ack)

    problems = broken(WHOLE, lambda o: o.gw.violations, monkeypatch, breakage)
    assert any("acknowledged" in p for p in problems), problems


def test_holding_check_fails_when_the_fast_path_keeps_the_request_after_the_splice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    splice = FastPath._splice

    def splice_and_keep(self: FastPath, s: FastSession, pkt: codec.Packet, now: float
                        ) -> list[Action]:
        held = s.proxy.held
        out = splice(self, s, pkt, now)
        if s.proxy.splice is not None:
            s.proxy.held = held
        return out

    def breakage() -> None:
        monkeypatch.setattr(FastPath, "_splice", splice_and_keep)

    problems = broken(WHOLE, lambda o: o.gw.violations, monkeypatch, breakage)
    assert any("held in SPLICED" in p for p in problems), problems


def test_path_check_fails_when_a_whole_request_is_handed_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def breakage() -> None:
        monkeypatch.setattr(eligibility, "request_head_complete", lambda payload: False)

    assert broken(WHOLE, path_problems, monkeypatch, breakage)


def test_live_record_check_fails_when_spliced_sessions_are_never_retired(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def breakage() -> None:
        monkeypatch.setattr(Gateway, "retire_fast", lambda self, s: None)

    assert broken(WHOLE, live_record_problems, monkeypatch, breakage)


# --- known bugs ------------------------------------------------------------------------------


def drop_first(n: int, flags: int) -> Callable[[bytes], list[bytes]]:
    """A Link.mangle that loses the first ``n`` packets carrying all of ``flags``."""
    left = [n]

    def mangle(packet: bytes) -> list[bytes]:
        if left[0] and codec.parse(packet).flags & flags == flags:
            left[0] -= 1
            return []
        return [packet]

    return mangle


def test_fast_path_relays_the_clients_fin_until_the_server_acknowledged_it() -> None:
    # This used to retire the session on a linger timer counted from the second FIN, so the
    # client's FIN, lost twice on the server leg, was then dropped as no_session.
    case = WHOLE

    def lose_two_client_fins(net: Network) -> None:
        net.g2s.mangle = drop_first(2, FIN | ACK)

    o = run_case(case, prepare=lose_two_client_fins)
    assert o.gw.stats.drops.get("no_session", 0) == 0, dict(o.gw.stats.drops)
    assert all_problems(o) == {}


def test_fast_path_opens_the_server_side_again_soon_after_its_syn_is_lost() -> None:
    # This used to keep the 300 s idle deadline on entering SERVER_OPENING.
    def lose_first_server_syn(net: Network) -> None:
        net.g2s.mangle = drop_first(1, SYN)

    o = run_case(WHOLE, prepare=lose_first_server_syn)
    assert o.gw.slow_opens == []
    assert all_problems(o) == {}

"""Cross-leg pairing and judges: pass on every simulator scenario of the reference core, and
each judge fails on a trace that breaks it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conformance import cross_checks, violations
from conformance.checker import CheckReport, check_pcaps
from conformance.cross_checks import Pair, classify, pair
from conformance.flows import read_leg
from conformance.policy import Policy, default_policy, loads_policy
from conformance.properties import KINDS, PROPERTIES, Context, Finding
from conformance.violations import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Convo,
    Frame,
    Traffic,
    craft_proxied,
    simulate,
)
from reference.gateway.scenarios import IPV6_CONFIG, SCENARIOS
from spec.topology import CLIENT_IP, GW_SERVER_IP, SERVER_IPS, VIP

CROSS = ("cross.pairing", "cross.stream_c2s", "cross.stream_s2c", "cross.delayed_binding",
         "cross.selection", "cross.path", "cross.continuity", "cross.ack_safety",
         "cross.fin_rst")
M32 = 0xFFFFFFFF


def check(tr: Traffic, tmp: Path, kind: str = "reference", policy: bool | Policy = True
          ) -> CheckReport:
    violations.write_traffic(tr, tmp)
    pol = policy if isinstance(policy, Policy) else \
        default_policy(l7=KINDS[kind].l7) if policy else None
    return check_pcaps(tmp / "client.pcap", tmp / "server.pcap", policy=pol, kind=kind)


def verdicts(rep: CheckReport, pid: str) -> list[str]:
    return [f.verdict for p in rep.pairs for f in p.findings if f.property == pid]


def finding(rep: CheckReport, pid: str, verdict: str = "fail") -> Finding:
    return next(f for p in rep.pairs for f in p.findings
                if f.property == pid and f.verdict == verdict)


def cross_fails(rep: CheckReport) -> list[str]:
    return [f"{f.property}: {f.detail}" for p in rep.pairs for f in p.findings
            if f.verdict == "fail"]


def test_every_cross_property_is_registered() -> None:
    for pid in CROSS:
        assert PROPERTIES[pid].scope == "cross"
        assert PROPERTIES[pid].judge is cross_checks.JUDGES[pid][2]


# ---------------------------------------------------------------------------- good traces


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_passes_and_is_classified(name: str, tmp_path: Path) -> None:
    sc = SCENARIOS[name]
    tr = simulate(sc)
    # the policy is the config the simulated gateway ran
    rep = check(tr, tmp_path, policy=loads_policy(IPV6_CONFIG) if sc.ipv6 else True)
    assert not cross_fails(rep), cross_fails(rep)
    assert len(rep.pairs) == 1 and rep.pairs[0].server is not None, rep.pairs[0].how
    want = "spliced" if sc.expect_path == "fast" else "handed-off"
    assert rep.path_classes() == [want]
    expect_na = {"cross.ack_safety"} if want != "spliced" else set()
    for pid in CROSS:
        v = verdicts(rep, pid)
        assert v == (["n/a"] if pid in expect_na else ["pass"]), (pid, v, rep.render())


def test_a_handoff_on_a_proxy_kind_is_proxied(tmp_path: Path) -> None:
    rep = check(simulate("split_request_2"), tmp_path, kind="haproxy-http")
    assert rep.path_classes() == ["proxied"]
    assert verdicts(rep, "cross.continuity") == ["n/a"]
    assert not cross_fails(rep)


def test_a_crafted_full_proxy_is_proxied(tmp_path: Path) -> None:
    rep = check(craft_proxied(), tmp_path, kind="haproxy-http")
    assert rep.path_classes() == ["proxied"]
    assert rep.ok, rep.render()
    assert "proxied" in finding(rep, "cross.path", "pass").detail
    assert verdicts(rep, "cross.ack_safety") == ["n/a"]
    # the same legs from a gateway that splices: a proxied connection was handed off
    rep = check(craft_proxied(), tmp_path / "ref", kind="reference")
    assert rep.path_classes() == ["handed-off"]
    assert verdicts(rep, "cross.continuity") == ["pass"]


def test_a_super_frame_relayed_whole_is_still_spliced(tmp_path: Path) -> None:
    """GSO/GRO: the gateway relays two server segments as one super-frame (IP length above
    the MTU); a coalesced segment within the MTU is what a proxy does."""
    tr = simulate("eligible_request", plan=violations.ClientPlan(
        request=violations.request(size=5000)))
    data = [k for k, f in enumerate(tr.client) if tr.from_gw("client", f) and f.payload]
    a, b = tr.client[data[0]], tr.client[data[1]]
    tr.client[data[0]] = a.changed(payload=a.payload + b.payload)
    del tr.client[data[1]]
    rep = check(tr, tmp_path)
    assert rep.path_classes() == ["spliced"] and rep.ok, rep.render()
    tr = simulate("eligible_request", plan=violations.ClientPlan(
        request=violations.request(size=5000)))
    a, b = tr.client[data[0]], tr.client[data[1]]
    tr.client[data[0]] = a.changed(payload=a.payload[:700])
    tr.client[data[1]] = b.changed(seq=(b.seq - 748) & M32,
                                   payload=a.payload[700:] + b.payload[:100])
    tr.client.insert(data[1] + 1, b.changed(seq=(b.seq + 100) & M32, payload=b.payload[100:]))
    rep = check(tr, tmp_path / "coalesced")
    assert rep.path_classes() == ["handed-off"]
    assert verdicts(rep, "cross.ack_safety") == ["n/a"]


def test_concurrent_identical_requests_pair_one_to_one(tmp_path: Path) -> None:
    tr = simulate("eligible_request", extra_clients=7)
    rep = check(tr, tmp_path)
    assert len(rep.pairs) == 8
    assert all(p.server is not None for p in rep.pairs)
    assert len({p.server for p in rep.pairs}) == 8
    assert not cross_fails(rep), cross_fails(rep)
    assert rep.path_classes() == ["spliced"] * 8


def test_pairing_uses_responses_when_requests_are_identical(tmp_path: Path) -> None:
    """Clients pair with the server connection whose response they received, even when
    server-leg connections are listed in another order."""
    tr = simulate("eligible_request", extra_clients=3)
    violations.write_traffic(tr, tmp_path)
    cl = read_leg(tmp_path / "client.pcap", "client")
    sl = read_leg(tmp_path / "server.pcap", "server")
    sl.conns.reverse()
    for p in pair(cl, sl, Context(policy=default_policy())):
        assert p.client is not None and p.server is not None
        assert p.server.stream_s2c == p.client.stream_s2c
        assert p.server.stream_c2s == p.client.stream_c2s


# ---------------------------------------------------------------------------- failing


def test_pairing_fails_when_an_answered_request_has_no_server_connection(tmp_path: Path
                                                                         ) -> None:
    rep = check(violations.v_pairing(), tmp_path)
    f = finding(rep, "cross.pairing")
    assert "no server-leg connection carries them" in f.detail
    assert verdicts(rep, "cross.pairing").count("fail") == 1


def test_pairing_na_when_the_gateway_answers_an_error_itself(tmp_path: Path) -> None:
    cl = Convo((CLIENT_IP, 40001), (VIP, 80), 1000, 7000)
    cl.handshake(0.0)
    cl.send(0.002, True, b"GARBAGE\r\n\r\n", ACK | PSH)
    cl.send(0.003, False, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            ACK | PSH | FIN)
    rep = check(Traffic(cl.frames, []), tmp_path)
    assert verdicts(rep, "cross.pairing") == ["n/a"]
    assert "HTTP 400" in rep.pairs[0].findings[0].detail


def test_pairing_na_for_a_refused_connection_and_fail_for_an_orphan(tmp_path: Path) -> None:
    cl = Convo((CLIENT_IP, 40001), (VIP, 80), 1000, 0)
    cl.send(0.0, True, flags=SYN, mss=1460)
    cl.send(0.001, False, flags=RST | ACK, ack=1001)
    sv = Convo((GW_SERVER_IP, 40002), (SERVER_IPS[0], 80), 5000, 9000)
    sv.handshake(0.0)
    sv.send(0.002, True, b"GET /smuggled HTTP/1.1\r\n\r\n", ACK)
    rep = check(Traffic(cl.frames, sv.frames), tmp_path)
    assert sorted(verdicts(rep, "cross.pairing")) == ["fail", "n/a"]
    assert "that no client-leg connection sent" in finding(rep, "cross.pairing").detail


def test_stream_c2s_fails_on_a_changed_request_byte(tmp_path: Path) -> None:
    f = finding(check(violations.v_stream_c2s(), tmp_path), "cross.stream_c2s")
    assert "offset 5" in f.detail and "frame" in f.detail


def test_stream_s2c_fails_on_a_changed_response_byte(tmp_path: Path) -> None:
    f = finding(check(violations.v_stream_s2c(), tmp_path), "cross.stream_s2c")
    assert "differs at stream offset" in f.detail
    assert {leg for leg, _ in f.packets} == {"client", "server"}


def test_stream_s2c_fails_on_extra_response_bytes(tmp_path: Path) -> None:
    tr = simulate("eligible_request")
    i = max(k for k, f in enumerate(tr.client) if tr.from_gw("client", f) and f.payload)
    f = tr.client[i]
    tr.client[i] = f.changed(payload=f.payload + b"EXTRA")
    # the client's later ACKs and the FIN move with the bytes; a gateway added them
    tr.client = [g.changed(seq=(g.seq + 5) & M32) if tr.from_gw("client", g) and k > i
                 else g.changed(ack=(g.ack + 5) & M32) if not tr.from_gw("client", g)
                 and k > i and g.flags & ACK else g for k, g in enumerate(tr.client)]
    rep = check(tr, tmp_path)
    assert "beyond" in finding(rep, "cross.stream_s2c").detail


def test_stream_unknown_across_a_capture_gap(tmp_path: Path) -> None:
    tr = simulate("eligible_request", plan=violations.ClientPlan(
        request=violations.request(size=5000)))
    i = [k for k, f in enumerate(tr.client) if tr.from_gw("client", f) and f.payload][1]
    del tr.client[i]  # lost by the capture, not by the network: the client ACKs past it
    rep = check(tr, tmp_path)
    assert verdicts(rep, "cross.stream_s2c") == ["unknown"]
    assert verdicts(rep, "cross.continuity") == ["pass"]


def test_delayed_binding_fails_on_an_early_server_syn(tmp_path: Path) -> None:
    rep = check(violations.v_delayed_binding(), tmp_path)
    assert "before the client's first data" in finding(rep, "cross.delayed_binding").detail
    rep = check(violations.v_delayed_binding(), tmp_path / "tcp", kind="haproxy-tcp")
    assert verdicts(rep, "cross.delayed_binding") == ["n/a"]


def test_selection_fails_on_the_wrong_pool_and_is_na_without_policy(tmp_path: Path) -> None:
    rep = check(violations.v_selection(), tmp_path)
    assert "203.0.113.13:80 is not allowed" in finding(rep, "cross.selection").detail
    rep = check(violations.v_selection(), tmp_path / "np", policy=False)
    assert verdicts(rep, "cross.selection") == ["n/a"]
    # a gateway without L7 may pick any pool's server
    rep = check(violations.v_selection(), tmp_path / "l4", kind="netfilter")
    assert verdicts(rep, "cross.selection") == ["pass"]


def test_continuity_fails_when_acks_go_back_after_a_handoff(tmp_path: Path) -> None:
    f = finding(check(violations.v_continuity(), tmp_path), "cross.continuity")
    assert "went back" in f.detail


def test_continuity_fails_on_a_second_synack_with_another_isn(tmp_path: Path) -> None:
    tr = violations.repair_timestamps(simulate("split_request_2"))
    i = next(k for k, f in enumerate(tr.client) if f.flags & SYN and f.flags & ACK)
    f = tr.client[i]
    # the normal path answers with a fresh ISN instead of the fast path's (claim 1, C1.g)
    j = next(k for k, g in enumerate(tr.client) if tr.from_gw("client", g) and g.payload)
    g = tr.client[j]
    tr.client.insert(j, replace(f.changed(seq=(f.seq + 777) & M32), t=g.t))
    f = finding(check(tr, tmp_path), "cross.continuity")
    assert "second SYN-ACK" in f.detail


def test_continuity_fails_when_the_gateway_skips_bytes(tmp_path: Path) -> None:
    tr = violations.repair_timestamps(simulate("split_request_2"))
    gw_data = [k for k, f in enumerate(tr.client) if tr.from_gw("client", f) and f.payload]
    isn = next(f.seq for f in tr.client if f.flags & SYN and f.flags & ACK)
    for k in range(len(tr.client)):
        f = tr.client[k]
        if tr.from_gw("client", f) and not f.flags & SYN and k >= gw_data[0]:
            tr.client[k] = f.changed(seq=(f.seq + 300) & M32)
        elif not tr.from_gw("client", f) and f.flags & ACK and not f.flags & SYN:
            tr.client[k] = f.changed(ack=(isn + 1) & M32)  # the client waits for byte 0
    rep = check(tr, tmp_path)
    assert "skips offsets [0, 300)" in finding(rep, "cross.continuity").detail


def test_ack_safety_fails_on_an_early_ack_of_the_held_request(tmp_path: Path) -> None:
    rep = check(violations.v_ack_safety(), tmp_path)
    assert rep.path_classes() == ["spliced"]
    assert "server had acknowledged only 0" in finding(rep, "cross.ack_safety").detail


def test_fin_rst_fails_on_the_haproxy_truncation(tmp_path: Path) -> None:
    rep = check(violations.v_fin_truncation(), tmp_path, kind="haproxy-http")
    f = finding(rep, "cross.fin_rst")
    assert "truncation" in f.detail
    assert verdicts(rep, "cross.stream_s2c") == ["pass"]  # a prefix: the close is the bug


def test_fin_rst_fails_on_a_spliced_fin_moved_early(tmp_path: Path) -> None:
    tr = simulate("eligible_request", plan=violations.ClientPlan(
        request=violations.request(size=5000)))
    data = [k for k, f in enumerate(tr.client) if tr.from_gw("client", f) and f.payload]
    cut = data[-1]
    gone = len(tr.client[cut].payload)
    out = []
    for k, f in enumerate(tr.client):
        if k == cut:  # the last 740 bytes ride with the server's FIN: relay the FIN alone
            out.append(f.changed(payload=b""))
            continue
        if k > cut and tr.from_gw("client", f):
            f = f.changed(seq=(f.seq - gone) & M32)
        elif k > cut and f.flags & ACK:
            f = f.changed(ack=(f.ack - gone) & M32)
        out.append(f)
    tr.client = out
    assert "truncation" in finding(check(tr, tmp_path), "cross.fin_rst").detail


def test_fin_rst_fails_when_a_rst_is_not_propagated(tmp_path: Path) -> None:
    rep = check(violations.v_rst_not_propagated(), tmp_path)
    assert "was not followed by a RST or FIN" in finding(rep, "cross.fin_rst").detail


def test_fin_rst_fails_when_the_gateway_resets_only_one_side(tmp_path: Path) -> None:
    tr = simulate("eligible_request", plan=violations.ClientPlan(
        request=violations.request(size=200_000)))
    i = [k for k, f in enumerate(tr.client) if tr.from_gw("client", f) and f.payload][5]
    f = tr.client[i]
    rst = f.changed(flags=RST | ACK, payload=b"", tsval=None, tsecr=None)
    t = f.t
    tr.client = [*tr.client[:i], rst]
    tr.server = [g for g in tr.server if g.t <= t]
    rep = check(tr, tmp_path)
    assert "left the server peer open" in finding(rep, "cross.fin_rst").detail


def test_fin_rst_lets_a_proxy_keep_a_finished_server_connection(tmp_path: Path) -> None:
    """A full proxy may keep the server connection for reuse when the client resets after
    the exchange is complete; a splice may not (it has nothing to reuse)."""
    tr = craft_proxied()
    last_fin = max(k for k, f in enumerate(tr.client) if f.flags & FIN)
    f = tr.client[last_fin]
    tr.client[last_fin] = f.changed(flags=RST | ACK)  # the client resets instead of FIN
    del tr.client[last_fin + 1:]
    gw_fin = next(k for k, f in enumerate(tr.server) if tr.from_gw("server", f)
                  and f.flags & FIN)
    del tr.server[gw_fin:]  # the proxy keeps its server connection
    rep = check(tr, tmp_path, kind="haproxy-http")
    assert verdicts(rep, "cross.fin_rst") == ["pass"], rep.render()


def test_classify_helper(tmp_path: Path) -> None:
    assert classify(Pair(None, None, "nothing")) == "none"
    violations.write_traffic(craft_proxied(), tmp_path)
    cl = read_leg(tmp_path / "client.pcap", "client")
    sl = read_leg(tmp_path / "server.pcap", "server")
    (p,) = pair(cl, sl)
    assert classify(p) == "proxied"
    assert classify(p, KINDS["reference"]) == "handed-off"
    assert classify(p, KINDS["nginx-http"]) == "proxied"


def test_frames_roundtrip_unchanged() -> None:
    """A parsed frame written back unchanged keeps its bytes (mutations are the only
    differences between a corpus trace and its source)."""
    tr = simulate("unsupported_option")
    for f in tr.client:
        assert Frame.parse(f.t, f.ip_bytes()).ip_bytes() == f.ip_bytes()


def test_derived_views_are_cached_and_forgotten_on_rebuild(tmp_path: Path) -> None:
    from conformance.flows import rebuild
    from tests.conformance import Trace

    c = read_leg(Trace().conversation().write(tmp_path / "c.pcap")).conns[0]
    data = cross_checks._data(c, True)
    assert data and cross_checks._data(c, True) is data  # derived once
    acked = cross_checks._peer_data_acked(c, True)
    assert acked == len(c.stream_c2s) > 0
    # drop what the client sent after its handshake ACK: a stale view would still list it
    keep = [i for i, s in enumerate(c.segs) if not (c.from_client[i] and s.payload)]
    c.segs = [c.segs[i] for i in keep]
    c.from_client = bytearray(c.from_client[i] for i in keep)
    rebuild(c)
    assert cross_checks._data(c, True) == [] and c.stream_c2s == b""
    assert cross_checks._first_data_time(c, True) is None

"""Named end-to-end scenarios for ``fastpath simulate``: one virtual client, the gateway core
and three virtual servers on the in-memory network, each judged byte-exact or not."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from reference.gateway.config import GatewayConfig, default_config, loads
from reference.gateway.gateway import CoreSettings, Gateway
from reference.gateway.sim import ClientPlan, Impairment, Network, ServerBehaviour, response_body
from spec.topology import VIP, VPORT

MiB = 1 << 20
LOSSY = Impairment(loss=0.02, duplicate=0.02, reorder=0.05)


def request(path: str = "/index.html", size: int | None = None) -> bytes:
    target = f"/size/{size}" if size is not None else path
    return f"GET {target} HTTP/1.1\r\nHost: vip.example\r\nUser-Agent: sim\r\n\r\n".encode()


def size_from_head(head: bytes) -> int:
    """Servers answer /size/N with N octets, anything else with 1000."""
    target = head.split(b" ", 2)[1]
    if target.startswith(b"/size/"):
        return int(target[6:])
    return 1000


@dataclass
class Scenario:
    name: str
    description: str
    expect_path: str
    """'fast' or 'normal'."""
    expect_reason: str = "NONE"
    plan: ClientPlan = field(default_factory=lambda: ClientPlan(request=request()))
    client_leg: Impairment = field(default_factory=Impairment)
    server_leg: Impairment = field(default_factory=Impairment)
    near_wrap: bool = False
    server: ServerBehaviour = field(default_factory=lambda: ServerBehaviour(
        response_size=size_from_head))
    expect_reset: str = ""
    """'client' when the client must see a RST, 'server' when a server must."""
    ipv6: bool = False
    """Run over IPv6 (documentation prefix 2001:db8::/32) with :data:`IPV6_CONFIG`."""


def _scenarios() -> list[Scenario]:
    split = ClientPlan(request=request(), writes=(10,))
    return [
        Scenario("eligible_request", "whole request in one segment: spliced", "fast"),
        Scenario("split_request_2", "request written in 2 segments: partial request line",
                 "normal", "PARTIAL_REQUEST", plan=split),
        Scenario("split_request_3", "request written in 3 segments", "normal",
                 "PARTIAL_REQUEST", plan=ClientPlan(request=request(), writes=(5, 20))),
        Scenario("first_data_out_of_order", "the second segment arrives first", "normal",
                 "OUT_OF_ORDER_FIRST_DATA",
                 plan=ClientPlan(request=request(), writes=(10,), swap_first_two_data=True)),
        Scenario("fragmented_request", "the request arrives as IP fragments", "normal",
                 "IP_FRAGMENT", plan=ClientPlan(request=request(), fragment_first_data=48)),
        Scenario("unsupported_option", "an unknown TCP option on the request", "normal",
                 "UNSUPPORTED_OPTION", plan=ClientPlan(request=request(), unknown_option=True)),
        Scenario("impaired_client_leg_fast", "2% loss, duplication, reordering on the client "
                 "leg, 300 KiB response", "fast", client_leg=LOSSY,
                 plan=ClientPlan(request=request(size=300 * 1024))),
        Scenario("impaired_server_leg_fast", "the same on the server leg", "fast",
                 server_leg=LOSSY, plan=ClientPlan(request=request(size=300 * 1024))),
        Scenario("impaired_both_legs_normal", "impairments on both legs after a handoff",
                 "normal", "PARTIAL_REQUEST", client_leg=LOSSY, server_leg=LOSSY,
                 plan=ClientPlan(request=request(size=300 * 1024), writes=(10,))),
        Scenario("isn_near_wrap_fast", "every ISN within 3000 of 2^32", "fast",
                 near_wrap=True, plan=ClientPlan(request=request(size=64 * 1024))),
        Scenario("isn_near_wrap_normal", "every ISN near 2^32, after a handoff", "normal",
                 "PARTIAL_REQUEST", near_wrap=True,
                 plan=ClientPlan(request=request(size=64 * 1024), writes=(10,))),
        Scenario("large_response_fast", "10 MiB response, spliced", "fast",
                 plan=ClientPlan(request=request(size=10 * MiB))),
        Scenario("large_response_normal", "10 MiB response, proxied after a handoff",
                 "normal", "PARTIAL_REQUEST",
                 plan=ClientPlan(request=request(size=10 * MiB), writes=(10,))),
        Scenario("client_closes_first", "the client closes as soon as it has the response",
                 "fast", server=ServerBehaviour(response_size=size_from_head,
                                                close_after_response=False)),
        Scenario("server_closes_first", "the server closes after the response", "fast"),
        Scenario("rst_from_client", "the client aborts mid-response", "fast",
                 plan=ClientPlan(request=request(size=200 * 1024), reset_after=20_000),
                 expect_reset="server"),
        Scenario("rst_from_server", "the server resets after the request", "fast",
                 server=ServerBehaviour(response_size=size_from_head,
                                        reset_after_request=True),
                 expect_reset="client"),
    ]


IPV6_CONFIG = """
[gateway]
server_address = "203.0.113.1"
server_address6 = "2001:db8:2::1"

[[service]]
name = "web6"
vip = "2001:db8::10"
port = 80
default_pool = "web6"

[pool.web6]
servers = ["[2001:db8:2::11]:80", "[2001:db8:2::12]:80", "[2001:db8:2::13]:80"]
"""
IPV6_CLIENT, IPV6_VIP = "2001:db8:1::2", "2001:db8::10"


def _ipv6_scenarios() -> list[Scenario]:
    return [
        Scenario("ipv6_eligible_request", "IPv6: whole request, spliced", "fast", ipv6=True,
                 plan=ClientPlan(request=request(size=100_000))),
        Scenario("ipv6_split_request", "IPv6: split request, handed off", "normal",
                 "PARTIAL_REQUEST", ipv6=True, client_leg=LOSSY,
                 plan=ClientPlan(request=request(size=100_000), writes=(10,))),
    ]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in _scenarios() + _ipv6_scenarios()}


@dataclass
class ScenarioResult:
    name: str
    path: str
    reason: str
    bytes_client_to_server: int
    bytes_server_to_client: int
    byte_exact: bool
    verdict: str
    detail: str
    seconds: float
    server: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    """The gateway's counters at the end (``Gateway.stats_json``)."""

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run(sc: Scenario, *, seed: int = 1, config: GatewayConfig | None = None) -> ScenarioResult:
    t0 = time.perf_counter()
    wrap = (lambda *a: (2**32 - 1500) & 0xFFFFFFFF) if sc.near_wrap else None
    if config is None:
        config = loads(IPV6_CONFIG, "<ipv6 scenario>") if sc.ipv6 else default_config()
    gw = Gateway(config, isn_source=wrap, core=CoreSettings(rto_min=0.2, linger=0.5))
    net = Network(gw, seed=seed, client_leg=sc.client_leg, server_leg=sc.server_leg,
                  isn=(lambda: 2**32 - 1000) if sc.near_wrap else None,
                  client_addr=IPV6_CLIENT if sc.ipv6 else "198.51.100.2")
    for pool in config.pools.values():
        for srv in pool.servers:
            net.add_server(srv.address, srv.port, sc.server)
    plan = replace(sc.plan)  # the network keeps per-run marks on the plan
    net.start_client(IPV6_VIP if sc.ipv6 else VIP, VPORT, plan)
    net.run(until=600.0)
    res = net.results[plan.port]
    st = gw.stats
    handed = st.sessions_handed_off > 0
    path = "normal" if handed else "fast"
    reason = next(iter(st.handoffs), "NONE") if handed else "NONE"
    got = bytes(res.received)
    problems: list[str] = []
    server_name = ""
    head_end = got.find(b"\r\n\r\n")
    if sc.expect_reset:
        ok_reset = res.reset if sc.expect_reset == "client" else _server_reset(net)
        if not ok_reset:
            problems.append(f"expected a RST at the {sc.expect_reset}")
        byte_exact = _prefix_ok(got, sc.plan.request, net)
    else:
        size = size_from_head(sc.plan.request)
        if head_end < 0:
            problems.append(f"no response head (got {len(got)} octets)")
            byte_exact = False
        else:
            server_name = _header(got[:head_end], b"x-server")
            body = got[head_end + 4:]
            byte_exact = body == response_body(size) and _request_ok(sc.plan.request, net)
            if not byte_exact:
                problems.append(f"body {len(body)}/{size} octets, mismatch at "
                                f"{_first_diff(body, response_body(size))}")
    if path != sc.expect_path:
        problems.append(f"path {path}, expected {sc.expect_path}")
    if reason != sc.expect_reason:
        problems.append(f"handoff reason {reason}, expected {sc.expect_reason}")
    live = gw.live_fast() + len(gw.normal_by_client)
    if live and not sc.expect_reset:
        problems.append(f"{live} session record(s) still live at the end")
    verdict = "pass" if byte_exact and not problems else "FAIL"
    return ScenarioResult(
        name=sc.name, path=path, reason=reason,
        bytes_client_to_server=st.bytes_client_to_server,
        bytes_server_to_client=st.bytes_server_to_client, byte_exact=byte_exact,
        verdict=verdict, detail="; ".join(problems) or sc.description,
        seconds=round(time.perf_counter() - t0, 3), server=server_name,
        stats=gw.stats_json())


def _header(head: bytes, name: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip().decode(errors="replace")
    return ""


def _request_ok(req: bytes, net: Network) -> bool:
    """Exactly one server connection received exactly the request."""
    return [bytes(v) for v in net.requests_seen.values() if v] == [req]


def _prefix_ok(got: bytes, req: bytes, net: Network) -> bool:
    seen = [bytes(v) for v in net.requests_seen.values() if v]
    return all(req.startswith(s) or s == req for s in seen)


def _server_reset(net: Network) -> bool:
    return any(c.reset for h in net.server_hosts.values() for c in h.conns.values())


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def run_all(names: list[str] | None = None, *, seed: int = 1,
            progress: Callable[[ScenarioResult], None] | None = None) -> list[ScenarioResult]:
    out = []
    for name in names or list(SCENARIOS):
        r = run(SCENARIOS[name], seed=seed)
        out.append(r)
        if progress:
            progress(r)
    return out


__all__ = ["SCENARIOS", "Scenario", "ScenarioResult", "run", "run_all"]

"""The gateways under test (conformance.adapters): configs from the policy without root, then
each adapter in a real lab (root): requests through the VIP answered byte-exact by the servers
the policy allows, a clean stop, and clear errors for a gateway that does not start.

Lab tests skip, saying why, when not root or without ``ip netns``/``nft``/the gateway's
program; CI runs as root with setup.sh's packages. One lab per test, always taken down.
"""

from __future__ import annotations

import inspect
import itertools
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conformance.adapters import (
    ADAPTERS,
    AdapterError,
    CommandAdapter,
    HAProxyAdapter,
    NetfilterAdapter,
    NginxAdapter,
    ReferenceAdapter,
    dual_stack,
    make_adapter,
    netns_pids,
    policy_toml,
)
from conformance.properties import Capabilities
from reference.gateway.config import GatewayConfig, Pool, Rule, Server, default_config, loads
from reference.gateway.sim import response_body
from reference.lab import Lab
from spec.topology import VIP

try:
    from spec.topology import VIP6
except ImportError:  # a tree without the IPv6 lab
    VIP6 = None  # type: ignore[assignment]

_names = itertools.count(1)


def _policy() -> GatewayConfig:
    """The default config plus a Host rule first: api.example goes to pool api (s3)."""
    base = default_config()
    web = base.services[0]
    rules = (Rule(pool="api", host="api.example"), *web.rules)
    return replace(base, services=(replace(web, rules=rules), *base.services[1:]))


class _FakeLab:
    """Just enough of a Lab for config generation and argument checks (no namespaces)."""

    name = "fake"
    gateway_ns = "fake-g"
    ipv6 = False
    server_addresses = ("203.0.113.11", "203.0.113.12", "203.0.113.13")

    def __init__(self, gateway_kernel: str = "routing") -> None:
        self.gateway_kernel = gateway_kernel


def _configured(adapter: HAProxyAdapter | NginxAdapter, tmp_path: Path,
                policy: GatewayConfig | None = None) -> str:
    adapter.lab = _FakeLab()  # type: ignore[assignment]
    adapter.policy = policy or _policy()
    adapter.work_dir = tmp_path
    adapter.policy_path = tmp_path / "policy.toml"
    return adapter.config()


# --------------------------------------------------------------------------- no root


def test_unknown_adapter_name_lists_the_known_ones() -> None:
    with pytest.raises(AdapterError) as err:
        make_adapter("hapoxy")
    msg = str(err.value)
    assert "'hapoxy'" in msg
    for name in ("reference", "haproxy-http", "haproxy-tcp", "nginx-http", "nginx-stream",
                 "netfilter", "command"):
        assert name in msg and name in ADAPTERS


def test_make_adapter_builds_each_kind_with_its_capabilities() -> None:
    assert isinstance(make_adapter("reference"), ReferenceAdapter)
    tcp = make_adapter("haproxy-tcp")
    assert tcp.name == "haproxy-tcp" and tcp.gateway_kernel == "routing"
    assert tcp.capabilities == Capabilities(l7=False, splices=False, delayed_binding=False)
    assert make_adapter("nginx-http").capabilities.l7
    assert make_adapter("netfilter").capabilities == Capabilities(
        l7=False, splices=True, delayed_binding=False, opens_window=False)
    cmd = make_adapter("command", argv="my-gw --fast", gateway_kernel="routing")
    assert isinstance(cmd, CommandAdapter) and cmd.argv == ["my-gw", "--fast"]
    with pytest.raises(AdapterError, match="argv"):
        make_adapter("command")
    with pytest.raises(AdapterError, match="gateway_kernel"):
        CommandAdapter(["x"], gateway_kernel="kernel")


def test_start_refuses_a_lab_of_the_wrong_kind(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=r"gateway_kernel='routing'.*Lab\(gateway_kernel"):
        NetfilterAdapter().start(_FakeLab("out"), _policy(), tmp_path)  # type: ignore[arg-type]


def test_policy_toml_reads_back_equal() -> None:
    pol = _policy()
    hashed = replace(pol, pools={**pol.pools, "api": Pool("api", (
        Server("203.0.113.13", 80), Server("2001:db8:2::13", 8080)), "hash")},
        isn_secret='k"ey\\', client_address="198.51.100.1", idle_timeout=7.5)
    for cfg in (default_config(), pol, hashed):
        assert loads(policy_toml(cfg)) == cfg


def test_dual_stack_adds_an_ipv6_twin_only_when_missing() -> None:
    v4_only = replace(default_config(), services=default_config().services[:1])
    both = dual_stack(v4_only)
    v6 = [s for s in both.services if ":" in s.vip]
    assert len(v6) == 1 and v6[0].rules[0].path_prefix == "/api/"
    assert [str(s) for s in both.pools[v6[0].default_pool].servers] == \
        ["[2001:db8:2::11]:80", "[2001:db8:2::12]:80"]
    assert dual_stack(both) == both


def test_haproxy_http_config_routes_by_host_then_path(tmp_path: Path) -> None:
    cfg = _configured(HAProxyAdapter("http"), tmp_path)
    assert "mode http" in cfg and f"bind {VIP}:80" in cfg
    host_acl = cfg.index("req.hdr(host) -m reg -i '^api\\.example\\.?(:[0-9]+)?$'")
    assert host_acl < cfg.index("path_beg '/api/'")  # rule order kept: first match wins
    assert "default_backend fp_pool_0" in cfg and "server s1 203.0.113.11:80" in cfg
    assert "2001:db8" not in cfg  # the fake lab has no IPv6
    tcp = _configured(HAProxyAdapter("tcp"), tmp_path)
    assert "acl" not in tcp and tcp.count("    server ") == 3  # one backend, every server
    if shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin"):
        for text in (cfg, tcp):
            (tmp_path / "h.cfg").write_text(text)
            res = subprocess.run(["haproxy", "-c", "-q", "-f", str(tmp_path / "h.cfg")],
                                 capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, res.stderr


def test_nginx_http_config_maps_rules_in_order(tmp_path: Path) -> None:
    cfg = _configured(NginxAdapter("http"), tmp_path)
    assert 'map "$host|$request_uri" $fp_svc0 {' in cfg
    assert cfg.index('"~^api\\.example\\|" fp_pool_1;') < cfg.index('"~^[^|]*\\|\\/api\\/"')
    assert "default fp_pool_0;" in cfg and "proxy_pass http://$fp_svc0;" in cfg
    assert f"pid {tmp_path}/nginx.pid;" in cfg  # nothing outside the work directory
    stream = _configured(NginxAdapter("stream"), tmp_path)
    assert "load_module" in stream and "proxy_pass fp_all0;" in stream
    assert stream.count("        server ") == 3


def test_hash_pools_are_noted_where_the_product_hashes_differently(tmp_path: Path) -> None:
    pol = _policy()
    pol = replace(pol, pools={**pol.pools, "static": replace(pol.pools["static"],
                                                             method="hash")})
    ngx = NginxAdapter("http")
    assert "hash $remote_addr:$remote_port;" in _configured(ngx, tmp_path, pol)
    hap = HAProxyAdapter("http")
    assert "balance source" in _configured(hap, tmp_path, pol)
    assert any("static" in n for n in ngx.notes) and any("static" in n for n in hap.notes)


def test_a_host_the_config_cannot_quote_is_refused(tmp_path: Path) -> None:
    pol = _policy()
    web = pol.services[0]
    bad = replace(pol, services=(replace(web, rules=(Rule(pool="api", host="a'b"),)),))
    with pytest.raises(AdapterError, match="rule host"):
        _configured(HAProxyAdapter("http"), tmp_path, bad)


# --------------------------------------------------------------------------- labs (root)


def _lab_unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return ("needs root: network namespaces need CAP_SYS_ADMIN (CI runs these as root; "
                "locally: sudo .venv/bin/python -m pytest tests/conformance/test_adapters.py)")
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"), ("curl", "curl")):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (apt-get install {pkg}, or bash setup.sh)"
    return None


@pytest.fixture
def lab_for() -> Iterator[object]:
    """A factory: a lab of the kind an adapter needs, taken down (and checked gone) after."""
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    labs: list[Lab] = []

    def make(gateway_kernel: str, **kw: object) -> Lab:
        lab = Lab(f"ad{os.getpid() & 0xFFFF:04x}{next(_names)}", servers=3,
                  gateway_kernel=gateway_kernel, **kw)  # type: ignore[arg-type]
        labs.append(lab)
        return lab.up()

    try:
        yield make
    finally:
        for lab in labs:
            lab.down()
        assert not [ns for lab in labs for ns in lab.existing_namespaces()]


def _get(lab: Lab, path: str, host: str | None = None, vip: str = VIP
         ) -> tuple[int, str, bytes]:
    """(status, X-Server, body) of one curl request from the client namespace."""
    url = f"http://[{vip}]{path}" if ":" in vip else f"http://{vip}{path}"
    argv = ["curl", "-sS", "-i", "--http1.1", "-m", "10", url]
    if host:
        argv += ["-H", f"Host: {host}"]
    res = lab.run("client", argv, capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    head, _, body = res.stdout.partition(b"\r\n\r\n")
    server = re.search(rb"(?im)^x-server:\s*(\S+)", head)
    return int(head.split()[1]), server.group(1).decode() if server else "", body


def _need_program(adapter_name: str) -> None:
    tool = {"haproxy": "haproxy", "nginx": "nginx"}.get(adapter_name.split("-")[0])
    if tool and not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin")):
        pytest.skip(f"{tool} is not installed (bash setup.sh installs it)")


def _handshake_order(lab: Lab) -> list[tuple[str, str, str, int]]:
    """(interface, direction, flags, seq) of the SYN and SYN-ACK segments of one request,
    as tcpdump in the gateway namespace sees them on both legs."""
    out = lab.run_dir / "hs.txt"
    err = lab.run_dir / "hs.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        dump = lab.popen("gateway", ["tcpdump", "-ni", "any", "-l", "-c", "4",
                                     "tcp port 80 and tcp[tcpflags] & tcp-syn != 0"],
                         stdout=fo, stderr=fe)
    try:
        for _ in range(200):
            if "listening on" in err.read_text(errors="replace"):
                break
            time.sleep(0.05)
        assert _get(lab, "/size/100")[0] == 200
        dump.wait(10)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait(10)
    found = []
    for line in out.read_text().splitlines():
        m = re.search(r" (gc|gs)\s+(In|Out)\s+IP .*Flags \[(S\.?)\], seq (\d+)", line)
        if m:
            found.append((m.group(1), m.group(2), m.group(3), int(m.group(4))))
    return found


@pytest.mark.parametrize("name", ["reference", "haproxy-http", "haproxy-tcp", "nginx-http",
                                  "nginx-stream", "netfilter"])
def test_adapter_serves_the_policy_through_the_vip(name: str, lab_for, tmp_path: Path
                                                   ) -> None:
    _need_program(name)
    adapter = make_adapter(name)
    lab = lab_for(adapter.gateway_kernel)
    adapter.start(lab, _policy(), tmp_path)
    try:
        assert adapter.alive()
        seen = set()
        for _ in range(3):
            status, server, body = _get(lab, "/size/1024")
            assert status == 200 and body == response_body(1024)
            seen.add(server)
        if adapter.capabilities.l7:
            assert seen == {"s1", "s2"}  # pool static, round robin
            assert _get(lab, "/api/x")[:2] == (404, "s3")  # path rule -> pool api
            status, server, body = _get(lab, "/size/10", host="API.Example:80")
            assert (status, server, body) == (200, "s3", response_body(10))  # Host rule
        else:
            assert seen == {"s1", "s2", "s3"}  # every server, round robin
        if name == "netfilter":
            hs = _handshake_order(lab)
            kinds = [(i, d, f) for i, d, f, _ in hs]
            assert kinds.index(("gc", "Out", "S.")) < kinds.index(("gs", "Out", "S")), hs
            isn = {(i, d, f): seq for i, d, f, seq in hs}
            assert isn[("gc", "Out", "S.")] != isn[("gs", "In", "S.")]  # seq translated
    finally:
        stats = adapter.stop()
    assert not adapter.alive()
    assert netns_pids(lab.gateway_ns) == []  # nothing of the gateway left running
    assert adapter.stop() is None  # idempotent
    if name == "reference":
        assert stats is not None and stats  # the gateway's own stats JSON
    elif name.startswith("haproxy"):
        assert stats is not None and sum(stats["sessions_per_server"].values()) >= 3
    elif name.startswith("nginx"):
        assert stats is not None and sum(stats[next(k for k in stats if
                                                     k.endswith("_per_upstream"))].values()) >= 3
    else:
        assert stats is not None and stats["counters"]["dnat"]["packets"] >= 3
        left = lab.run("gateway", ["nft", "list", "table", "inet", NetfilterAdapter.TABLE],
                       capture_output=True, timeout=20)
        assert left.returncode != 0  # the rule set is gone
        loose = lab.run("gateway", ["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose"],
                        capture_output=True, text=True, timeout=20)
        assert loose.stdout.strip() == "1"  # restored


@pytest.mark.parametrize("name", ["reference", "haproxy-http", "nginx-http", "netfilter"])
def test_adapter_serves_the_ipv6_vip_too(name: str, lab_for, tmp_path: Path) -> None:
    """An IPv4-only policy in an IPv6 lab: the adapter adds the IPv6 twin (dual_stack) and
    the gateway answers on VIP6 from the servers' IPv6 addresses, rules included."""
    if VIP6 is None or "ipv6" not in inspect.signature(Lab).parameters:
        pytest.skip("this tree's lab has no IPv6 (Lab(..., ipv6=True), spec.topology.VIP6)")
    _need_program(name)
    adapter = make_adapter(name)
    lab = lab_for(adapter.gateway_kernel, ipv6=True)
    v4_only = replace(_policy(), services=_policy().services[:1])
    adapter.start(lab, v4_only, tmp_path)
    try:
        assert adapter.policy is not None and VIP6 in [s.vip for s in adapter.policy.services]
        assert adapter.probe_urls()[-1] == f"http://[{VIP6}]:80/"
        seen = set()
        for _ in range(2):
            status, server, body = _get(lab, "/size/1024", vip=VIP6)
            assert status == 200 and body == response_body(1024)
            seen.add(server)
        if adapter.capabilities.l7:
            assert seen == {"s1", "s2"}
            assert _get(lab, "/size/10", host="api.example", vip=VIP6)[1] == "s3"
        assert _get(lab, "/size/10")[0] == 200  # IPv4 still served
    finally:
        adapter.stop()
    assert netns_pids(lab.gateway_ns) == []


_RELAY = textwrap.dedent("""\
    # A tiny TCP relay: proof that the environment carries what a gateway needs.
    import asyncio, json, os
    env = {k: v for k, v in os.environ.items() if k.startswith("FASTPATH_")}
    open(os.path.join(env["FASTPATH_WORK_DIR"], "env.json"), "w").write(json.dumps(env))
    host, _, port = env["FASTPATH_SERVERS"].split()[0].rpartition(":")

    async def pipe(r, w):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    async def handle(cr, cw):
        sr, sw = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))

    async def main():
        srv = await asyncio.start_server(handle, env["FASTPATH_VIP"],
                                         int(env["FASTPATH_VPORT"]))
        async with srv:
            await asyncio.sleep(600)

    asyncio.run(main())
    """)


def test_command_adapter_passes_the_lab_and_reports_failures(lab_for, tmp_path: Path) -> None:
    lab = lab_for("routing")
    # A gateway that exits at once: a clear error with its own output.
    bad = CommandAdapter(["sh", "-c", "echo 'cannot open gs: boom' >&2; exit 3"],
                         gateway_kernel="routing", name="broken")
    with pytest.raises(AdapterError) as err:
        bad.start(lab, _policy(), tmp_path / "bad")
    assert "gateway broken did not start" in str(err.value)
    assert "exited" in str(err.value) and "cannot open gs: boom" in str(err.value)
    # One that runs but never forwards: not ready, stopped, and its log is shown.
    mute = CommandAdapter(["sh", "-c", "echo listening-nowhere; exec sleep 60"],
                          gateway_kernel="routing", name="mute")
    mute.ready_timeout = 2.0
    with pytest.raises(AdapterError, match=r"(?s)no answer through the VIP.*listening-nowhere"):
        mute.start(lab, _policy(), tmp_path / "mute")
    assert netns_pids(lab.gateway_ns) == []
    # A working one: served through the VIP with what the environment told it.
    script = tmp_path / "relay.py"
    script.write_text(_RELAY)
    good = CommandAdapter([sys.executable, str(script)], gateway_kernel="routing",
                          capabilities=Capabilities(l7=False, splices=False,
                                                    delayed_binding=False))
    good.start(lab, _policy(), tmp_path / "good")
    try:
        assert _get(lab, "/size/2048") == (200, "s1", response_body(2048))
        env = __import__("json").loads((tmp_path / "good" / "env.json").read_text())
        assert env["FASTPATH_VIP"] == VIP and env["FASTPATH_VPORT"] == "80"
        assert env["FASTPATH_SERVERS"].split() == ["203.0.113.11:80", "203.0.113.12:80",
                                                   "203.0.113.13:80"]
        assert (env["FASTPATH_CLIENT_IF"], env["FASTPATH_SERVER_IF"]) == ("gc", "gs")
        assert env["FASTPATH_GATEWAY_NS"] == lab.gateway_ns
        assert loads(Path(env["FASTPATH_POLICY"]).read_text()) == good.policy
        assert "FASTPATH_VIP6" not in env  # an IPv4-only lab
    finally:
        good.stop()
    assert netns_pids(lab.gateway_ns) == []

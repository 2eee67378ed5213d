"""IPv6 in the lab: the addresses (no root), the HTTP server on IPv6 loopback (no root), and one
real lab (root) converged from IPv4-only to IPv6 and back, in "routing" mode with impairment
nodes, so the kernel routes IPv6 between the client and the servers through both nodes.

The user-space gateway over IPv6 ("out" mode) is tested in
tests/reference/gateway/test_driver_ipv6.py. Root tests skip, saying why, when not root.
"""

from __future__ import annotations

import ipaddress
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from reference.gateway.sim import response_body
from reference.lab import Lab
from reference.lab.topology import CLIENT_IF, server_ip6
from spec.topology import (
    CLIENT_IP6,
    GW_CLIENT_IP6,
    GW_CLIENT_MAC,
    GW_SERVER_IP6,
    PREFIX_LEN6,
    SERVER_IPS,
    SERVER_IPS6,
    VIP6,
)
from tests.reference.lab.test_lab import _lab_unavailable

DOC = ipaddress.IPv6Network("2001:db8::/32")


# --------------------------------------------------------------------------- no root


def test_ipv6_addresses_are_documentation_and_the_vip6_is_off_link() -> None:
    addrs = [CLIENT_IP6, GW_CLIENT_IP6, VIP6, GW_SERVER_IP6, *SERVER_IPS6]
    assert all(ipaddress.IPv6Address(a) in DOC for a in addrs)
    assert len(set(addrs)) == len(addrs)
    client_net = ipaddress.IPv6Interface(f"{CLIENT_IP6}/{PREFIX_LEN6}").network
    server_net = ipaddress.IPv6Interface(f"{GW_SERVER_IP6}/{PREFIX_LEN6}").network
    assert ipaddress.IPv6Address(GW_CLIENT_IP6) in client_net
    assert all(ipaddress.IPv6Address(a) in server_net for a in SERVER_IPS6)
    vip = ipaddress.IPv6Address(VIP6)
    assert vip not in client_net and vip not in server_net
    assert len(SERVER_IPS6) == len(SERVER_IPS)
    assert [server_ip6(k) for k in range(1, 4)] == list(SERVER_IPS6)
    assert server_ip6(64) == "2001:db8:2::74"  # still in the server /64
    assert ipaddress.IPv6Address(server_ip6(64)) in server_net


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def dual_server() -> Iterator[int]:
    """An httpserver on 127.0.0.1 and ::1, any free port (the same on both)."""
    if not _ipv6_loopback():
        pytest.skip("IPv6 loopback (::1) is unavailable on this machine")
    proc = subprocess.Popen([sys.executable, "-m", "reference.lab.httpserver", "--name", "t6",
                             "--host", "127.0.0.1", "--host6", "::1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline().decode() if ready else ""
        assert line.startswith("listening "), (line, proc.poll())
        yield int(line.split()[1].rpartition(":")[2])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def _get(family: socket.AddressFamily, host: str, port: int, path: str) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        for _ in range(10_000):
            data = s.recv(1 << 16)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_httpserver_answers_on_ipv6_the_same(dual_server: int) -> None:
    v4 = _get(socket.AF_INET, "127.0.0.1", dual_server, "/size/3000")
    v6 = _get(socket.AF_INET6, "::1", dual_server, "/size/3000")
    assert v4 == v6
    head, _, body = v6.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"\r\nX-Server: t6\r\n" in head
    assert body == response_body(3000)


def test_httpserver_without_ipv6_listener_serves_ipv4_only(dual_server: int) -> None:
    # An explicit non-wildcard --host gets no IPv6 listener unless --host6 asks for one.
    proc = subprocess.Popen([sys.executable, "-m", "reference.lab.httpserver", "--name", "t4",
                             "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        select.select([proc.stdout], [], [], 10)
        port = int(proc.stdout.readline().decode().split()[1].rpartition(":")[2])
        assert _get(socket.AF_INET, "127.0.0.1", port, "/").startswith(b"HTTP/1.1 200")
        if _ipv6_loopback():
            with pytest.raises(ConnectionRefusedError):
                _get(socket.AF_INET6, "::1", port, "/")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


# --------------------------------------------------------------------------- root


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A routing-mode lab with impairment nodes, built without IPv6 (the tests converge it)."""
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab(f"v{os.getpid() & 0xFFFF:04x}{time.monotonic_ns() % 100:02d}", servers=2,
              gateway_kernel="routing", impair=True)
    try:
        yield lab.up()
    finally:
        lab.down()
        assert not lab.existing_namespaces()


def _curl(lab: Lab, url: str, *extra: str) -> tuple[str, bytes]:
    """(``"<code> <x-server>"``, body) of one curl in the client namespace."""
    res = lab.run("client", ["curl", "-sS", "-g", "--max-time", "20", *extra, "-w",
                             "\n%{http_code} %header{x-server}", url],
                  capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    body, _, meta = res.stdout.rpartition(b"\n")
    return meta.decode(), body


def _addresses(status: dict[str, object], role: str, ifname: str) -> list[str]:
    namespaces = status["namespaces"]
    assert isinstance(namespaces, dict)
    return list(namespaces[role]["interfaces"][ifname]["addresses"])


def test_ipv6_lab_routes_through_the_impairment_nodes_and_converges_back(lab: Lab) -> None:
    assert lab.status()["vip6"] is None  # built without IPv6: nothing configured
    lab.ipv6 = True
    lab.up()  # converge the existing lab: its veths get IPv6 now
    assert repr(lab).endswith("ipv6=True)")
    st = lab.status()
    assert st["up"] and st["vip6"] == f"[{VIP6}]:80"
    assert f"{CLIENT_IP6}/64" in _addresses(st, "client", CLIENT_IF)
    assert f"{GW_CLIENT_IP6}/64" in _addresses(st, "gateway", "gc")
    assert f"{GW_SERVER_IP6}/64" in _addresses(st, "gateway", "gs")
    assert [s["address6"] for s in st["servers"]] == list(SERVER_IPS6[:2])
    gw = st["gateway"]
    assert gw["ipv6_forwarding"] and gw["vip6_on_lo"] and gw["mode"] == "routing"
    # Usable at once: no address waits for duplicate address detection.
    tentative = lab.run("client", ["ip", "-6", "addr", "show", "tentative"],
                        capture_output=True, text=True, check=True)
    assert tentative.stdout.strip() == ""
    neigh = lab.run("client", ["ip", "-6", "neigh", "show", GW_CLIENT_IP6],
                    capture_output=True, text=True, check=True)
    assert GW_CLIENT_MAC in neigh.stdout and "PERMANENT" in neigh.stdout
    # The kernel routes IPv6 client -> gateway -> server, across both impairment nodes.
    before = {leg: lab.impair_counters(leg)["forwarded"] for leg in ("client", "server")}
    for k, addr in enumerate(SERVER_IPS6[:2], start=1):
        meta, body = _curl(lab, f"http://[{addr}]/size/200000")
        assert meta == f"200 s{k}" and body == response_body(200_000)
    after = {leg: lab.impair_counters(leg)["forwarded"] for leg in ("client", "server")}
    for leg in ("client", "server"):
        assert sum(after[leg].values()) - sum(before[leg].values()) >= 20, (leg, after)
    # IPv4 in the same lab, unchanged.
    meta, body = _curl(lab, "http://203.0.113.12/size/5000")
    assert meta == "200 s2" and body == response_body(5000)
    # And back: without ipv6 the namespaces lose their IPv6 addresses again.
    lab.ipv6 = False
    lab.up()
    st = lab.status()
    assert st["up"] and st["vip6"] is None
    assert not any(":" in a for a in _addresses(st, "client", CLIENT_IF))
    assert [s["address6"] for s in st["servers"]] == [None, None]
    meta, _ = _curl(lab, "http://203.0.113.11/size/10")
    assert meta == "200 s1"

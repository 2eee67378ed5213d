"""The network-namespace lab: the HTTP server on loopback (no root), then real labs (root).

Lab tests skip, saying why, when not root or without ``ip netns``/``nft``; CI runs as root.
Every lab comes from the ``make_lab`` fixture, which takes it down even when a test fails, and
has a name of its own (``t<pid><n>``), so a failed run never collides with the next.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastpath.cli import main
from reference.gateway.sim import response_body
from reference.lab import Lab, LabError
from reference.lab._system import alive, netns_names, server_processes
from reference.lab.httpserver import CHUNK, body_chunks
from reference.lab.topology import GW_CLIENT_IP, random_name

MiB = 1 << 20
_names = itertools.count(1)


def _unique_name() -> str:
    return f"t{os.getpid() & 0xFFFF:04x}{next(_names)}"


# --------------------------------------------------------------------------- no root


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5,
                               5 * MiB + 3])
def test_body_chunks_equal_response_body(n: int) -> None:
    chunks = list(body_chunks(n))
    assert b"".join(chunks) == response_body(n)
    assert all(len(c) <= CHUNK for c in chunks)


def test_body_chunks_100_mib_ends_with_its_own_offset() -> None:
    last = b""
    total = 0
    for chunk in body_chunks(100 * MiB):
        total += len(chunk)
        last = chunk
    assert total == 100 * MiB
    assert last[-8:] == b"%08x" % (100 * MiB - 8)


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, int]]:
    """An httpserver process on 127.0.0.1, any free port."""
    proc = subprocess.Popen([sys.executable, "-m", "reference.lab.httpserver", "--name", "t1",
                             "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline().decode() if ready else ""
        assert line.startswith("listening "), (line, proc.poll())
        host, _, port = line.split()[1].rpartition(":")
        yield host, int(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_httpserver_routes_and_keep_alive(loopback_server: tuple[str, int]) -> None:
    host, port = loopback_server
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("X-Server")) == (200, "t1")
        assert b"t1" in resp.read()
        sock = conn.sock
        for n in (1, 100_000, 3 * CHUNK + 1):
            conn.request("GET", f"/size/{n}")
            resp = conn.getresponse()
            assert resp.getheader("Content-Length") == str(n)
            assert resp.read() == response_body(n)
        assert conn.sock is sock  # one connection for all of them: keep-alive
        conn.request("HEAD", "/size/5")
        resp = conn.getresponse()
        assert (resp.getheader("Content-Length"), resp.read()) == ("5", b"")
        conn.request("GET", "/nothing")
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("X-Server")) == (404, "t1")
        resp.read()
        conn.request("POST", "/size/1", body=b"abc")
        resp = conn.getresponse()
        assert resp.status == 405
        resp.read()
    finally:
        conn.close()


def test_httpserver_honours_connection_close(loopback_server: tuple[str, int]) -> None:
    with socket.create_connection(loopback_server, timeout=10) as s:
        s.sendall(b"GET /size/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        for _ in range(1000):  # until the server closes
            more = s.recv(65536)
            if not more:
                break
            data += more
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and body == response_body(10)


def test_httpserver_serves_200_concurrent_connections(loopback_server: tuple[str, int]) -> None:
    host, port = loopback_server

    async def one(n: int) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        await asyncio.sleep(0.2)  # hold every connection open at once
        writer.write(f"GET /size/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        writer.close()
        await writer.wait_closed()
        return body

    async def all_of_them() -> list[bytes]:
        return await asyncio.wait_for(asyncio.gather(*(one(1000 + i) for i in range(200))), 30)

    bodies = asyncio.run(all_of_them())
    assert all(b == response_body(1000 + i) for i, b in enumerate(bodies))


def test_lab_names_and_roles() -> None:
    lab = Lab("ab1", servers=2)
    assert lab.netns == {"client": "ab1-c", "gateway": "ab1-g", "switch": "ab1-sw",
                         "s1": "ab1-s1", "s2": "ab1-s2"}
    assert [lab.ns(r) for r in ("c", "gateway", "sw", "s2", "ab1-s1")] == \
        ["ab1-c", "ab1-g", "ab1-sw", "ab1-s2", "ab1-s1"]
    assert lab.server_addresses == ["203.0.113.11", "203.0.113.12"]
    with pytest.raises(LabError, match="unknown role"):
        lab.ns("router")
    for bad in ("", "Lab", "1lab", "a-b", "abcdefghijk"):
        with pytest.raises(LabError, match="lowercase"):
            Lab(bad)
    with pytest.raises(LabError, match="1 to 64 servers"):
        Lab("ok", servers=0)
    names = {random_name() for _ in range(20)}
    assert all(len(n) <= 10 for n in names) and len(names) > 1
    assert len(Lab().name) <= 10


def test_not_root_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match=r"run as root .*CAP_SYS_ADMIN.*user namespaces: "):
        Lab("nr").up()


def test_cli_rejects_a_bad_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "status", "--name", "Bad!"]) == 2
    assert "lowercase" in capsys.readouterr().err


# --------------------------------------------------------------------------- root


def _lab_unavailable() -> str | None:
    """Why real labs cannot run here, or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return ("needs root: network namespaces need CAP_SYS_ADMIN (CI runs these as root; "
                "locally: sudo .venv/bin/python -m pytest tests/reference/lab)")
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"), ("sysctl", "procps")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {pkg}, or bash setup.sh)"
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        return f"`ip netns` is unavailable here: {res.stderr.strip()}"
    return None


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """A factory of uniquely named labs, all taken down at the end whatever happened."""
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    labs: list[Lab] = []

    def make(**kw: Any) -> Lab:
        lab = Lab(_unique_name(), **kw)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.down()
        assert not [ns for lab in labs for ns in lab.existing_namespaces()]


_PY_GET = """\
import socket, sys
host, path = sys.argv[1], sys.argv[2]
with socket.create_connection((host, 80), timeout=20) as s:
    s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    for _ in range(1_000_000):
        data = s.recv(1 << 16)
        if not data:
            break
        sys.stdout.buffer.write(data)
"""


def fetch(lab: Lab, role: str, host: str, path: str) -> tuple[dict[str, str], bytes]:
    """GET http://host/path from ``role``'s namespace with curl (else Python): headers
    (lower-case names) and body."""
    if shutil.which("curl"):
        argv = ["curl", "-sS", "-i", "--max-time", "20", f"http://{host}{path}"]
    else:
        argv = [sys.executable, "-c", _PY_GET, host, path]
    res = lab.run(role, argv, capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    head, _, body = res.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split()[1] == "200", lines[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return headers, body


def _connect_fails(lab: Lab, host: str) -> str:
    """Try a TCP connect from the client with a 1 s timeout; the exception name, or ''."""
    code = (f"import socket\ntry:\n    socket.create_connection(({host!r}, 80), timeout=1)\n"
            "except OSError as exc:\n    print(type(exc).__name__)\n")
    res = lab.run("client", [sys.executable, "-c", code], capture_output=True, text=True,
                  timeout=10)
    return res.stdout.strip()


def _ns_count(prefix: str) -> int:
    return sum(ns.startswith(prefix + "-") for ns in netns_names())


def test_routing_mode_client_reaches_every_server(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(servers=3, gateway_kernel="routing").up()
    status = lab.status()
    assert status["up"] and status["gateway_kernel"] == "routing"
    assert status["gateway"]["ip_forward"] and status["gateway"]["vip_on_lo"]
    for k, addr in enumerate(lab.server_addresses, 1):
        for n in (1, 100_000, 10 * MiB):
            headers, body = fetch(lab, "client", addr, f"/size/{n}")
            assert headers["x-server"] == f"s{k}"
            assert len(body) == n and body == response_body(n), (addr, n)


def test_kernel_out_mode_drops_and_up_reconfigures(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(servers=1).up()
    status = lab.status()
    assert status["up"] and status["gateway_kernel"] == "out"
    assert status["gateway"]["ip_forward"] is False and not status["gateway"]["vip_on_lo"]
    gc_mac = status["namespaces"]["gateway"]["interfaces"]["gc"]["mac"]
    gs_mac = status["namespaces"]["gateway"]["interfaces"]["gs"]["mac"]
    neigh = lab.run("client", ["ip", "neigh", "show", GW_CLIENT_IP], capture_output=True,
                    text=True).stdout
    assert gc_mac in neigh and "PERMANENT" in neigh
    neigh = lab.run("s1", ["ip", "neigh", "show", "203.0.113.1"], capture_output=True,
                    text=True).stdout
    assert gs_mac in neigh and "PERMANENT" in neigh
    # The server is up (seen from its own namespace), yet the client cannot reach it.
    assert fetch(lab, "s1", "203.0.113.11", "/size/3")[0]["x-server"] == "s1"
    t0 = time.monotonic()
    assert _connect_fails(lab, "203.0.113.11") == "TimeoutError"
    assert time.monotonic() - t0 < 5
    assert lab.status()["gateway"]["ingress_drop_packets"]["gc"] >= 1
    if shutil.which("ethtool"):
        lab.set_offload(False)
        off = lab.run("gateway", ["ethtool", "-k", "gc"], capture_output=True, text=True)
        assert "tx-checksumming: off" in off.stdout
        lab.set_offload(True)
    # up() again in routing mode converges the same lab, keeping its server.
    pid = status["servers"][0]["pid"]
    lab.gateway_kernel = "routing"
    status = lab.up().status()
    assert status["gateway_kernel"] == "routing" and status["servers"][0]["pid"] == pid
    assert fetch(lab, "client", "203.0.113.11", "/size/7")[1] == response_body(7)


def test_two_labs_coexist(make_lab: Callable[..., Lab]) -> None:
    a = make_lab(servers=1, gateway_kernel="routing").up()
    b = make_lab(servers=2, gateway_kernel="routing").up()
    assert not set(a.existing_namespaces()) & set(b.existing_namespaces())
    assert fetch(a, "client", "203.0.113.11", "/")[0]["x-server"] == "s1"
    assert fetch(b, "client", "203.0.113.12", "/")[0]["x-server"] == "s2"
    a.down()
    assert _ns_count(a.name) == 0 and b.status()["up"]
    assert fetch(b, "client", "203.0.113.11", "/size/10")[1] == response_body(10)
    b.down()
    assert _ns_count(b.name) == 0


def test_up_repairs_and_down_is_idempotent(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(servers=2).up()
    pids = [s["pid"] for s in lab.status()["servers"]]
    assert lab.up().status()["servers"][0]["pid"] == pids[0]  # a second up() reuses
    os.kill(pids[1], signal.SIGTERM)  # break it: a dead server and a missing namespace
    for _ in range(250):
        if not alive(pids[1]):
            break
        time.sleep(0.02)
    subprocess.run(["ip", "netns", "del", lab.client_ns], check=True, timeout=10)
    assert not lab.status()["up"]
    status = lab.up().status()
    assert status["up"] and status["servers"][0]["pid"] == pids[0]
    assert status["servers"][1]["pid"] != pids[1]
    assert "c0" in status["namespaces"]["client"]["interfaces"]
    all_pids = [s["pid"] for s in status["servers"]]
    lab.down()
    lab.down()
    assert _ns_count(lab.name) == 0 and not lab.run_dir.exists()
    assert server_processes(lab.name) == [] and not any(alive(p) for p in all_pids)
    assert not lab.status()["exists"]
    Lab(_unique_name()).down()  # never existed: nothing to do, no error


@pytest.mark.parametrize(("step", "exc"), [("_gateway_mode", RuntimeError),
                                           ("_await_listening", KeyboardInterrupt)])
def test_failed_up_is_cleaned_up_by_the_context_manager(
        make_lab: Callable[..., Lab], monkeypatch: pytest.MonkeyPatch, step: str,
        exc: type[BaseException]) -> None:
    def boom(self: Lab, *args: object) -> None:
        raise exc("simulated failure")

    monkeypatch.setattr(Lab, step, boom)
    lab = make_lab(servers=2)
    with pytest.raises(exc, match="simulated"), lab:
        pytest.fail("the block must not run when up() fails")
    assert _ns_count(lab.name) == 0
    assert server_processes(lab.name) == []


def test_cli_up_status_down(make_lab: Callable[..., Lab],
                            capsys: pytest.CaptureFixture[str]) -> None:
    name = make_lab().name  # only its name: the fixture still takes it down if this fails
    assert main(["lab", "up", "--name", name, "--servers", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["up"]
    assert main(["lab", "status", "--name", name]) == 0
    out = capsys.readouterr().out
    assert f"ip netns exec {name}-s1 curl" in out and "198.51.100.2/24" in out
    assert main(["lab", "down", "--name", name]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["lab", "status", "--name", name, "--json"]) == 1
    assert not json.loads(capsys.readouterr().out)["exists"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_up_hold_removes_the_lab_on_a_signal(make_lab: Callable[..., Lab],
                                                  sig: signal.Signals) -> None:
    name = make_lab().name
    code = "from fastpath.cli import main; raise SystemExit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "lab", "up", "--name", name,
                             "--servers", "1", "--hold", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        out = b""
        deadline = time.monotonic() + 20
        while b"holding" not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
            data = os.read(fd, 65536) if ready else b""
            if not data:
                break
            out += data
        assert b"holding" in out, (out, proc.poll())
        assert _ns_count(name) == 4  # client, gateway, switch, s1
        proc.send_signal(sig)
        assert proc.wait(15) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert _ns_count(name) == 0 and server_processes(name) == []

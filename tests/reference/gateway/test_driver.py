"""``fastpath gateway`` end to end: a lab in "out" mode, the driver in its gateway namespace,
curl and small Python clients in the client namespace (root only; CI runs as root).

One lab serves the whole module (it takes ~0.3 s to build but every test must leave it as it
found it); every test starts its own gateway process, so its stats are its own. Fixtures stop
the processes and take the lab down even when a test fails, and the last check is that none
of the lab's namespaces is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastpath.cli import main
from reference.gateway.config import DEFAULT_CONFIG_TOML
from reference.gateway.driver import ARP_TRIES
from reference.gateway.sim import response_body
from reference.lab import Lab
from reference.lab.topology import CLIENT_IF, GW_CLIENT_IP
from spec.topology import GW_CLIENT_MAC, VIP

ROOT = Path(__file__).resolve().parents[3]
URL = f"http://{VIP}"
READY_TIMEOUT = 15.0
RUN_LIMIT = "120"
"""--duration of every gateway: a safety net should a test lose track of its process."""


def _unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces and AF_PACKET are Linux only"
    if os.geteuid() != 0:
        return ("needs root: network namespaces and raw sockets (CI runs these as root; "
                "locally: sudo .venv/bin/python -m pytest tests/reference/gateway/test_driver.py)")
    for tool in ("ip", "nft", "curl", "ethtool"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (bash setup.sh installs it)"
    return None


# --------------------------------------------------------------------------- no lab needed


def test_bad_config_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "gw.toml"
    bad.write_text('[gateway]\nmss = 5\n\n[[service]]\nname = "web"\nvip = "192.0.2.10"\n'
                   'default_pool = "p"\n\n[pool.p]\nservers = ["203.0.113.11:80"]\n')
    assert main(["gateway", "--config", str(bad)]) == 2
    assert f"{bad}:2: mss = 5 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-1", "soon", "nan", "inf"])
def test_bad_compact_after_is_a_clear_error(bad: str, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    assert main(["gateway", "--compact-after", bad, "--duration", "1"]) == 2
    assert f"--compact-after takes seconds >= 0 or 'never', not '{bad}'" in \
        capsys.readouterr().err


def test_missing_interface_or_no_root_is_a_clear_error(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert main(["gateway", "--client-if", "fpnosuch0", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    want = "'fpnosuch0' does not exist" if os.geteuid() == 0 else "run as root"
    assert want in err, err


# --------------------------------------------------------------------------- fixtures


class GatewayProcess:
    """One ``fastpath gateway`` in the lab's gateway namespace, ready once constructed."""

    def __init__(self, lab: Lab, stats: Path, *args: str, netns_flag: bool = False) -> None:
        self.stats_path = stats
        argv = [sys.executable, "-m", "fastpath.cli", "gateway", "--duration", RUN_LIMIT,
                "--stats-json", str(stats), *args]
        kw: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE,
                              "cwd": ROOT}
        if netns_flag:  # enters the namespace itself (setns)
            self.proc = subprocess.Popen([*argv, "--netns", lab.gateway_ns], **kw)
        else:
            self.proc = lab.popen("gateway", argv, **kw)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline().decode() if ready else ""
        assert line.startswith("ready "), (line, self.proc.poll(), self._stderr())

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def snapshot(self) -> dict[str, Any]:
        """Stats while running: SIGUSR1, then wait (bounded) for the file to be rewritten."""
        self.stats_path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(100):
            if self.stats_path.exists():
                return json.loads(self.stats_path.read_text())
            time.sleep(0.05)
        raise AssertionError(f"no stats after SIGUSR1: {self._stderr()}")

    def stop(self) -> dict[str, Any]:
        """SIGTERM; the process must exit 0 and leave its final stats."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        assert rc == 0, (rc, self._stderr())
        return json.loads(self.stats_path.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab(f"d{os.getpid() & 0xFFFF:04x}{time.monotonic_ns() % 100:02d}", servers=3,
              gateway_kernel="out")
    try:
        yield lab.up()
    finally:
        lab.down()
        assert not lab.existing_namespaces()


@pytest.fixture
def gateway(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(*args: str, netns_flag: bool = False) -> GatewayProcess:
        gw = GatewayProcess(lab, tmp_path / f"stats{len(started)}.json", *args,
                            netns_flag=netns_flag)
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            gw.kill()


def curl(lab: Lab, path: str, out: Path | None = None, *, fmt: str = "%{http_code}"
         ) -> str:
    argv = ["curl", "-sS", "--max-time", "30", "-o", str(out or "/dev/null"), "-w", fmt,
            f"{URL}{path}"]
    res = lab.run("client", argv, capture_output=True, text=True, timeout=40)
    assert res.returncode == 0, res.stderr
    return res.stdout


# --------------------------------------------------------------------------- the lab


def test_small_response_is_spliced_on_the_fast_path(lab: Lab, gateway: Callable[...,
                                                    GatewayProcess], tmp_path: Path) -> None:
    gw = gateway()
    body = tmp_path / "body"
    assert curl(lab, "/size/1000", body) == "200"
    assert body.read_bytes() == response_body(1000)
    running = gw.snapshot()  # SIGUSR1 works while serving
    assert running["gateway"]["sessions_spliced"] == 1
    stats = gw.stop()
    core, drv = stats["gateway"], stats["driver"]
    assert core["sessions_spliced"] == 1 and core["sessions_handed_off"] == 0
    assert core["bytes_server_to_client"] >= 1000
    assert drv["frames_in"]["client"] > 0 and drv["frames_out"]["server"] > 0
    assert drv["arp"]["requests_sent"] >= 1  # the server's MAC was resolved, not configured
    assert drv["offload"]["partial_checksums"] > 0  # veth offloads are on: completed here


def test_profile_option_writes_cprofile_stats_of_the_run(
        lab: Lab, gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    prof = tmp_path / "gw.pstats"
    gw = gateway("--profile", str(prof))
    assert curl(lab, "/size/1000") == "200"
    gw.stop()
    import pstats

    names = {fn[2] for fn in pstats.Stats(str(prof)).stats}  # type: ignore[attr-defined]
    assert "handle" in names and "_frame" in names  # the core and the driver were profiled


_SPLIT_CLIENT = """\
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=20)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = b"GET /size/5000 HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
s.sendall(req[:9])
time.sleep(0.3)
s.sendall(req[9:])
for _ in range(100_000):
    data = s.recv(1 << 16)
    if not data:
        break
    sys.stdout.buffer.write(data)
"""


def test_request_in_two_segments_is_handed_off(lab: Lab,
                                               gateway: Callable[..., GatewayProcess]) -> None:
    gw = gateway()
    res = lab.run("client", [sys.executable, "-c", _SPLIT_CLIENT, VIP], capture_output=True,
                  timeout=30)
    assert res.returncode == 0, res.stderr
    head, _, body = res.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == response_body(5000)
    core = gw.stop()["gateway"]
    assert core["handoffs"].get("PARTIAL_REQUEST") == 1 and core["sessions_spliced"] == 0


_IDLE_CLIENT = """\
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=20)
for n in (3000, 4000):
    s.sendall(b"GET /size/%d HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % n)
    got = b""
    for _ in range(10_000):
        head, sep, body = got.partition(b"\\r\\n\\r\\n")
        if sep and len(body) >= n:
            break
        got += s.recv(1 << 16) or sys.exit("closed early")
    sys.stdout.buffer.write(body[:n])
    time.sleep(float(sys.argv[2]))  # idle: the gateway compacts the spliced session
"""


def test_a_compacted_idle_session_serves_its_next_request(
        lab: Lab, gateway: Callable[..., GatewayProcess]) -> None:
    gw = gateway("--compact-after", "0.2")
    res = lab.run("client", [sys.executable, "-c", _IDLE_CLIENT, VIP, "1.0"],
                  capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == response_body(3000) + response_body(4000)
    core = gw.stop()["gateway"]
    assert core["sessions_spliced"] == 1 and core["sessions_handed_off"] == 0
    assert core["sessions_compacted"] >= 1 and core["sessions_restored"] >= 1


_HOLD_CLIENT = """\
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=20)
s.sendall(b"GET /size/100 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
got = b""
while len(got.partition(b"\\r\\n\\r\\n")[2]) < 100:
    got += s.recv(4096) or sys.exit("closed early")
print("got", flush=True)
time.sleep(60)  # keep-alive: the server holds the connection open
"""


def test_a_connection_a_killed_gateway_left_at_the_server_does_not_stall_the_next_one(
        lab: Lab, gateway: Callable[..., GatewayProcess]) -> None:
    """A gateway killed mid-connection leaves the server holding it; the next gateway opens
    its first server side from the same source port, and the server answers that SYN with
    the old connection's ACK. The fast path resets it (RFC 9293 §3.10.7.3) and opens on the
    SYN's retransmission, well inside the client's patience (CI once timed out the first
    curl of four driver tests in a row this way)."""
    first = gateway()
    holder = lab.popen("client", [sys.executable, "-c", _HOLD_CLIENT, VIP],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 20.0)
        assert ready and holder.stdout.readline().startswith(b"got")
        first.kill()  # SIGKILL: nothing tells the server
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    second = gateway()
    t0 = time.monotonic()
    argv = ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
            f"{URL}/size/100"]
    res = lab.run("client", argv, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    assert res.returncode == 0 and res.stdout == "200", res.stderr
    assert took < 10.0, took
    core = second.stop()["gateway"]
    assert core["resets_sent"] >= 1 and core["sessions_spliced"] == 1, core


def test_10_mib_response_byte_exact(lab: Lab, gateway: Callable[..., GatewayProcess],
                                    tmp_path: Path, record_property: Any) -> None:
    gw = gateway()
    n = 10 * 2**20
    out = tmp_path / "big"
    code, size, speed = curl(lab, f"/size/{n}", out,
                             fmt="%{http_code} %{size_download} %{speed_download}").split()
    assert (code, int(size)) == ("200", n)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(response_body(n)).digest()
    record_property("mb_per_s", round(float(speed) / 1e6, 1))
    print(f"10 MiB through the gateway: {float(speed) / 1e6:.1f} MB/s")
    stats = gw.stop()
    core, drv = stats["gateway"], stats["driver"]
    assert core["sessions_spliced"] == 1 and core["sessions_handed_off"] == 0
    assert core["bytes_server_to_client"] >= n
    assert drv["offload"].get("gso_frames", 0) > 0  # super-frames arrived whole


def test_20_sequential_curls_with_arp_for_the_gateway(lab: Lab,
                                                      gateway: Callable[..., GatewayProcess]
                                                      ) -> None:
    gw = gateway(netns_flag=True)
    # Without its static entry the client must ARP for its default gateway: we answer.
    lab.run("client", ["ip", "neigh", "del", GW_CLIENT_IP, "dev", CLIENT_IF], check=True)
    try:
        script = (f"for i in $(seq 20); do curl -sS --max-time 10 -o /dev/null "
                  f"-w '%{{http_code}} %header{{x-server}}\\n' {URL}/size/$((1000 + i)) "
                  f"|| echo fail; done")
        res = lab.run("client", ["sh", "-c", script], capture_output=True, text=True,
                      timeout=60)
    finally:
        lab.run("client", ["ip", "neigh", "replace", GW_CLIENT_IP, "lladdr", GW_CLIENT_MAC,
                           "dev", CLIENT_IF, "nud", "permanent"], check=True)
    lines = res.stdout.split("\n")[:-1]
    assert len(lines) == 20 and all(line.startswith("200 ") for line in lines), res
    assert {line.split()[1] for line in lines} == {"s1", "s2"}  # round robin, static pool
    stats = gw.stop()
    assert stats["gateway"]["sessions_spliced"] == 20
    assert stats["driver"]["arp"].get("replies_sent", 0) >= 1


_GARBAGE = """\
import socket, struct, sys
gw_mac, my_mac = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("c0", 0))
def ip4(proto, payload, csum_ok=True):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                      socket.inet_aton("198.51.100.2"), socket.inet_aton("192.0.2.10"))
    c = 0 if not csum_ok else ~(int.from_bytes(hdr, "big") % 0xFFFF) & 0xFFFF
    return hdr[:10] + struct.pack("!H", c ^ (0 if csum_ok else 0x1234)) + hdr[12:] + payload
eth = gw_mac + my_mac
frames = [eth + b"\\x88\\xb5" + b"junk" * 20,          # unknown ethertype
          eth + b"\\x08\\x00" + b"\\x45\\x00",          # IPv4, total length 0
          eth + b"\\x08\\x00" + ip4(17, b"\\0" * 16),   # UDP to the VIP
          eth + b"\\x08\\x00" + ip4(6, b"\\0" * 20, csum_ok=False),
          eth + b"\\x08\\x06" + b"\\x00\\x01" * 5,     # ARP, truncated
          b"\\xff" * 6 + my_mac + b"\\x08\\x00" + b"x" * 50]  # IP to broadcast
for f in frames:
    s.send(f + bytes(max(0, 60 - len(f))))
"""


def test_garbage_frames_are_counted_not_fatal(lab: Lab,
                                              gateway: Callable[..., GatewayProcess],
                                              tmp_path: Path) -> None:
    gw = gateway()
    res = lab.run("client", [sys.executable, "-c", _GARBAGE, GW_CLIENT_MAC.replace(":", ""),
                             "020000000001"], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    body = tmp_path / "body"
    assert curl(lab, "/size/2000", body) == "200" and body.read_bytes() == response_body(2000)
    stats = gw.stop()
    drops, core_drops = stats["driver"]["drops"], stats["gateway"]["drops"]
    assert drops.get("not_ip", 0) >= 1 and drops.get("bad_arp", 0) >= 1, drops
    assert drops.get("not_for_us", 0) >= 1, drops
    for reason in ("not-tcp", "bad-ip-checksum", "bad-total-length"):
        assert any(reason in k for k in core_drops), (reason, core_drops)


def test_unresolvable_server_is_bounded(lab: Lab, gateway: Callable[..., GatewayProcess],
                                        tmp_path: Path) -> None:
    """A pool whose only server does not exist: ARP is retried ARP_TRIES times, then the
    queued packets are dropped and counted; the gateway keeps running."""
    config = tmp_path / "gw.toml"
    config.write_text(DEFAULT_CONFIG_TOML.replace('"203.0.113.11:80", "203.0.113.12:80"',
                                                  '"203.0.113.99:80"'))
    gw = gateway("--config", str(config))
    res = lab.run("client", ["curl", "-sS", "--max-time", "4", "-o", "/dev/null", URL],
                  capture_output=True, text=True, timeout=20)
    assert res.returncode != 0  # no server: no response
    drv = gw.stop()["driver"]
    assert drv["arp"]["requests_sent"] >= ARP_TRIES, drv
    assert drv["drops"].get("arp_unresolved", 0) >= 1, drv
    assert "203.0.113.99" not in drv["interfaces"]["server"]["neighbours"]


def test_plain_frames_with_offloads_off(lab: Lab, gateway: Callable[..., GatewayProcess],
                                        tmp_path: Path) -> None:
    lab.set_offload(False)
    try:
        gw = gateway("--no-vnet-hdr")
        n = 2**20
        out = tmp_path / "body"
        code, speed = curl(lab, f"/size/{n}", out, fmt="%{http_code} %{speed_download}").split()
        assert code == "200" and out.read_bytes() == response_body(n)
        print(f"1 MiB with plain frames, offloads off: {float(speed) / 1e6:.1f} MB/s")
        stats = gw.stop()
    finally:
        lab.set_offload(True)
    assert stats["driver"]["vnet_hdr"] is False and stats["gateway"]["sessions_spliced"] == 1
    assert not stats["gateway"]["drops"], stats["gateway"]["drops"]


def test_two_percent_loss_on_both_legs_stays_byte_exact_on_both_paths(
        lab: Lab, gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    """nftables numgen loss (this kernel has no netem) on the client and server legs: an 8 MiB
    response on the fast path and a split request on the normal path arrive byte-exact.

    8 MiB, not less: with GSO super-frames a 2 MiB response is only ~100 frames, and 2% loss
    then drops none about one run in ten, which the last assertion would take for a broken
    impairment."""
    gw = gateway()
    lab.set_loss(2.0)
    try:
        n = 8 * 2**20
        out = tmp_path / "lossy"
        code, size = curl(lab, f"/size/{n}", out, fmt="%{http_code} %{size_download}").split()
        assert (code, int(size)) == ("200", n)
        assert out.read_bytes() == response_body(n)
        res = lab.run("client", [sys.executable, "-c", _SPLIT_CLIENT, VIP],
                      capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
        head, _, body = res.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == response_body(5000)
        assert lab.loss_drops() > 0  # the impairment really dropped frames
    finally:
        lab.set_loss(0)
    core = gw.stop()["gateway"]
    assert core["sessions_spliced"] >= 1 and core["handoffs"].get("PARTIAL_REQUEST") == 1
    assert lab.loss_drops() == 0  # removed

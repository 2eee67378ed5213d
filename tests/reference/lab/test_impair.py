"""The seeded impairment nodes on both legs (``Lab(impair=True)``), root only.

First with the gateway kernel routing (no user-space gateway): transparent, then lossy,
duplicating, reordering and delaying on both legs, byte-exact throughout and the nodes'
counters show every kind of impairment happened. Then in "out" mode with the reference
gateway: the fast path (a 1 MiB download) and the normal path (a split request, handed off
as PARTIAL_REQUEST) stay byte-exact through the same impairments. Every lab is taken down,
processes included, even when a test fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference.gateway.sim import response_body
from reference.lab import Lab, LabError
from reference.lab._system import netns_names
from tests.reference.gateway.test_driver import _SPLIT_CLIENT, URL, GatewayProcess

IMPAIRED = {"loss": 0.02, "duplicate": 0.02, "reorder": 0.05, "delay_ms": 1.0,
            "jitter_ms": 1.0}


def _unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces and AF_PACKET are Linux only"
    if os.geteuid() != 0:
        return "needs root: network namespaces and raw sockets"
    for tool in ("ip", "nft", "curl"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (bash setup.sh installs it)"
    return None


def _name(tag: str) -> str:
    return f"i{tag}{os.getpid() & 0xFFFF:04x}{time.monotonic_ns() % 100:02d}"


def impair_pids(lab: Lab) -> set[int]:
    return set(lab.impair_pids())


def _down(lab: Lab) -> None:
    lab.down()
    assert not lab.existing_namespaces()
    assert not [ns for ns in netns_names() if ns.startswith(lab.name + "-")]
    assert not impair_pids(lab)


@pytest.fixture(scope="module")
def routing_lab() -> Iterator[Lab]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab(_name("r"), servers=1, gateway_kernel="routing", impair=True)
    try:
        yield lab.up()
    finally:
        _down(lab)


@pytest.fixture(scope="module")
def out_lab() -> Iterator[Lab]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab(_name("o"), servers=3, gateway_kernel="out", impair=True)
    try:
        yield lab.up()
    finally:
        _down(lab)


def _curl(lab: Lab, url: str, out: Path) -> tuple[str, int]:
    argv = ["curl", "-sS", "--max-time", "30", "-o", str(out), "-w",
            "%{http_code} %{size_download}", url]
    res = lab.run("client", argv, capture_output=True, text=True, timeout=40)
    assert res.returncode == 0, res.stderr
    code, size = res.stdout.split()
    return code, int(size)


def _impair_both(lab: Lab, **params: float) -> None:
    for seed, leg in enumerate(("client", "server"), 7):
        lab.set_impairment(leg, seed=seed, **params)


def test_without_impair_set_impairment_is_a_clear_error() -> None:
    with pytest.raises(LabError, match="impair=True"):
        Lab("inoimp").set_impairment("client", loss=0.1)


def test_routing_through_transparent_nodes_is_byte_exact(routing_lab: Lab,
                                                         tmp_path: Path) -> None:
    lab = routing_lab
    status = lab.status()
    assert {"impair_client", "impair_server"} <= set(status["namespaces"])
    for role in ("impair_client", "impair_server"):
        ifaces = status["namespaces"][role]["interfaces"]
        assert all(not info["addresses"] for n, info in ifaces.items() if n != "lo"), ifaces
    assert (lab.impair_ns("client"), "ia") in lab.veth_ends()
    out = tmp_path / "body"
    assert _curl(lab, f"http://{lab.server_addresses[0]}/size/100000", out) == ("200", 100000)
    assert out.read_bytes() == response_body(100000)
    counters = lab.impair_counters("client")
    assert counters["frames"]["a_to_b"] > 0 and counters["frames"]["b_to_a"] > 0
    assert counters["dropped"] == counters["duplicated"] == counters["reordered"] == 0


def test_routing_through_impaired_nodes_is_byte_exact(routing_lab: Lab,
                                                      tmp_path: Path) -> None:
    lab = routing_lab
    _impair_both(lab, **IMPAIRED)
    try:
        n = 2 * 2**20
        out = tmp_path / "body"
        assert _curl(lab, f"http://{lab.server_addresses[0]}/size/{n}", out) == ("200", n)
        assert out.read_bytes() == response_body(n)
        counters = [lab.impair_counters(leg) for leg in ("client", "server")]
    finally:
        _impair_both(lab)
    for key in ("dropped", "duplicated", "reordered"):
        assert sum(c[key] for c in counters) > 0, (key, counters)
    assert all(c["overflow"] == 0 for c in counters), counters


def test_gateway_fast_and_normal_path_through_impaired_nodes(out_lab: Lab,
                                                             tmp_path: Path) -> None:
    lab = out_lab
    _impair_both(lab, **IMPAIRED)
    gw = GatewayProcess(lab, tmp_path / "stats.json")
    try:
        n = 2**20
        out = tmp_path / "body"
        assert _curl(lab, f"{URL}/size/{n}", out) == ("200", n)
        assert out.read_bytes() == response_body(n)
        res = lab.run("client", [sys.executable, "-c", _SPLIT_CLIENT, URL.rpartition("/")[2]],
                      capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
        head, _, body = res.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == response_body(5000)
        counters = [lab.impair_counters(leg) for leg in ("client", "server")]
        core = gw.stop()["gateway"]
    finally:
        gw.kill()
    assert core["sessions_spliced"] >= 1 and core["handoffs"].get("PARTIAL_REQUEST") == 1
    assert sum(c["dropped"] for c in counters) > 0, counters

"""The driver over IPv6: Neighbor Discovery messages (no root), the driver's ND and IPv6 paths
on an in-memory socket (no root), then ``fastpath gateway`` in an IPv6 lab with curl -6 and
Python clients (root; CI runs as root).

One lab ("out" mode, ``ipv6=True``) serves the root tests; each test starts its own gateway
process (the embedded default config, which has the IPv6 service ``web6`` on VIP6), and the
fixtures stop every process and take the lab down even when a test fails.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reference.gateway import codec
from reference.gateway._checksum import internet_checksum, tcp_checksum
from reference.gateway.config import DEFAULT_CONFIG_TOML, default_config
from reference.gateway.driver import (
    ARP_TRIES,
    GSO_TCPV6,
    VNET,
    VNET_F_NEEDS_CSUM,
    Driver,
    _gso,
    _Port,
)
from reference.gateway.gateway import Gateway
from reference.gateway.neighbor6 import (
    ALL_NODES,
    NA_OVERRIDE,
    NA_ROUTER,
    NA_SOLICITED,
    ND_NA,
    ND_NS,
    ND_RA,
    NdError,
    build_na,
    build_ns,
    icmpv6_checksum,
    is_nd,
    multicast_mac,
    parse_nd,
    solicited_node,
)
from reference.gateway.sim import response_body
from reference.lab import Lab
from reference.lab.topology import CLIENT_IF, server_mac
from spec.topology import (
    CLIENT_IP6,
    CLIENT_MAC,
    GW_CLIENT_IP6,
    GW_CLIENT_MAC,
    GW_SERVER_IP6,
    GW_SERVER_MAC,
    SERVER_IPS6,
    VIP,
    VIP6,
)
from tests.reference.gateway.test_driver import GatewayProcess, _unavailable


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


GW_C, GW_S, CLIENT = mac(GW_CLIENT_MAC), mac(GW_SERVER_MAC), mac(CLIENT_MAC)
S1 = mac(server_mac(1))


def slow_checksum(src: bytes, dst: bytes, msg: bytes) -> int:
    """RFC 1071 the long way (16-bit words, end-around carry), independent of the codec."""
    data = src + dst + len(msg).to_bytes(4, "big") + bytes(3) + b"\x3a" + msg
    data += bytes(len(data) % 2)
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# --------------------------------------------------------------------------- ND messages


def test_solicited_node_group_and_its_mac() -> None:
    group = solicited_node(a6("2001:db8:2::11"))
    assert group == a6("ff02::1:ff00:11")
    assert multicast_mac(group) == mac("33:33:ff:00:00:11")
    assert solicited_node(a6("2001:db8::abcd:ef12")) == a6("ff02::1:ffcd:ef12")


def test_ns_round_trips_with_a_valid_checksum() -> None:
    pkt = build_ns(a6(GW_SERVER_IP6), a6(SERVER_IPS6[0]), GW_S)
    assert is_nd(pkt) and pkt[7] == 255 and len(pkt) == 40 + 32
    assert pkt[24:40] == a6("ff02::1:ff00:11")
    icmp = bytearray(pkt[40:])
    want = int.from_bytes(icmp[2:4], "big")
    icmp[2:4] = b"\0\0"
    assert slow_checksum(pkt[8:24], pkt[24:40], bytes(icmp)) == want
    assert icmpv6_checksum(pkt[8:24], pkt[24:40], pkt[40:]) == 0
    msg = parse_nd(pkt)
    assert (msg.type, msg.src, msg.target, msg.lladdr) == (ND_NS, a6(GW_SERVER_IP6),
                                                           a6(SERVER_IPS6[0]), GW_S)
    unicast = parse_nd(build_ns(a6(GW_SERVER_IP6), a6(SERVER_IPS6[0]), GW_S,
                                dst=a6(SERVER_IPS6[0])))
    assert unicast.dst == a6(SERVER_IPS6[0])


def test_na_round_trips_with_its_flags() -> None:
    pkt = build_na(a6(VIP6), a6(CLIENT_IP6), GW_C, solicited=True)
    msg = parse_nd(pkt)
    assert (msg.type, msg.src, msg.dst, msg.target, msg.lladdr) == (
        ND_NA, a6(VIP6), a6(CLIENT_IP6), a6(VIP6), GW_C)
    assert msg.flags == NA_ROUTER | NA_SOLICITED | NA_OVERRIDE
    icmp = bytearray(pkt[40:])
    want = int.from_bytes(icmp[2:4], "big")
    icmp[2:4] = b"\0\0"
    assert slow_checksum(a6(VIP6), a6(CLIENT_IP6), bytes(icmp)) == want
    dad = parse_nd(build_na(a6(VIP6), ALL_NODES, GW_C, solicited=False, router=False))
    assert dad.flags == NA_OVERRIDE and dad.dst == ALL_NODES


def _resum(pkt: bytearray) -> bytes:
    pkt[42:44] = b"\0\0"
    pkt[42:44] = icmpv6_checksum(bytes(pkt[8:24]), bytes(pkt[24:40]), pkt[40:]).to_bytes(2, "big")
    return bytes(pkt)


def test_parse_nd_rejects_what_rfc_4861_discards() -> None:
    good = bytearray(build_ns(a6(CLIENT_IP6), a6(GW_CLIENT_IP6), CLIENT))
    hop = bytearray(good)
    hop[7] = 64
    bad_sum = bytearray(good)
    bad_sum[43] ^= 0xFF
    zero_opt = bytearray(good)
    zero_opt[65] = 0  # the option's length
    long_opt = bytearray(good)
    long_opt[65] = 2  # 16 octets, but only 8 follow
    mcast_target = bytearray(good)
    mcast_target[48:64] = ALL_NODES
    code = bytearray(good)
    code[41] = 1
    dad_with_slla = bytearray(good)
    dad_with_slla[8:24] = bytes(16)
    short = bytearray(good[:40 + 20])
    short[4:6] = (20).to_bytes(2, "big")
    cases = {"bad_nd_hop_limit": bytes(hop), "bad_nd_checksum": bytes(bad_sum),
             "bad_nd_option": [_resum(zero_opt), _resum(long_opt)],
             "bad_nd": [_resum(mcast_target), _resum(code), _resum(dad_with_slla),
                        _resum(short), bytes(good[:30])]}
    for reason, packets in cases.items():
        for pkt in packets if isinstance(packets, list) else [packets]:
            with pytest.raises(NdError) as exc:
                parse_nd(pkt)
            assert exc.value.reason == reason, (reason, exc.value)
    solicited_to_group = bytearray(build_na(a6(VIP6), ALL_NODES, GW_C, solicited=True))
    with pytest.raises(NdError, match="solicited advertisement to a multicast"):
        parse_nd(solicited_to_group)
    with pytest.raises(ValueError, match="duplicate address detection"):
        build_ns(bytes(16), a6(GW_CLIENT_IP6), CLIENT)
    assert parse_nd(bytes(good)).target == a6(GW_CLIENT_IP6)  # the unmodified one is fine


def test_router_advertisement_is_recognised_not_decoded() -> None:
    icmp = bytearray(16)
    icmp[0] = ND_RA
    src, dst = a6("fe80::1"), ALL_NODES
    icmp[2:4] = icmpv6_checksum(src, dst, icmp).to_bytes(2, "big")
    pkt = (6 << 28).to_bytes(4, "big") + (16).to_bytes(2, "big") + bytes((58, 255)) + src + dst
    msg = parse_nd(pkt + bytes(icmp))
    assert msg.type == ND_RA and msg.target is None


# --------------------------------------------------------------------------- the driver, no sockets


class FakeSock:
    """Records what the driver sends (vnet_hdr off: plain Ethernet frames)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendmsg(self, parts: tuple[bytes, ...]) -> int:
        data = b"".join(parts)  # the driver gathers a frame from pieces
        self.sent.append(data)
        return len(data)

    def getsockopt(self, *_: int) -> bytes:
        return bytes(8)  # PACKET_STATISTICS: no packets, no drops


def _driver() -> Driver:
    drv = Driver(Gateway(default_config()), "gc", "gs", vnet_hdr=False, clock=lambda: 0.0)
    drv.ports["client"] = _Port("client", "gc", FakeSock(), GW_C, [], 1500,  # type: ignore
                                addrs6=[a6(GW_CLIENT_IP6), a6(VIP6)])
    drv.ports["server"] = _Port("server", "gs", FakeSock(), GW_S, [], 1500,  # type: ignore
                                addrs6=[a6(GW_SERVER_IP6)])
    return drv


def _feed(drv: Driver, leg: str, frame: bytes, now: float = 0.0) -> None:
    drv._buf[:len(frame)] = frame
    drv._frame(drv.ports[leg], len(frame), now)  # type: ignore[index]


def _sent(drv: Driver, leg: str) -> list[bytes]:
    sock = drv.ports[leg].sock  # type: ignore[index]
    out = list(sock.sent)  # type: ignore[attr-defined]
    sock.sent.clear()  # type: ignore[attr-defined]
    return out


def _eth6(dst: bytes, src: bytes, pkt: bytes) -> bytes:
    return dst + src + b"\x86\xdd" + pkt


def test_driver_answers_solicitations_for_its_addresses_only() -> None:
    drv = _driver()
    for target in (GW_CLIENT_IP6, VIP6):
        ns = build_ns(a6(CLIENT_IP6), a6(target), CLIENT)
        _feed(drv, "client", _eth6(multicast_mac(solicited_node(a6(target))), CLIENT, ns))
        (frame,) = _sent(drv, "client")
        assert frame[:6] == CLIENT and frame[6:12] == GW_C and frame[12:14] == b"\x86\xdd"
        na = parse_nd(frame[14:])
        assert (na.type, na.src, na.dst, na.target, na.lladdr) == (
            ND_NA, a6(target), a6(CLIENT_IP6), a6(target), GW_C)
        assert na.flags & NA_SOLICITED
    # Someone else's address: learn nothing, say nothing.
    other = build_ns(a6("2001:db8:1::77"), a6("2001:db8:1::99"), mac("02:00:00:00:00:77"))
    _feed(drv, "client", _eth6(multicast_mac(solicited_node(a6("2001:db8:1::99"))),
                               mac("02:00:00:00:00:77"), other))
    assert _sent(drv, "client") == []
    neigh = drv.ports["client"].neigh
    assert a6("2001:db8:1::77") not in neigh and neigh[a6(CLIENT_IP6)] == CLIENT
    # A duplicate address probe for our address is defended to all-nodes, unsolicited.
    dad = bytearray(build_ns(a6(CLIENT_IP6), a6(GW_CLIENT_IP6), CLIENT))
    dad[8:24] = bytes(16)
    dad = bytearray(dad[:40 + 24])
    dad[4:6] = (24).to_bytes(2, "big")
    _feed(drv, "client", _eth6(multicast_mac(solicited_node(a6(GW_CLIENT_IP6))), CLIENT,
                               _resum(dad)))
    (frame,) = _sent(drv, "client")
    na = parse_nd(frame[14:])
    assert frame[:6] == multicast_mac(ALL_NODES) and na.dst == ALL_NODES
    assert not na.flags & NA_SOLICITED
    # A solicitation that crossed a router is dropped and counted.
    hop = bytearray(build_ns(a6(CLIENT_IP6), a6(GW_CLIENT_IP6), CLIENT))
    hop[7] = 64
    _feed(drv, "client", _eth6(GW_C, CLIENT, bytes(hop)))
    assert _sent(drv, "client") == []
    assert drv.counters["drops"]["bad_nd_hop_limit"] == 1
    assert drv.counters["nd"]["replies_sent"] == 3


def test_ipv6_connection_resolves_its_server_by_neighbor_discovery() -> None:
    drv = _driver()
    syn = codec.build(version=6, src=a6(CLIENT_IP6), dst=a6(VIP6), sport=40000, dport=80,
                      seq=1000, ack=0, flags=0x02, window=65535, mss=1440, wscale=7,
                      sack_permitted=True)
    _feed(drv, "client", _eth6(GW_C, CLIENT, syn))
    (frame,) = _sent(drv, "client")
    assert frame[:6] == CLIENT  # learnt from the SYN's frame, no solicitation needed
    synack = codec.parse(frame[14:])
    assert synack.flags & 0x12 == 0x12 and synack.src == a6(VIP6)
    req = b"GET /size/10 HTTP/1.1\r\nHost: x\r\n\r\n"
    ack = codec.build(version=6, src=a6(CLIENT_IP6), dst=a6(VIP6), sport=40000, dport=80,
                      seq=1001, ack=(synack.seq + 1) & 0xFFFFFFFF, flags=0x18, window=512,
                      payload=req)
    _feed(drv, "client", _eth6(GW_C, CLIENT, ack))
    # The core opens to a server of pool static6; its MAC is unknown: one solicitation.
    (frame,) = _sent(drv, "server")
    ns = parse_nd(frame[14:])
    assert ns.type == ND_NS and ns.src == a6(GW_SERVER_IP6) and ns.lladdr == GW_S
    server = ns.target
    assert server in (a6(SERVER_IPS6[0]), a6(SERVER_IPS6[1]))
    assert frame[:6] == multicast_mac(solicited_node(server)) and ns.dst == solicited_node(server)
    # An advertisement for an address nobody asked about teaches nothing.
    stray = build_na(a6("2001:db8:2::55"), a6(GW_SERVER_IP6), S1, solicited=True)
    _feed(drv, "server", _eth6(GW_S, S1, stray))
    assert a6("2001:db8:2::55") not in drv.ports["server"].neigh and not _sent(drv, "server")
    # The server's answer releases the queued SYN, to its MAC.
    na = build_na(server, a6(GW_SERVER_IP6), S1, solicited=True, router=False)
    _feed(drv, "server", _eth6(GW_S, S1, na))
    (frame,) = _sent(drv, "server")
    assert frame[:6] == S1 and frame[6:12] == GW_S and frame[12:14] == b"\x86\xdd"
    syn_out = codec.parse(frame[14:])
    assert (syn_out.src, syn_out.dst, syn_out.dport, syn_out.flags & 0x12) == (
        a6(GW_SERVER_IP6), server, 80, 0x02)
    assert drv.counters["nd"]["learned"] == 1 and drv.ports["server"].neigh[server] == S1
    assert drv.stats_json()["driver"]["interfaces"]["server"]["addresses6"] == [GW_SERVER_IP6]


def test_unanswered_solicitations_are_bounded() -> None:
    drv = _driver()
    port = drv.ports["server"]
    pkt = codec.build(version=6, src=a6(GW_SERVER_IP6), dst=a6("2001:db8:2::99"), sport=1,
                      dport=80, seq=1, ack=0, flags=0x02, window=1000)
    for _ in range(10):  # queued, bounded per address
        drv._emit(port, pkt, 0.0)
    for t in range(1, 10):
        drv._arp_tick(float(t))
    sent = _sent(drv, "server")
    assert len(sent) == ARP_TRIES and all(parse_nd(f[14:]).type == ND_NS for f in sent)
    assert not port.pending and drv.counters["drops"]["nd_unresolved"] == 8
    assert drv.counters["drops"]["nd_queue_full"] == 2
    # No IPv6 address on the leg: no solicitation from :: (that would be DAD), a drop.
    port.addrs6 = []
    drv._emit(port, pkt, 20.0)
    drv._arp_tick(20.0)
    assert _sent(drv, "server") == [] and drv.counters["drops"]["nd_unresolved"] == 9


def test_gso_header_for_an_oversize_ipv6_segment() -> None:
    payload = response_body(3000)
    pkt = codec.build(version=6, src=a6(VIP6), dst=a6(CLIENT_IP6), sport=80, dport=40000,
                      seq=5, ack=6, flags=0x18, window=100, payload=payload, tsval=1, tsecr=2)
    got = _gso(pkt, 1500, 1428)
    assert got is not None
    vnet, pieces = got
    out = b"".join(pieces)
    flags, kind, hdr_len, size, start, offset = VNET.unpack(vnet)
    assert (flags, kind) == (VNET_F_NEEDS_CSUM, GSO_TCPV6)
    assert (hdr_len, size, start, offset) == (14 + 40 + 32, 1428, 14 + 40, 16)
    # Completing the partial checksum as the kernel does yields the real one.
    seg = bytearray(out[40:])
    seg[16:18] = internet_checksum(seg).to_bytes(2, "big")
    assert tcp_checksum(a6(VIP6), a6(CLIENT_IP6), seg) == 0 and bytes(seg) == pkt[40:]


# --------------------------------------------------------------------------- the lab (root)

URL6 = f"http://[{VIP6}]"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab(f"e{os.getpid() & 0xFFFF:04x}{time.monotonic_ns() % 100:02d}", servers=3,
              gateway_kernel="out", ipv6=True)
    try:
        yield lab.up()
    finally:
        lab.down()
        assert not lab.existing_namespaces()


@pytest.fixture
def gateway(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(*args: str) -> GatewayProcess:
        gw = GatewayProcess(lab, tmp_path / f"stats{len(started)}.json", *args)
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            gw.kill()


def curl(lab: Lab, url: str, out: Path | None = None,
         fmt: str = "%{http_code} %header{x-server}") -> str:
    argv = ["curl", "-sS", "-g", "--max-time", "30", "-o", str(out or "/dev/null"), "-w", fmt,
            url]
    res = lab.run("client", argv, capture_output=True, text=True, timeout=40)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_curl6_gets_on_the_fast_path_with_servers_found_by_nd(
        lab: Lab, gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    gw = gateway()
    body = tmp_path / "body"
    seen = set()
    for n in (1, 1000, 70_000, 3):
        code, server = curl(lab, f"{URL6}/size/{n}", body).split()
        assert code == "200" and body.read_bytes() == response_body(n)
        seen.add(server)
    assert seen == {"s1", "s2"}  # round robin over pool static6
    # L7 routing over IPv6: /api/ goes to pool api6 (s3; the server has no such page).
    assert curl(lab, f"{URL6}/api/v1") == "404 s3"
    # IPv4 in the same lab and the same gateway run.
    assert curl(lab, f"http://{VIP}/size/500", body) == "200 s1"
    assert body.read_bytes() == response_body(500)
    stats = gw.stop()
    core, drv = stats["gateway"], stats["driver"]
    assert core["sessions_spliced"] == 6 and core["sessions_handed_off"] == 0
    nd = drv["nd"]
    assert nd["requests_sent"] >= 3 and nd["learned"] >= 3, nd  # s1, s2, s3 by ND
    neigh = drv["interfaces"]["server"]["neighbours"]
    for k, addr in enumerate(SERVER_IPS6, start=1):
        assert neigh[addr] == server_mac(k)
    assert drv["arp"]["requests_sent"] >= 1  # and IPv4's server by ARP
    assert drv["offload"]["partial_checksums"] > 0


_SPLIT_CLIENT6 = """\
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=20)
assert s.family == socket.AF_INET6
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = b"GET /size/50000 HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
s.sendall(req[:9])
time.sleep(0.3)
s.sendall(req[9:])
for _ in range(100_000):
    data = s.recv(1 << 16)
    if not data:
        break
    sys.stdout.buffer.write(data)
"""


def test_request_in_two_segments_over_ipv6_is_handed_off(
        lab: Lab, gateway: Callable[..., GatewayProcess]) -> None:
    gw = gateway()
    res = lab.run("client", [sys.executable, "-c", _SPLIT_CLIENT6, VIP6], capture_output=True,
                  timeout=30)
    assert res.returncode == 0, res.stderr
    head, _, body = res.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == response_body(50_000)
    core = gw.stop()["gateway"]
    assert core["handoffs"].get("PARTIAL_REQUEST") == 1 and core["sessions_spliced"] == 0


def test_10_mib_over_ipv6_byte_exact(lab: Lab, gateway: Callable[..., GatewayProcess],
                                     tmp_path: Path, record_property: Any) -> None:
    gw = gateway()
    n = 10 * 2**20
    out = tmp_path / "big"
    code, size, speed = curl(lab, f"{URL6}/size/{n}", out,
                             fmt="%{http_code} %{size_download} %{speed_download}").split()
    assert (code, int(size)) == ("200", n)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(response_body(n)).digest()
    record_property("mb_per_s", round(float(speed) / 1e6, 1))
    stats = gw.stop()
    core, drv = stats["gateway"], stats["driver"]
    assert core["sessions_spliced"] == 1 and core["bytes_server_to_client"] >= n
    assert drv["offload"].get("gso_frames", 0) > 0  # IPv6 super-frames arrived whole
    assert drv["offload"].get("gso_sent", 0) > 0  # and left as GSO_TCPV6 frames


def test_client_resolves_the_gateway_by_nd(lab: Lab,
                                           gateway: Callable[..., GatewayProcess]) -> None:
    gw = gateway()
    # Without its permanent entry the client must solicit its default router: we answer.
    lab.run("client", ["ip", "-6", "neigh", "del", GW_CLIENT_IP6, "dev", CLIENT_IF],
            check=True)
    try:
        for n in (10, 20, 30):
            assert curl(lab, f"{URL6}/size/{n}").startswith("200 ")
        shown = lab.run("client", ["ip", "-6", "neigh", "show", GW_CLIENT_IP6],
                        capture_output=True, text=True, check=True).stdout
    finally:
        lab.run("client", ["ip", "-6", "neigh", "replace", GW_CLIENT_IP6, "lladdr",
                           GW_CLIENT_MAC, "dev", CLIENT_IF, "nud", "permanent"], check=True)
    assert GW_CLIENT_MAC in shown and "PERMANENT" not in shown, shown  # learnt, not configured
    stats = gw.stop()
    assert stats["gateway"]["sessions_spliced"] == 3
    assert stats["driver"]["nd"].get("replies_sent", 0) >= 1, stats["driver"]["nd"]


def test_unresolvable_ipv6_server_is_bounded(lab: Lab, gateway: Callable[..., GatewayProcess],
                                             tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    old = '"[2001:db8:2::11]:80", "[2001:db8:2::12]:80"'
    assert old in DEFAULT_CONFIG_TOML
    config.write_text(DEFAULT_CONFIG_TOML.replace(old, '"[2001:db8:2::99]:80"'))
    gw = gateway("--config", str(config))
    res = lab.run("client", ["curl", "-sS", "-g", "--max-time", "4", "-o", "/dev/null",
                             f"{URL6}/"], capture_output=True, text=True, timeout=20)
    assert res.returncode != 0  # no server: no response
    drv = gw.stop()["driver"]
    assert drv["nd"]["requests_sent"] >= ARP_TRIES, drv
    assert drv["drops"].get("nd_unresolved", 0) >= 1, drv
    assert "2001:db8:2::99" not in drv["interfaces"]["server"]["neighbours"]

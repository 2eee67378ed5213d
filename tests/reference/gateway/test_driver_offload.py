"""The driver's bulk path without sockets: a partial-checksum super-frame is relayed without
summing its payload, and what leaves is exactly what completing the checksum first gave."""

from __future__ import annotations

from reference.gateway import codec
from reference.gateway._checksum import internet_checksum, tcp_checksum
from reference.gateway.config import default_config
from reference.gateway.driver import GSO_TCPV4, VNET, VNET_F_NEEDS_CSUM, Driver, _Port
from reference.gateway.gateway import CoreSettings, Gateway
from spec.segment import ACK, PSH, SYN
from tests.reference.gateway.test_driver_ipv6 import FakeSock
from tests.reference.gateway.test_gateway import (
    C_ISN,
    G_ISN,
    GS_ISN,
    GW,
    REQ,
    S_ISN,
    emitted,
    from_client,
    isn_source,
)

GW_C, GW_S = b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x03"
PEER_C, PEER_S = b"\x02\x00\x00\x00\x00\x10", b"\x02\x00\x00\x00\x00\x11"
BODY = bytes(range(256)) * 200  # 51 200 bytes: one GSO super-frame from the server


def spliced_gateway() -> tuple[Gateway, codec.Packet]:
    """A core with one spliced session (timestamps on); returns it and its server SYN."""
    gw = Gateway(default_config(), isn_source=isn_source, core=CoreSettings(gso_output=True))
    synack = emitted(from_client(gw, seq=C_ISN, flags=SYN, mss=1460, tsval=1, tsecr=0),
                     "client")[0]
    from_client(gw, seq=C_ISN + 1, ack=(G_ISN + 1) % 2**32, flags=ACK, tsval=2,
                tsecr=synack.tsval)
    syn = emitted(from_client(gw, seq=C_ISN + 1, ack=(G_ISN + 1) % 2**32, flags=ACK | PSH,
                              payload=REQ, tsval=3, tsecr=synack.tsval), "server")[0]
    gw.handle("server", codec.build(version=4, src=syn.dst, dst=GW, sport=80, dport=syn.sport,
                                    seq=S_ISN, ack=(GS_ISN + 1) % 2**32, flags=SYN | ACK,
                                    window=65535, mss=1460, tsval=100, tsecr=syn.tsval),
              now=0.1)
    return gw, syn


def driver(gw: Gateway) -> Driver:
    drv = Driver(gw, "gc", "gs", vnet_hdr=True, clock=lambda: 0.2)
    drv.ports["client"] = _Port("client", "gc", FakeSock(), GW_C, [], 1500)  # type: ignore
    drv.ports["server"] = _Port("server", "gs", FakeSock(), GW_S, [], 1500)  # type: ignore
    drv._gso_above = 1500
    return drv


def test_partial_super_frame_leaves_as_if_its_checksum_had_been_completed() -> None:
    gw_a, syn = spliced_gateway()
    gw_b, _ = spliced_gateway()
    data = codec.build(version=4, src=syn.dst, dst=GW, sport=80, dport=syn.sport,
                       seq=S_ISN + 1, ack=(GS_ISN + 1 + len(REQ)) % 2**32, flags=ACK,
                       window=500, payload=BODY, tsval=101, tsecr=5)
    # As veth hands it over: CHECKSUM_PARTIAL, the field holding the pseudo-header sum.
    partial = bytearray(data)
    pseudo = int.from_bytes(syn.dst + GW, "big") + 6 + len(data) - 20
    partial[36:38] = ((pseudo - 1) % 0xFFFF + 1).to_bytes(2, "big")
    vnet = VNET.pack(VNET_F_NEEDS_CSUM, GSO_TCPV4, 14 + 32, 1448, 34, 16)
    frame = vnet + GW_S + PEER_S + b"\x08\x00" + bytes(partial)
    drv = driver(gw_a)
    drv.ports["client"].neigh[codec.addr_bytes("198.51.100.2")] = PEER_C
    drv._buf[:len(frame)] = frame
    drv._frame(drv.ports["server"], len(frame), 0.2)
    assert drv.counters["offload"]["partial_checksums_left"] == 1
    (sent,) = drv.ports["client"].sock.sent  # type: ignore[attr-defined]
    flags, kind, _, size, start, offset = VNET.unpack_from(sent)
    assert (flags, kind, size, start, offset) == (VNET_F_NEEDS_CSUM, GSO_TCPV4, 1448, 34, 16)
    out = bytearray(sent[VNET.size + 14:])
    out[36:38] = internet_checksum(out[20:]).to_bytes(2, "big")  # what the kernel does
    # The same frame with its checksum completed up front, through an identical core.
    (want,) = [a.packet for a in gw_b.handle("server", data, now=0.2)]
    assert bytes(out) == want
    assert tcp_checksum(want[12:16], want[16:20], want[20:]) == 0
    assert codec.parse(want).payload == BODY


def test_partial_frame_within_the_mtu_is_still_completed() -> None:
    gw, syn = spliced_gateway()
    data = codec.build(version=4, src=syn.dst, dst=GW, sport=80, dport=syn.sport,
                       seq=S_ISN + 1, ack=(GS_ISN + 1 + len(REQ)) % 2**32, flags=ACK,
                       window=500, payload=BODY[:1000], tsval=101, tsecr=5)
    partial = bytearray(data)
    pseudo = int.from_bytes(syn.dst + GW, "big") + 6 + len(data) - 20
    partial[36:38] = ((pseudo - 1) % 0xFFFF + 1).to_bytes(2, "big")
    frame = VNET.pack(VNET_F_NEEDS_CSUM, 0, 0, 0, 34, 16) + GW_S + PEER_S + b"\x08\x00" + \
        bytes(partial)
    drv = driver(gw)
    drv.ports["client"].neigh[codec.addr_bytes("198.51.100.2")] = PEER_C
    drv._buf[:len(frame)] = frame
    drv._frame(drv.ports["server"], len(frame), 0.2)
    assert "partial_checksums_left" not in drv.counters["offload"]
    (sent,) = drv.ports["client"].sock.sent  # type: ignore[attr-defined]
    assert sent[:VNET.size] == bytes(VNET.size)  # no offload asked: a whole valid packet
    pkt = sent[VNET.size + 14:]
    assert tcp_checksum(pkt[12:16], pkt[16:20], pkt[20:]) == 0
    assert codec.parse(pkt).payload == BODY[:1000]

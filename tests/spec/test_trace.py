"""Traces must render absolute numbers faithfully and write pcaps Wireshark will trust."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

import dpkt
import pytest
import z3

from spec.segment import ACK, FIN, PSH, SYN, Segment
from spec.topology import (
    CLIENT_IP,
    CLIENT_MAC,
    CLIENT_PORT,
    GW_CLIENT_MAC,
    GW_SERVER_IP,
    GW_SERVER_MAC,
    GW_SERVER_PORT,
    SERVER_IPS,
    SERVER_MAC,
    SERVER_PORT,
    VIP,
    VPORT,
)
from spec.trace import PCAP_EPOCH, Trace

WRAP = 1 << 32


def ones_complement_sum(data: bytes) -> int:
    """16-bit ones'-complement sum, written here so the check is independent of dpkt."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ip_checksum_ok(ip_header: bytes) -> bool:
    return ones_complement_sum(ip_header) == 0xFFFF


def tcp_checksum_ok(ip_header: bytes, tcp_bytes: bytes) -> bool:
    pseudo = ip_header[12:20] + struct.pack("!BBH", 0, 6, len(tcp_bytes))
    return ones_complement_sum(pseudo + tcp_bytes) == 0xFFFF


def sample_trace(server_ip: str = SERVER_IPS[1]) -> Trace:
    """A handshake across the wrap on both legs, data with SACK, and a FIN."""
    t = Trace("wrap handshake", server_ip=server_ip)
    t.add("client", False, Segment(seq=WRAP - 1, ack=0, flags=SYN, mss=1460, wscale=7,
                                   sack_permitted=True, tsval=100, tsecr=0), "client SYN")
    t.add("server", True, Segment(seq=WRAP - 2, ack=0, flags=SYN, mss=1460, wscale=7,
                                  sack_permitted=True, tsval=100, tsecr=0))
    t.add("server", False, Segment(seq=7, ack=WRAP - 1, flags=SYN | ACK, mss=1400,
                                   sack_permitted=True))
    t.add("client", True, Segment(seq=9, ack=0, flags=SYN | ACK, mss=1400, sack_permitted=True))
    t.add("client", False, Segment(seq=0, ack=10, flags=PSH | ACK, payload=b"GET / HTTP/1.0\r\n",
                                   tsval=101, tsecr=5, sack=((20, 30), (40, 50))))
    t.add("server", True, Segment(seq=WRAP - 1, ack=8, flags=PSH | ACK, payload=None, length=16))
    t.add("server", False, Segment(seq=8, ack=15, flags=FIN | ACK, window=1000))
    return t


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        assert reader.snaplen >= 65535
        return list(reader)


def test_render_tags_each_leg_and_direction() -> None:
    lines = sample_trace().render().splitlines()
    assert lines[0].startswith("# wrap handshake")
    assert [line[:2] for line in lines[1:]] == ["c>", "s>", "s<", "c<", "c>", "s>", "s<"]


def test_render_prints_absolute_sequence_numbers_across_the_wrap() -> None:
    t = Trace().add("client", False, Segment(seq=WRAP - 5, ack=WRAP - 1, payload=b"x" * 10),
                    "crosses the wrap")
    line = t.render().splitlines()[1]
    assert line == "c> 0.000 . 4294967291:5(10) ack 4294967295 win 65535  # crosses the wrap"


def test_render_shows_options_like_packetdrill() -> None:
    lines = sample_trace().render().splitlines()
    assert lines[1] == ("c> 0.000 S 4294967295:4294967295(0) win 65535 "
                        "<mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7>  # client SYN")
    assert lines[5].endswith("<nop,nop,TS val 101 ecr 5,nop,nop,sack 20:30 40:50>")
    assert " ack " not in lines[2]  # a SYN without the ACK flag shows no ack field


def test_pcap_round_trips_with_addresses_checksums_and_fields(tmp_path: Path) -> None:
    trace = sample_trace()
    records = read_pcap(trace.write_pcap(tmp_path / "both.pcap"))
    assert len(records) == len(trace.packets)
    ends = {
        "client": ((CLIENT_MAC, CLIENT_IP, CLIENT_PORT), (GW_CLIENT_MAC, VIP, VPORT)),
        "server": ((SERVER_MAC, SERVER_IPS[1], SERVER_PORT),
                   (GW_SERVER_MAC, GW_SERVER_IP, GW_SERVER_PORT)),
    }
    for index, ((ts, frame), p) in enumerate(zip(records, trace.packets, strict=True)):
        assert ts == pytest.approx(PCAP_EPOCH + index / 1000, abs=1e-6)
        peer, gw = ends[p.leg]
        src, dst = (gw, peer) if p.from_gateway else (peer, gw)
        eth = dpkt.ethernet.Ethernet(frame)
        ip, tcp = eth.data, eth.data.data
        assert (eth.src.hex(":"), socket.inet_ntoa(ip.src), tcp.sport) == src
        assert (eth.dst.hex(":"), socket.inet_ntoa(ip.dst), tcp.dport) == dst
        assert (ip.ttl, ip.df, ip.id) == (64, 1, index + 1)
        raw_ip = frame[14:]
        header_len = (raw_ip[0] & 0x0F) * 4
        assert ip_checksum_ok(raw_ip[:header_len])
        assert tcp_checksum_ok(raw_ip[:header_len], raw_ip[header_len:ip.len])
        seg = p.seg
        assert (tcp.seq, tcp.ack, tcp.flags, tcp.win) == (seg.seq, seg.ack, seg.flags, seg.window)
        assert len(tcp.data) == seg.length
        if seg.payload is not None:
            assert tcp.data == seg.payload


def test_pcap_options_decode_back_to_the_segment(tmp_path: Path) -> None:
    records = read_pcap(sample_trace().write_pcap(tmp_path / "t.pcap"))

    def options(i: int) -> list[tuple[int, bytes]]:
        tcp = dpkt.ethernet.Ethernet(records[i][1]).data.data
        assert len(tcp.opts) % 4 == 0 and tcp.off == 5 + len(tcp.opts) // 4
        return [o for o in dpkt.tcp.parse_opts(tcp.opts) if o[0] != dpkt.tcp.TCP_OPT_NOP]

    assert options(0) == [(2, struct.pack("!H", 1460)), (4, b""),
                          (8, struct.pack("!II", 100, 0)), (3, b"\x07")]
    assert options(3) == [(2, struct.pack("!H", 1400)), (4, b"")]
    assert options(4) == [(8, struct.pack("!II", 101, 5)), (5, struct.pack("!4I", 20, 30, 40, 50))]
    assert options(6) == []


@pytest.mark.parametrize(("tsval", "fits"), [(None, 4), (1, 3)])
def test_sack_keeps_only_the_blocks_that_fit_in_40_option_bytes(
        tmp_path: Path, tsval: int | None, fits: int) -> None:
    blocks = tuple((10 * i, 10 * i + 5) for i in range(5))
    t = Trace().add("client", True, Segment(seq=1, ack=2, tsval=tsval, sack=blocks))
    tcp = dpkt.ethernet.Ethernet(read_pcap(t.write_pcap(tmp_path / "s.pcap"))[0][1]).data.data
    assert len(tcp.opts) <= 40
    sack = dict(dpkt.tcp.parse_opts(tcp.opts))[5]
    assert struct.unpack(f"!{2 * fits}I", sack) == tuple(e for b in blocks[:fits] for e in b)
    assert f"[{5 - fits} sack block(s) did not fit]" in t.render()


def test_filler_payload_is_deterministic_and_sequence_anchored(tmp_path: Path) -> None:
    t = Trace()
    t.add("server", True, Segment(seq=WRAP - 4, payload=None, length=12))
    t.add("server", True, Segment(seq=0, payload=None, length=4))  # retransmits the tail
    first, second = (dpkt.ethernet.Ethernet(f).data.data.data
                     for _, f in read_pcap(t.write_pcap(tmp_path / "f.pcap")))
    assert first == b"pathfastpath"
    assert second == first[4:8]


def test_write_pcaps_splits_the_legs(tmp_path: Path) -> None:
    trace = sample_trace()
    client, server = trace.write_pcaps(tmp_path / "out", "cex")
    assert (client.name, server.name) == ("cex-client.pcap", "cex-server.pcap")
    for path, leg in ((client, "client"), (server, "server")):
        ids = [dpkt.ethernet.Ethernet(f).data.id for _, f in read_pcap(path)]
        assert ids == [i + 1 for i, p in enumerate(trace.packets) if p.leg == leg]
    ports = {dpkt.ethernet.Ethernet(f).data.data.dport for _, f in read_pcap(server)}
    assert ports == {SERVER_PORT, GW_SERVER_PORT}
    assert {socket.inet_ntoa(dpkt.ethernet.Ethernet(f).data.src)
            for _, f in read_pcap(client)} == {CLIENT_IP, VIP}


def test_pcaps_are_byte_identical_across_writes(tmp_path: Path) -> None:
    a = sample_trace().write_pcap(tmp_path / "a.pcap")
    b = sample_trace().write_pcap(tmp_path / "b.pcap")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("value", [z3.BitVecVal(5, 32), 5.0, "5"])
def test_non_int_field_raises_type_error_pointing_at_model_eval(value: object) -> None:
    t = Trace().add("client", False, Segment(seq=1))
    with pytest.raises(TypeError, match=r"packet 1: seq .*concrete ints.*as_long\(\)"):
        t.add("server", True, Segment(seq=value))


def test_out_of_range_window_raises_value_error_naming_index_and_field() -> None:
    t = sample_trace()
    with pytest.raises(ValueError, match=r"packet 7: window = 65536"):
        t.add("client", True, Segment(seq=1, window=1 << 16))
    assert len(t.packets) == 7


@pytest.mark.parametrize(("field", "value"), [("seq", WRAP), ("ack", -1), ("tsval", WRAP)])
def test_out_of_range_32_bit_fields_are_rejected(field: str, value: int) -> None:
    seg = Segment(seq=0, tsval=0).with_(**{field: value})
    with pytest.raises(ValueError, match=rf"packet 0: {field} = "):
        Trace().add("client", False, seg)


def test_checksum_checker_detects_a_corrupted_packet(tmp_path: Path) -> None:
    frame = read_pcap(sample_trace().write_pcap(tmp_path / "c.pcap"))[4][1]
    raw_ip = bytearray(frame[14:])
    assert ip_checksum_ok(bytes(raw_ip[:20])) and tcp_checksum_ok(bytes(raw_ip[:20]),
                                                                   bytes(raw_ip[20:]))
    raw_ip[-1] ^= 0x01  # one payload bit
    assert not tcp_checksum_ok(bytes(raw_ip[:20]), bytes(raw_ip[20:]))
    raw_ip[8] ^= 0x01  # the TTL
    assert not ip_checksum_ok(bytes(raw_ip[:20]))


def test_server_ip_selects_the_server_leg_address(tmp_path: Path) -> None:
    t = Trace(server_ip=SERVER_IPS[2]).add("server", False, Segment(seq=1))
    ip = dpkt.ethernet.Ethernet(read_pcap(t.write_pcap(tmp_path / "x.pcap"))[0][1]).data
    assert ipaddress.IPv4Address(ip.src) == ipaddress.IPv4Address(SERVER_IPS[2])

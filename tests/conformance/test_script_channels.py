"""The lab channel sends the harness's TCP segments as the lab's kernels send theirs: the
checksum left to offload (pseudo-header sum in the field, NEEDS_CSUM in the vnet header), so
they reach a gateway's kernel as CHECKSUM_PARTIAL and are not verified in software there.

Why it matters: the nftables ``synproxy`` statement verifies a CHECKSUM_NONE SYN with the
IPv4 routine even on IPv6 and drops every valid IPv6 SYN so sent; the scripted IPv6 cases
then all failed against ``--gateway netfilter`` while curl (offloaded) passed. The last test
plays a scripted IPv6 case through SYNPROXY in a lab (root only).
"""

from __future__ import annotations

import os
import shutil
import struct

import pytest

from conformance.script import build_packet, fragment
from conformance.script_channels import (
    VNET,
    VNET_F_NEEDS_CSUM,
    VNET_ZERO,
    LabChannel,
    offload_tcp_checksum,
)
from reference.gateway import codec

ADDRS = {4: ("198.51.100.2", "192.0.2.10"), 6: ("2001:db8:1::2", "2001:db8::10")}


def _syn(version: int, payload: bytes = b"") -> bytes:
    src, dst = ADDRS[version]
    return build_packet(src=src, dst=dst, sport=700, dport=80, seq=1000, ack=0,
                        flags=0x02 if not payload else 0x18, window=64240, payload=payload,
                        mss=1460, wscale=7, sack_permitted=True, tsval=1, tsecr=0,
                        options=[(253, b"\x12\x34")] if payload else ())


def _sum16(data: bytes) -> int:
    """RFC 1071 ones' complement sum (end-around carry), written out independently."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _pseudo_header(pkt: bytes, version: int) -> bytes:
    if version == 4:
        return pkt[12:20] + b"\0\x06" + (len(pkt) - 20).to_bytes(2, "big")
    return pkt[8:40] + (len(pkt) - 40).to_bytes(4, "big") + b"\0\0\0\x06"


@pytest.mark.parametrize("payload", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n!"])
@pytest.mark.parametrize("version", [4, 6])
def test_a_segment_leaves_with_its_checksum_left_to_offload(version: int,
                                                            payload: bytes) -> None:
    pkt = _syn(version, payload)
    t = 20 if version == 4 else 40
    vnet, wire = offload_tcp_checksum(pkt)
    flags, gso, _, _, start, offset = VNET.unpack(vnet)
    assert (flags, gso, start, offset) == (VNET_F_NEEDS_CSUM, 0, 14 + t, 16)
    # Only the checksum field differs, and it holds the pseudo-header sum (what a kernel
    # with TX checksum offload leaves there) for the right pseudo-header of each family.
    assert wire[:t + 16] == pkt[:t + 16] and wire[t + 18:] == pkt[t + 18:]
    assert int.from_bytes(wire[t + 16:t + 18], "big") == _sum16(_pseudo_header(pkt, version))
    # What the device (or the kernel, without the offload) then writes: sum from
    # csum_start over the segment, field included, inverted: the original valid checksum.
    done = ~_sum16(wire[t:]) & 0xFFFF
    assert done == int.from_bytes(pkt[t + 16:t + 18], "big")
    codec.parse(bytearray(pkt))  # the original was valid to begin with


@pytest.mark.parametrize("version", [4, 6])
def test_what_cannot_be_offloaded_goes_as_it_is(version: int) -> None:
    pkt = _syn(version, b"x" * 100)
    for piece in fragment(pkt, 48, 7):  # fragments: no whole segment to sum
        assert offload_tcp_checksum(piece) == (VNET_ZERO, piece)
    bad = bytearray(pkt)
    bad[-1] ^= 0x40  # a bad checksum stays bad: the receiver must verify it and see it
    assert offload_tcp_checksum(bytes(bad)) == (VNET_ZERO, bytes(bad))
    assert offload_tcp_checksum(pkt + b"\0\0") == (VNET_ZERO, pkt + b"\0\0")  # trailing bytes


class _Sock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


@pytest.mark.parametrize("version", [4, 6])
def test_the_lab_channel_sends_offloaded_and_records_the_wire_frame(version: int) -> None:
    ch = LabChannel(lab=None)
    sock = _Sock()
    ch._socks = {"client": sock}  # type: ignore[dict-item]
    pkt = _syn(version)
    ch.send("client", pkt)
    (data,) = sock.sent
    vnet, frame = data[:VNET.size], data[VNET.size:]
    assert VNET.unpack(vnet)[0] == VNET_F_NEEDS_CSUM  # not CHECKSUM_NONE at the gateway
    t = 14 + (20 if version == 4 else 40)
    assert int.from_bytes(frame[t + 16:t + 18], "big") \
        == _sum16(_pseudo_header(pkt, version))
    # The recorded frame (the script's pcaps, the tap's own-frame filter) is the wire's:
    # full checksum, the packet exactly as built.
    assert ch.frames[-1].packet == pkt and ch._sent[-1] == ch.frames[-1].frame


def _skip_unless_lab() -> None:
    from conformance.runner import preflight

    why = preflight()
    if why:
        pytest.skip(f"needs the lab: {why}")
    for tool in ("tcpdump", "ethtool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (bash setup.sh installs it)")


def test_synproxy_answers_the_scripted_ipv6_client_like_the_ipv4_one(tmp_path) -> None:
    """Against the kernel's SYNPROXY + DNAT, a scripted case gets the same verdict on IPv6
    as on IPv4 (before the fix: the IPv6 SYN was dropped, the case failed)."""
    _skip_unless_lab()
    from conformance.cases import select
    from conformance.runner import Runner, RunOptions

    opts = RunOptions(gateway="netfilter", families=(4, 6), pcap_dir=tmp_path / "pcaps",
                      lab_name=f"sch{os.getpid() & 0xFFFF:04x}", tshark=False)
    suite = Runner(opts).run(select("TC23"))
    verdicts = {r.family: (r.verdict, r.reason) for r in suite.results}
    assert verdicts[6][0] == verdicts[4][0] == "pass", verdicts

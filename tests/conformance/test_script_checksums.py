"""The lab channel completes checksums that a kernel left to offload (only the pseudo-header
sum in the field) and leaves a really bad checksum bad."""

from __future__ import annotations

import pytest

from conformance.script_channels import ETH_P_IP, ETH_P_IPV6, _complete_partial_checksum
from reference.gateway import codec
from reference.gateway.codec import DecodeError


def _packet(version: int) -> bytearray:
    src, dst = ("198.51.100.2", "192.0.2.10") if version == 4 else ("2001:db8:1::2",
                                                                     "2001:db8::10")
    return bytearray(codec.build(version=version, src=codec.addr_bytes(src),
                                 dst=codec.addr_bytes(dst), sport=700, dport=80, seq=1, ack=2,
                                 flags=0x18, window=100, payload=b"GET / HTTP/1.1\r\n\r\n"))


def _pseudo_sum(pkt: bytearray, version: int) -> int:
    if version == 4:
        pseudo = bytes(pkt[12:20]) + b"\0\x06" + (len(pkt) - 20).to_bytes(2, "big")
    else:
        pseudo = bytes(pkt[8:40]) + (len(pkt) - 40).to_bytes(4, "big") + b"\0\0\0\x06"
    words = sum(int.from_bytes(pseudo[i:i + 2], "big") for i in range(0, len(pseudo), 2))
    return (words - 1) % 0xFFFF + 1


@pytest.mark.parametrize("version", [4, 6])
def test_a_partial_checksum_is_completed(version: int) -> None:
    pkt = _packet(version)
    t = 20 if version == 4 else 40
    good = bytes(pkt)
    pkt[t + 16:t + 18] = _pseudo_sum(pkt, version).to_bytes(2, "big")
    with pytest.raises(DecodeError):
        codec.parse(bytes(pkt))
    frame = bytearray(14) + pkt
    _complete_partial_checksum(frame, 14, ETH_P_IP if version == 4 else ETH_P_IPV6,
                               len(frame))
    assert bytes(frame[14:]) == good


@pytest.mark.parametrize("version", [4, 6])
def test_a_bad_checksum_that_is_not_the_partial_sum_stays_bad(version: int) -> None:
    pkt = _packet(version)
    t = 20 if version == 4 else 40
    pkt[t + 16] ^= 0x55
    frame = bytearray(14) + pkt
    _complete_partial_checksum(frame, 14, ETH_P_IP if version == 4 else ETH_P_IPV6,
                               len(frame))
    with pytest.raises(DecodeError):
        codec.parse(bytes(frame[14:]))

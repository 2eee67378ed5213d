"""Regressions for three reference-gateway bugs the conformance suite's scripts found.

* A client RST far outside the window was relayed and ended the fast-path session, while the
  server (rightly) ignored it: the response was then dropped (RFC 5961 §3).
* After a handoff, the normal path's first ACK to the client carried no timestamps although
  they were negotiated (RFC 7323 §3.2).
* IPv6 sessions announced the IPv4 MSS (1460), 20 bytes more than a 1500-byte link carries.
"""

from __future__ import annotations

from conformance.script import play
from conformance.script_channels import MemoryChannel, reference_gateway
from conformance.script_library import READY
from reference.gateway import codec
from spec.segment import RST, SYN


def _run(name: str, **kw: object) -> tuple[object, MemoryChannel]:
    channel = MemoryChannel(reference_gateway())
    result = play(READY[name](**kw), channel)
    return result, channel


def test_out_of_window_client_rst_is_dropped_and_the_response_still_arrives() -> None:
    result, channel = _run("rst-out-of-window", survive=True)
    assert result.ok, result.summary()  # type: ignore[attr-defined]
    assert channel.gateway.stats.drops["fast_path:rst_out_of_window"] == 1
    relayed = [f for f in channel.frames if f.leg == "server" and f.sender == "gateway"
               and codec.parse(f.packet).flags & RST]
    assert relayed == []


def test_in_window_client_rst_still_ends_both_sides() -> None:
    result, channel = _run("rst-in-window")
    assert result.ok, result.summary()  # type: ignore[attr-defined]
    assert channel.gateway.stats.drops["fast_path:rst_out_of_window"] == 0


def test_every_segment_to_the_client_after_a_handoff_carries_timestamps() -> None:
    result, channel = _run("split-request")
    assert result.ok, result.summary()  # type: ignore[attr-defined]
    assert channel.gateway.stats.sessions_handed_off == 1
    to_client = [codec.parse(f.packet) for f in channel.frames
                 if f.leg == "client" and f.sender == "gateway"]
    assert len(to_client) > 3
    missing = [p for p in to_client if not p.flags & RST and p.tsval is None]
    assert missing == []


def test_ipv6_sessions_announce_the_mss_of_a_1500_byte_link() -> None:
    for family, want in ((4, 1460), (6, 1440)):
        result, channel = _run("get", family=family)
        assert result.ok, result.summary()  # type: ignore[attr-defined]
        synacks = [codec.parse(f.packet) for f in channel.frames
                   if f.sender == "gateway" and codec.parse(f.packet).flags & SYN]
        client_side = [p for p in synacks if p.version == family and p.sport == 80]
        server_side = [p for p in synacks if p.dport == 80]
        assert client_side and all(p.mss == want for p in client_side), family
        assert server_side and all(p.mss is not None and p.mss <= want for p in server_side)

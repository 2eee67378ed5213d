"""Every per-leg property fails on a crafted trace that breaks it and passes on a good one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.flows import read_leg
from conformance.leg_checks import LEG_IDS, analyse
from conformance.properties import PROPERTIES, Context
from tests.conformance import ACK, FIN, PSH, RST, SYN, Trace

REQ = b"GET / HTTP/1.1\r\n\r\n"
Q = len(REQ)


def judge(tmp_path: Path, tr: Trace, pid: str) -> tuple[str, str]:
    leg = read_leg(tr.write(tmp_path / "t.pcap"))
    assert len(leg.conns) == 1, leg.conns
    f = PROPERTIES[pid].judge(leg.conns[0], Context())
    return f.verdict, f.detail


def test_every_leg_property_is_registered() -> None:
    assert all(PROPERTIES[p].scope == "leg" for p in LEG_IDS)


@pytest.mark.parametrize("v6", [False, True])
def test_good_conversation_passes_everything(tmp_path: Path, v6: bool) -> None:
    leg = read_leg(Trace(v6=v6).conversation().write(tmp_path / "good.pcap"))
    got = analyse(leg.conns[0])
    assert {p: f.verdict for p, f in got.items()} == {
        **dict.fromkeys(LEG_IDS, "pass"), "leg.rst_window": "n/a"}


def _synack_wrong_ack(t: Trace) -> None:
    t.handshake(synack_ack=2)


def _retrans_differs(t: Trace) -> None:
    t.handshake()
    t.c(1, 1, PSH | ACK, REQ)
    t.c(1, 1, PSH | ACK, b"POST" + REQ[4:])


def _no_ack_flag(t: Trace) -> None:
    t.handshake()
    t.c(1, 1, PSH, REQ)


def _ack_unseen(t: Trace) -> None:
    t.handshake()
    t.c(1, 1, PSH | ACK, REQ)
    t.s(1, 1 + Q + 100)


def _beyond_window(t: Trace) -> None:
    t.c(0, 0, SYN, mss=1460, wscale=0, sack_permitted=True)
    t.s(0, 1, SYN | ACK, mss=1460, wscale=0, sack_permitted=True, window=10)
    t.c(1, 1, PSH | ACK, REQ)  # 18 bytes into a 10-byte window


def _above_mss(t: Trace) -> None:
    t.c(0, 0, SYN, mss=536, wscale=7, sack_permitted=True)
    t.s(0, 1, SYN | ACK, mss=1460, wscale=7, sack_permitted=True)
    t.c(1, 1, PSH | ACK, REQ)
    t.s(1, 1 + Q, ACK, b"y" * 1000)


def _sack_not_negotiated(t: Trace) -> None:
    t.c(0, 0, SYN, mss=1460, wscale=7, sack_permitted=False)
    t.s(0, 1, SYN | ACK, mss=1460, wscale=7, sack_permitted=True)
    t.c(1, 1, ACK, sack=((t.isn_s + 10, t.isn_s + 20),))


def _ts_missing(t: Trace) -> None:
    t.handshake()
    t.c(1, 1, PSH | ACK, REQ, ts=False)


def _ts_back(t: Trace) -> None:
    t.handshake()
    t.c(1, 1, PSH | ACK, REQ, tsval=5)


def _bad_checksum(t: Trace) -> None:
    t.handshake()
    raw = bytearray(t.raw(True, t.isn_c + 1, t.isn_s + 1, PSH | ACK, REQ, tsval=9999,
                          tsecr=200))
    raw[-1] ^= 0xFF
    t.add_raw(bytes(raw))


def _oow_rst_ends(t: Trace) -> None:
    t.handshake()
    t.c(1, 1, RST, ts=False)  # fine so far: in window ...
    t.frames.pop()
    t.c(1 + 10_000_000, 1, RST, ts=False)  # ... this one is far out of window
    t.c(1, 1, PSH | ACK, REQ)
    t.s(1, 1 + Q, RST | ACK, ts=False)  # the server dropped the connection


def _data_after_fin(t: Trace) -> None:
    t.handshake()
    t.c(1, 1, FIN | ACK)
    t.c(1, 1, PSH | ACK, REQ)


BREAKERS: dict[str, Callable[[Trace], None]] = {
    "leg.handshake": _synack_wrong_ack,
    "leg.seq": _retrans_differs,
    "leg.ack_unseen": _ack_unseen,
    "leg.window": _beyond_window,
    "leg.mss": _above_mss,
    "leg.options": _sack_not_negotiated,
    "leg.ts_monotonic": _ts_back,
    "leg.checksum": _bad_checksum,
    "leg.rst_window": _oow_rst_ends,
    "leg.fin": _data_after_fin,
}
MORE_BREAKERS = [("leg.seq", _no_ack_flag), ("leg.options", _ts_missing)]


def test_every_leg_property_has_a_breaker() -> None:
    assert set(BREAKERS) == set(LEG_IDS)


@pytest.mark.parametrize(("pid", "breaker"), [*BREAKERS.items(), *MORE_BREAKERS],
                         ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_breaking_trace_fails(tmp_path: Path, pid: str,
                              breaker: Callable[[Trace], None]) -> None:
    t = Trace()
    breaker(t)
    verdict, detail = judge(tmp_path, t, pid)
    assert verdict == "fail", detail
    assert "frame" in detail


def test_fail_names_evidence_frames(tmp_path: Path) -> None:
    t = Trace()
    _ack_unseen(t)
    leg = read_leg(t.write(tmp_path / "t.pcap"))
    f = analyse(leg.conns[0])["leg.ack_unseen"]
    assert f.packets == (("client", 5),)


def test_zero_window_probe_is_allowed(tmp_path: Path) -> None:
    t = Trace(ws=None)
    t.c(0, 0, SYN, mss=1460, sack_permitted=True)
    t.s(0, 1, SYN | ACK, mss=1460, sack_permitted=True, window=Q)
    t.c(1, 1, PSH | ACK, REQ)
    t.s(1, 1 + Q, ACK, window=0)
    t.c(1 + Q, 1, ACK, b"z")  # 1-byte probe past a zero window
    assert judge(tmp_path, t, "leg.window")[0] == "pass"


def test_super_frame_above_mss_is_legal(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1, 1, PSH | ACK, REQ)
    t.s(1, 1 + Q, ACK, b"y" * 4000)  # GSO: IP length 4052 > 1500
    assert judge(tmp_path, t, "leg.mss")[0] == "pass"
    assert judge(tmp_path, t, "leg.window")[0] == "pass"


def test_same_bytes_retransmitted_pass(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1, 1, PSH | ACK, REQ)
    t.c(1, 1, PSH | ACK, REQ)
    t.c(5, 1, PSH | ACK, REQ[4:])
    assert judge(tmp_path, t, "leg.seq")[0] == "pass"


def test_reordered_old_segment_with_older_tsval_passes(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1 + 5, 1, ACK, REQ[5:], tsval=20000)
    t.c(1, 1, ACK, REQ[:5], tsval=19999)  # sent first, overtaken on the way
    assert judge(tmp_path, t, "leg.ts_monotonic")[0] == "pass"


def test_partial_checksum_is_legal(tmp_path: Path) -> None:
    from reference.gateway._checksum import fold, pseudo_sum
    t = Trace()
    t.handshake()
    raw = bytearray(t.raw(True, t.isn_c + 1, t.isn_s + 1, PSH | ACK, REQ, tsval=9999,
                          tsecr=200))
    seglen = len(raw) - 20
    raw[36:38] = fold(pseudo_sum(t.ca, t.sa, seglen)).to_bytes(2, "big")
    t.add_raw(bytes(raw))
    assert judge(tmp_path, t, "leg.checksum") == ("pass", "checksums valid (1 offloaded "
                                                          "(partial))")


def test_oow_rst_ignored_passes_and_in_window_rst_passes(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1 + 10_000_000, 1, RST, ts=False)
    t.c(1, 1, PSH | ACK, REQ)
    t.s(1, 1 + Q)  # the server carries on: it ignored the RST
    assert judge(tmp_path, t, "leg.rst_window")[0] == "pass"
    t2 = Trace()
    t2.handshake()
    t2.c(1, 1, RST, ts=False)
    assert judge(tmp_path / ".." / tmp_path.name, t2, "leg.rst_window")[0] == "pass"


def _server_answers_stale_acks_with_rsts(t: Trace, *, client_resets: bool) -> None:
    """The response is acknowledged; the client side may reset; then the server sends two
    RSTs below the window, as a closed server's kernel answers the client's older ACKs that
    a jittery link delivered after the client's RST."""
    body = b"x" * 3000
    t.handshake()
    t.c(1, 1, PSH | ACK, REQ)
    t.s(1, 1 + Q, PSH | ACK, body)
    t.c(1 + Q, 1 + len(body), ACK)
    if client_resets:
        t.c(1 + Q, 1 + len(body), RST | ACK, ts=False)
    t.s(1 + 1000, 0, RST, ts=False)
    t.s(1 + 2000, 0, RST, ts=False)


def test_rsts_answering_segments_in_flight_after_the_peers_reset_pass(tmp_path: Path) -> None:
    """HAProxy resets the server side once a response is complete; with jitter on the server
    leg, its older ACKs reach the server after that RST (seen on haproxy-http, TC16[v6])."""
    t = Trace()
    _server_answers_stale_acks_with_rsts(t, client_resets=True)
    verdict, detail = judge(tmp_path, t, "leg.rst_window")
    assert verdict == "pass", detail
    assert "acceptable RST had ended the connection" in detail


def test_the_same_rsts_without_the_peers_reset_fail(tmp_path: Path) -> None:
    """Companion: with the connection still open on the client side, the same RSTs ended
    it (the client answered nothing after them): still a failure."""
    t = Trace()
    _server_answers_stale_acks_with_rsts(t, client_resets=False)
    assert judge(tmp_path, t, "leg.rst_window")[0] == "fail"


def test_rst_answering_syn_is_a_refusal(tmp_path: Path) -> None:
    t = Trace()
    t.c(0, 0, SYN, mss=1460)
    t.s(0, 1, RST | ACK, ts=False)
    assert judge(tmp_path, t, "leg.handshake")[0] == "pass"
    assert judge(tmp_path, t, "leg.rst_window")[0] == "pass"


def test_wscale_on_data_segment_fails(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1, 1, PSH | ACK, REQ, wscale=3)
    assert judge(tmp_path, t, "leg.options")[0] == "fail"


def test_mid_stream_capture_is_judged_with_notes(tmp_path: Path) -> None:
    t = Trace()
    t.c(1, 1, PSH | ACK, REQ)
    t.s(1, 1 + Q, ACK, b"hello")
    t.c(1 + Q, 6)
    leg = read_leg(t.write(tmp_path / "mid.pcap"))
    c = leg.conns[0]
    assert c.client == ("198.51.100.2", 40000)
    assert any("handshake not captured" in p for p in c.problems)
    got = analyse(c)
    assert got["leg.handshake"].verdict == "unknown"
    assert got["leg.window"].verdict == "unknown"
    assert got["leg.ack_unseen"].verdict == "pass"
    assert c.stream_c2s == REQ and c.stream_s2c == b"hello"


def test_one_direction_only(tmp_path: Path) -> None:
    t = Trace()
    t.c(0, 0, SYN, mss=1460)
    t.c(1, 1, ACK)
    t.c(1, 1, PSH | ACK, REQ)
    leg = read_leg(t.write(tmp_path / "one.pcap"))
    c = leg.conns[0]
    assert "only client->server direction captured" in c.problems
    assert any("one direction only" in n for n in leg.notes)
    got = analyse(c)
    assert got["leg.ack_unseen"].verdict == "unknown"
    assert got["leg.handshake"].verdict == "unknown"
    assert c.stream_c2s == REQ


def test_a_bad_ipv4_header_checksum_fails_leg_checksum(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    raw = bytearray(t.raw(True, t.isn_c + 1, t.isn_s + 1, PSH | ACK, REQ, tsval=9999,
                          tsecr=200))
    raw[8] ^= 0x01  # the TTL: the TCP checksum does not cover it, the IPv4 header's does
    t.add_raw(bytes(raw))
    verdict, detail = judge(tmp_path, t, "leg.checksum")
    assert verdict == "fail" and "IPv4 header checksum wrong" in detail


def test_a_tsval_drop_after_a_retransmission_is_unknown_not_fail(tmp_path: Path) -> None:
    """Behind a reordering path, an original segment can arrive after the retransmission
    of an earlier one: its lower TSval proves nothing about the sender."""
    t = Trace()
    t.handshake()
    t.c(1, 1, ACK, REQ[:5], tsval=20000)
    t.c(1, 1, ACK, REQ[:5], tsval=20010)  # retransmitted: data out of order from here on
    t.c(1 + 5, 1, ACK, REQ[5:], tsval=20001)  # the next original, delayed on the path
    assert judge(tmp_path, t, "leg.ts_monotonic")[0] == "unknown"


def test_a_tsval_drop_on_in_order_new_data_fails(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1, 1, ACK, REQ[:5], tsval=20010)
    t.c(1 + 5, 1, ACK, REQ[5:], tsval=20001)
    assert judge(tmp_path, t, "leg.ts_monotonic")[0] == "fail"

"""tshark's second opinion: one-sided anomalies between paired connections."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from conformance import tshark
from conformance.checker import check_pcaps
from reference.gateway.scenarios import SCENARIOS
from tests.conformance import ACK, PSH, Trace
from tests.conformance.test_checker import simulate

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def test_compare_reports_one_sided_kinds_only() -> None:
    got = tshark.compare(Counter(retransmission=3, duplicate_ack=1), Counter(duplicate_ack=2))
    assert got == ["retransmission x3 on the client leg only"]
    assert tshark.compare(Counter(), Counter(lost_segment=1)) == [
        "lost_segment x1 on the server leg only"]


@needs_tshark
def test_expert_flags_a_retransmission(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1, 1, PSH | ACK, b"hello")
    t.c(1, 1, PSH | ACK, b"hello")
    flags = tshark.expert(t.write(tmp_path / "r.pcap"))
    assert flags[5]["retransmission"] == 1


@needs_tshark
def test_second_opinion_spliced_impairments_show_on_both_legs(tmp_path: Path) -> None:
    cp, sp = simulate(SCENARIOS["impaired_client_leg_fast"], tmp_path)
    rep = check_pcaps(cp, sp, tshark=True)
    (f,) = rep.info
    assert f.property == tshark.PID and f.verdict == "pass"
    assert "retransmission" in f.detail, f.detail


@needs_tshark
def test_second_opinion_reports_a_one_sided_retransmission(tmp_path: Path) -> None:
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    client = Trace()
    client.handshake()
    client.c(1, 1, PSH | ACK, req)
    client.c(1, 1, PSH | ACK, req)  # retransmitted on the client leg only
    server = Trace(isn_c=70_000, isn_s=90_000, cport=33000)
    server.t += 0.01
    server.handshake()
    server.c(1, 1, PSH | ACK, req)
    rep = check_pcaps(client.write(tmp_path / "c.pcap"), server.write(tmp_path / "s.pcap"),
                      tshark=True)
    (f,) = rep.info
    assert "retransmission x1 on the client leg only" in f.detail, f.detail
    assert ("client", 1) in f.packets


def test_missing_tshark_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tshark, "find_tshark", lambda: None)
    rep = check_pcaps(Trace().conversation().write(tmp_path / "c.pcap"), None, tshark=True)
    assert rep.info[0].verdict == "unknown" and "not installed" in rep.info[0].detail

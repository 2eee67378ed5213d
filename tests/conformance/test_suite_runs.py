"""The whole suite on the wire: the reference gateway passes every case, and deliberately
broken gateways (tests/conformance/broken_gateway.py, through the ``command`` adapter) fail
the cases and properties that exist to catch them. Root and network namespaces needed; CI is
root.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import report
from conformance.cases import CASES, select
from conformance.flows import read_leg
from conformance.properties import REFERENCE
from conformance.runner import Runner, RunOptions, preflight


def _skip_unless_lab() -> None:
    why = preflight()
    if why:
        pytest.skip(f"needs the lab: {why}")
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is missing (bash setup.sh installs it)")


def test_the_reference_gateway_passes_every_case_on_both_families(tmp_path: Path) -> None:
    _skip_unless_lab()
    suite = Runner(RunOptions(gateway="reference", pcap_dir=tmp_path / "pcaps",
                              tshark=False)).run(CASES)
    bad = [f"{r.label} {r.verdict}: {r.reason}" for r in suite.results
           if r.verdict in ("fail", "error")]
    assert bad == []
    counts = suite.counts()
    skipped = [r for r in suite.results if r.verdict == "skip"]
    assert counts["pass"] == 2 * len(CASES) - len(skipped)
    assert [r.label for r in skipped] == ["TC26[v6]"]  # IPv6 fragments, with its reason
    # Every case judged real traffic: both legs captured, connections paired, paths as
    # the capabilities predict (spliced or handed-off; never proxied on the reference).
    for r in suite.results:
        if r.verdict != "pass":
            continue
        legs = {leg: read_leg(path, leg) for leg, path in r.pcaps.items()}
        assert all(lg.conns for lg in legs.values()), r.label
        assert set(r.paths) <= {"spliced", "handed-off"}, (r.label, r.paths)
    handed = {r.case_id for r in suite.results if "handed-off" in r.paths}
    assert {"TC07", "TC08", "TC23", "TC24", "TC26", "TC27"} <= handed
    # The reports a CI system reads.
    junit, js = tmp_path / "junit.xml", tmp_path / "report.json"
    report.write_junit(suite, junit)
    report.write_json(suite, js)
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert len(cases) == 2 * len(CASES)
    assert len([c for c in cases if c.find("skipped") is not None]) == 1
    data = json.loads(js.read_text())
    assert data["ok"] is True and data["capabilities"]["splices"] is True
    assert data["gateway_stats"] is not None


@pytest.mark.parametrize(("mode", "case", "prop"), [
    ("corrupt", "TC01", "cross.stream_s2c"),
    ("truncate", "TC19", "cross.fin_rst"),
    ("early-ack", "TC01", "cross.ack_safety"),
])
def test_a_broken_gateway_fails_the_case_built_to_catch_it(tmp_path: Path, mode: str,
                                                           case: str, prop: str) -> None:
    _skip_unless_lab()
    opts = RunOptions(gateway="command", families=(4,), pcap_dir=tmp_path / "pcaps",
                      command=[sys.executable, "-m", "tests.conformance.broken_gateway", mode],
                      gateway_kernel="out", capabilities=REFERENCE, tshark=False)
    suite = Runner(opts).run(select(case))
    (res,) = suite.results
    assert res.verdict == "fail", (res.verdict, res.reason)
    failed = {p.id for p in res.properties if p.verdict == "fail"}
    assert prop in failed, (failed, res.reason)
    assert os.path.getsize(res.pcaps["client"]) > 24


def _request_with_fin_behind_a_slow_server_leg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> object:
    """TC39 (request and FIN in one segment: the reference hands it off, and its normal
    path relays the response in the server's own segments) with every frame on the server
    leg held 30 ms in the impairment node. The proxy's ACKs to the server are sent at once,
    before the client can acknowledge what they cover; only a capture behind the delay sees
    them after the client's ACKs."""
    real_setup = Runner.setup

    def setup(self: Runner) -> None:
        real_setup(self)
        assert self.lab is not None
        self.lab.set_impairment("server", delay_ms=30.0, seed=9)

    monkeypatch.setattr(Runner, "setup", setup)
    suite = Runner(RunOptions(gateway="reference", families=(4,), pcap_dir=tmp_path / "pcaps",
                              tshark=False)).run(select("TC39"))
    (res,) = suite.results
    return res


def test_captures_next_to_the_gateway_keep_the_order_it_acted_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The legs are captured where the gateway's frames arrive, so a delay between the
    gateway and a peer cannot make a proxy's ACK look like a relayed one (CI once failed
    TC39[v6] on cross.ack_safety when a scheduling delay in the server leg's impairment node
    did what this test's 30 ms delay does every time)."""
    _skip_unless_lab()
    res = _request_with_fin_behind_a_slow_server_leg(tmp_path, monkeypatch)
    assert res.verdict == "pass", res.reason
    assert res.paths == ["handed-off"], res.paths


def test_captures_behind_the_delay_would_misjudge_the_same_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Companion: captured at the peers' ends of the legs (behind the impairment nodes),
    the same handed-off session looks spliced and fails ACK safety."""
    _skip_unless_lab()
    from conformance import capture

    monkeypatch.setattr(capture, "leg_point", lambda lab, leg: capture.LEG_POINTS[leg])
    res = _request_with_fin_behind_a_slow_server_leg(tmp_path, monkeypatch)
    assert res.verdict == "fail", (res.verdict, res.reason)
    failed = {p.id for p in res.properties if p.verdict == "fail"}
    assert "cross.ack_safety" in failed, (failed, res.reason)


def _impair_taps_while_capturing(tmp_path: Path, old_order: bool) -> dict[str, list[str]]:
    """Taps on the capture points (the impairment nodes' gateway-facing interfaces) while a
    real-peer case that restarts both nodes with its own impairments is being captured."""
    from contextlib import ExitStack

    from conformance import peers
    from conformance.capture import BothLegs, leg_point
    from conformance.runner import capturing
    from conformance.stimulus import Impairment, RealPeer
    from tests.conformance.taps import taps

    stim = RealPeer(impair=(("client", Impairment(seed=1)), ("server", Impairment(seed=2))))
    runner = Runner(RunOptions(gateway="reference", families=(4,), pcap_dir=tmp_path,
                               tshark=False))
    try:
        runner.setup()
        lab = runner.lab
        with ExitStack() as stack:
            if old_order:  # the runner's order before: shaping inside the captured stimulus
                legs = stack.enter_context(BothLegs(lab, tmp_path, "old"))
                stack.enter_context(peers.shaped(lab, stim))
            else:
                legs, _ = stack.enter_context(capturing(lab, tmp_path, "new", stim))
            got = {leg: taps(lab, *leg_point(lab, leg)) for leg in ("client", "server")}
            legs.stop()
        return got
    finally:
        runner.teardown()


def test_an_impaired_case_restarts_its_nodes_before_the_captures_start(tmp_path: Path) -> None:
    """A case's impairment nodes bridge on the very interfaces the legs are captured on; they
    are restarted before tcpdump starts, so tcpdump is served each frame first there too."""
    _skip_unless_lab()
    from tests.conformance.taps import CAPTURE_FIRST

    assert _impair_taps_while_capturing(tmp_path, old_order=False) == {
        "client": CAPTURE_FIRST, "server": CAPTURE_FIRST}


def test_impairments_applied_inside_the_capture_would_be_served_first(tmp_path: Path) -> None:
    """Companion: shaping after the captures start puts the nodes' sockets ahead of tcpdump."""
    _skip_unless_lab()
    from tests.conformance.taps import CAPTURE_FIRST

    assert _impair_taps_while_capturing(tmp_path, old_order=True) == {
        "client": CAPTURE_FIRST[::-1], "server": CAPTURE_FIRST[::-1]}

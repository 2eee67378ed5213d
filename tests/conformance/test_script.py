"""Scripted packets: every ready script passes on the reference core in memory, fails
(naming the step) on cores broken on purpose, and a few run on a real lab (root only)."""

from __future__ import annotations

import inspect
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt
import pytest

from conformance.script import (
    Script,
    ScriptError,
    Step,
    build_packet,
    check_http,
    default_addresses,
    fragment,
    http_request,
    http_response,
    play,
)
from conformance.script_channels import LabChannel, MemoryChannel, answer, reference_gateway
from conformance.script_library import READY
from reference.gateway import codec
from reference.gateway.actions import Action, Emit
from reference.gateway.fragments import Reassembler
from reference.gateway.gateway import Gateway
from reference.gateway.sim import response_body
from spec.segment import ACK, FIN, PSH, RST, SYN
from tests.conformance.taps import CAPTURE_FIRST, taps

ROOT = Path(__file__).resolve().parents[2]
CASES = [(name, fam) for name in READY for fam in (4, 6)
         if not (name == "ip-fragments" and fam == 6)]


# --------------------------------------------------------------------------- helpers


def _mangle(gw: Gateway, fn: Callable[[Emit], list[Emit]]) -> Gateway:
    """Break a reference core on purpose: every Emit passes through ``fn``."""
    real = gw.handle

    def handle(leg: str, packet: bytes, *, now: float, checksum_verified: bool = False
               ) -> list[Action]:
        out: list[Action] = []
        for a in real(leg, packet, now=now, checksum_verified=checksum_verified):  # type: ignore
            out += fn(a) if isinstance(a, Emit) else [a]
        return out

    gw.handle = handle  # type: ignore[method-assign]
    return gw


def _flags(a: Emit) -> int:
    return codec.parse(a.packet).flags or 0


def _rebuild(a: Emit, **change: int) -> Emit:
    p = codec.parse(a.packet)
    fields = dict(src=p.src_str, dst=p.dst_str, sport=p.sport, dport=p.dport, seq=p.seq,
                  ack=p.ack, flags=p.flags, window=p.window, payload=bytes(p.payload),
                  mss=p.mss, wscale=p.wscale, sack_permitted=p.sack_permitted, tsval=p.tsval,
                  tsecr=p.tsecr, sack=p.sack)
    fields.update(change)
    return Emit(a.leg, build_packet(**fields))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- memory channel


@pytest.mark.parametrize(("name", "family"), CASES, ids=[f"{n}-v{f}" for n, f in CASES])
def test_ready_script_passes_on_reference_core(name: str, family: int) -> None:
    script = READY[name](family=family, seed=11)
    assert script.name == name and script.expects
    r = play(script, MemoryChannel())
    assert r.ok, r.text()
    # The reference splices or hands off; it refuses timestamps it cannot honour (RST both).
    assert r.outcome == ("reset" if name == "server-no-timestamps" else "completed"), r.text()
    assert {f.leg for f in r.frames} == {"client", "server"}
    if r.outcome == "completed" and any(s.startswith("expect_http") for s in r.steps):
        assert r.client_data.startswith(b"HTTP/1.1 200 OK\r\n")


def test_script_text_and_symbolic_isns() -> None:
    r = play(READY["fin-race"](seed=5), MemoryChannel())
    assert r.ok
    assert set(r.bindings) == {"C", "G", "GS", "S"}
    assert r.binding_legs == {"C": "client", "G": "client", "GS": "server", "S": "server"}
    text = r.text()
    assert "seq=C+0" in text and "seq=G+0" in text and "seq=GS+0" in text and "seq=S+0" in text
    assert "2. client.expect_synack(bind='G'" in text
    # the same seed gives the same harness ISNs and port
    again = play(READY["fin-race"](seed=5), MemoryChannel())
    assert again.bindings["C"] == r.bindings["C"] and again.bindings["S"] == r.bindings["S"]
    other = play(READY["fin-race"](seed=6), MemoryChannel())
    assert other.bindings["C"] != r.bindings["C"]


def test_pcaps_of_both_legs(tmp_path: Path) -> None:
    r = play(READY["split-request"](), MemoryChannel())
    client, server = r.write_pcaps(tmp_path / "c.pcap", tmp_path / "s.pcap")
    for path, leg in ((client, "client"), (server, "server")):
        with open(path, "rb") as f:
            frames = [(ts, buf) for ts, buf in dpkt.pcap.Reader(f)]
        mine = [fr for fr in r.frames if fr.leg == leg]
        assert len(frames) == len(mine) > 3
        for (_, buf), fr in zip(frames, mine, strict=True):
            eth = dpkt.ethernet.Ethernet(buf)
            assert isinstance(eth.data, dpkt.ip.IP) and isinstance(eth.data.data, dpkt.tcp.TCP)
            assert buf == fr.frame
    a = default_addresses(4)
    first = dpkt.ethernet.Ethernet(r.frames[0].frame)
    assert first.src == bytes.fromhex(a.client_mac.replace(":", ""))
    assert first.dst == bytes.fromhex(a.gw_client_mac.replace(":", ""))
    if shutil.which("tshark"):
        for path in (client, server):
            res = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True,
                                 timeout=60)
            assert res.returncode == 0 and "Malformed" not in res.stdout, res.stderr


def test_broken_core_dropping_the_response_fails_at_receive() -> None:
    def drop_response(a: Emit) -> list[Emit]:
        p = codec.parse(a.packet)
        return [] if a.leg == "client" and len(p.payload) else [a]

    r = play(READY["get"](), MemoryChannel(_mangle(reference_gateway(), drop_response)))
    assert not r.ok and r.outcome == "failed"
    assert r.failed_step == 5 and r.step.startswith("client.receive(until_fin=True")
    assert "timed out" in r.reason and "the peer's FIN" in r.reason
    assert "FAILED at step 5 client.receive" in r.summary()


def test_broken_core_corrupting_the_response_fails_at_expect_http() -> None:
    def corrupt(a: Emit) -> list[Emit]:
        p = codec.parse(a.packet)
        if a.leg == "client" and len(p.payload) > 200:
            body = bytearray(p.payload)
            body[200] ^= 0x01
            return [_rebuild(a, payload=bytes(body))]
        return [a]

    r = play(READY["split-request"](), MemoryChannel(_mangle(reference_gateway(), corrupt)))
    assert not r.ok and r.step == "expect_http([1000])"
    assert "body differs from response_body(1000)" in r.reason


def test_broken_core_not_propagating_rst_fails_at_server_expect_rst() -> None:
    def eat_rst(a: Emit) -> list[Emit]:
        return [] if a.leg == "server" and _flags(a) & RST else [a]

    r = play(READY["rst-in-window"](), MemoryChannel(_mangle(reference_gateway(), eat_rst)))
    assert not r.ok and r.step.startswith("server.expect_rst")


def test_broken_core_with_rst_outside_window_fails() -> None:
    """A relayed RST with a wrong sequence number does not count as an RST."""
    def shift(a: Emit) -> list[Emit]:
        p = codec.parse(a.packet)
        if a.leg == "client" and p.flags & RST:
            return [_rebuild(a, seq=(p.seq + 1_000_000) & 0xFFFFFFFF)]
        return [a]

    r = play(READY["server-resets"](), MemoryChannel(_mangle(reference_gateway(), shift)))
    assert not r.ok and r.step.startswith("client.expect_rst")
    assert "ignored an RST outside its window" in r.reason


def test_refusal_must_reset_both_sides() -> None:
    """server-no-timestamps accepts a clean refusal only if the client gets its RST too."""
    def eat_client_rst(a: Emit) -> list[Emit]:
        return [] if a.leg == "client" and _flags(a) & RST else [a]

    r = play(READY["server-no-timestamps"](),
             MemoryChannel(_mangle(reference_gateway(), eat_client_rst)))
    assert not r.ok and r.step.startswith("server.expect_request")
    assert "server got an RST but the client did not" in r.reason


def test_second_synack_with_another_isn_fails() -> None:
    seen = [0]

    def bump(a: Emit) -> list[Emit]:
        if a.leg == "client" and _flags(a) & (SYN | ACK) == SYN | ACK:
            seen[0] += 1
            if seen[0] == 2:
                return [_rebuild(a, seq=(codec.parse(a.packet).seq + 5) & 0xFFFFFFFF)]
        return [a]

    r = play(READY["duplicate-syn"](), MemoryChannel(_mangle(reference_gateway(), bump)))
    assert not r.ok and "a second SYN with another ISN" in r.reason, r.text()


# --------------------------------------------------------------------------- building blocks


def test_build_packet_extra_option_parses_v4_and_v6() -> None:
    for fam in (4, 6):
        a = default_addresses(fam)
        pkt = build_packet(src=a.client_ip, dst=a.vip, sport=700, dport=80, seq=1, ack=2,
                           flags=ACK | PSH, window=100, payload=b"hello", tsval=5, tsecr=6,
                           options=[(253, b"\x12\x34")])
        p = codec.parse(pkt)  # verifies both checksums
        assert p.unknown_options == (253,) and p.tsval == 5 and bytes(p.payload) == b"hello"
    with pytest.raises(ScriptError, match="do not fit"):
        build_packet(src="192.0.2.1", dst="192.0.2.2", sport=1, dport=2, seq=0, ack=0,
                     flags=ACK, window=1, mss=1460, tsval=1, tsecr=1, sack_permitted=True,
                     wscale=7, options=[(253, bytes(20))])


def test_fragments_reassemble() -> None:
    a = default_addresses(4)
    pkt = build_packet(src=a.client_ip, dst=a.vip, sport=700, dport=80, seq=1, ack=2,
                       flags=ACK | PSH, window=100, payload=bytes(range(100)))
    frags = fragment(pkt, 43, ident=7)  # rounded down to 40
    assert len(frags) == 3 and all(len(f) <= 60 for f in frags)
    re = Reassembler()
    whole = [re.add(f, 0.0) for f in frags][-1]
    assert whole is not None and whole[20:] == pkt[20:] and codec.parse(whole).ip_id == 7
    b = default_addresses(6)
    pkt6 = build_packet(src=b.client_ip, dst=b.vip, sport=700, dport=80, seq=1, ack=2,
                        flags=ACK | FIN, window=100, payload=bytes(100))
    frags6 = fragment(pkt6, 48, ident=9)
    firsts = [codec.parse(f, verify_checksum=False) for f in frags6]
    assert firsts[0].frag_header and firsts[0].more_fragments and firsts[0].sport == 700
    assert not firsts[-1].more_fragments
    assert b"".join(bytes(f[48:]) for f in frags6) == pkt6[40:]


def test_check_http_catches_each_kind_of_problem() -> None:
    good = http_response(10) + http_response(20)
    assert check_http(good, [10, 20]) == []
    assert "Content-Length 20, expected 30" in check_http(good, [10, 30])[0]
    assert "missing or incomplete" in check_http(good[:-1], [10, 20])[0]
    assert "response(s) more than expected" in check_http(good, [10])[0]
    assert "bytes after the last response" in check_http(good + b"x", [10, 20])[0]
    bad = bytearray(good)
    bad[len(http_response(10)) - 3] ^= 1
    assert "body differs from response_body(10) at byte 7" in check_http(bytes(bad),
                                                                         [10, 20])[0]
    assert "not a status line" in check_http(b"garbage\r\n\r\n", [1])[0]


def test_memory_server_answers_like_the_lab_server() -> None:
    resp, close = answer(http_request(5), "s1")
    assert close and resp.endswith(response_body(5))
    assert resp.startswith(b"HTTP/1.1 200 OK\r\nServer: fastpath-lab\r\nX-Server: s1\r\n")
    resp, close = answer(http_request(5, close=False), "s2")
    assert not close and b"Connection: keep-alive" in resp


def test_script_errors() -> None:
    s = Script("server-only")
    s.server.expect_syn()
    with pytest.raises(ScriptError, match="must play the client"):
        play(s, MemoryChannel())
    with pytest.raises(ScriptError, match="needs until_fin"):
        Script("x").client.receive()
    with pytest.raises(ScriptError, match="family"):
        Script("x", family=5)
    with pytest.raises(ScriptError, match="IPv4 only"):
        READY["ip-fragments"](family=6)


def test_binding_conflict_fails_the_step() -> None:
    s = Script("rebind")
    s.client.syn()
    s.client.expect_synack(bind="G")
    s.client.syn()  # the gateway answers the duplicate with the same ISN...
    s.client.expect_synack(bind="C")  # ...which is not the client's own ISN C
    r = play(s, MemoryChannel())
    assert not r.ok and r.failed_step == 4 and "C is bound to" in r.reason


# --------------------------------------------------------------------------- lab (root)


def _lab_unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces and AF_PACKET are Linux only"
    if os.geteuid() != 0:
        return "needs root: network namespaces, raw sockets and nftables"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (bash setup.sh installs it)"
    return None


@pytest.fixture(scope="module")
def lab_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    from reference.lab import Lab

    v6 = {"ipv6": True} if "ipv6" in inspect.signature(Lab).parameters else {}
    lab = Lab(f"sp{os.getpid() & 0xFFFF:04x}{time.monotonic_ns() % 100:02d}", servers=2,
              **v6)  # type: ignore[arg-type]
    log = tmp_path_factory.mktemp("gw") / "gateway.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        lab.up()
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fastpath.cli", "gateway", "--netns", lab.gateway_ns,
                 "--duration", "300"], cwd=ROOT, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15.0)
        line = proc.stdout.readline().decode() if ready else ""
        assert line.startswith("ready "), (line, log.read_text()[-2000:])
        yield lab
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        lab.down()
        assert not lab.existing_namespaces()


def _probe(ch: LabChannel, seen: dict[str, bool]) -> Step:
    return Step("", "probe rules", lambda r: seen.update(ch.rules()))


def test_lab_client_scripts(lab_gateway: object, tmp_path: Path) -> None:
    with LabChannel(lab_gateway) as ch:
        for name in ("split-request", "ip-fragments", "sack-holes"):
            script = READY[name](seed=21)
            seen: dict[str, bool] = {}
            script.steps.insert(3, _probe(ch, seen))
            r = play(script, ch)
            assert r.ok, r.text()
            assert not [f for f in r.frames if f.sender == "kernel"], r.text()
            assert any(f.sender == "server" for f in r.frames)  # the real servers, tapped
            assert seen == {"client": True, "switch": False}, (name, seen)
            assert ch.rules() == {"client": False, "switch": False}
            c, s = r.write_pcaps(tmp_path / f"{name}-c.pcap", tmp_path / f"{name}-s.pcap")
            assert c.stat().st_size > 24 and s.stat().st_size > 24  # the server leg tapped


def test_lab_scripted_server(lab_gateway: object) -> None:
    with LabChannel(lab_gateway) as ch:
        for name in ("fin-race", "server-resets"):
            script = READY[name](seed=31)
            seen: dict[str, bool] = {}
            script.steps.insert(6, _probe(ch, seen))
            r = play(script, ch)
            assert r.ok, r.text()
            assert not [f for f in r.frames if f.sender in ("kernel", "server")], r.text()
            assert seen == {"client": True, "switch": True}, (name, seen)
            assert ch.rules() == {"client": False, "switch": False}
            assert {"GS", "S"} <= set(r.bindings)


def test_lab_failure_still_removes_rules(lab_gateway: object) -> None:
    script = READY["get"](seed=41)
    script.expect_http([999])  # the response is 1000 bytes: this step must fail
    with LabChannel(lab_gateway) as ch:
        r = play(script, ch)
        assert not r.ok and r.step == "expect_http([999])", r.text()
        assert "Content-Length 1000, expected 999" in r.reason
        assert ch.rules() == {"client": False, "switch": False}


def test_lab_ipv6(lab_gateway: object) -> None:
    if not getattr(lab_gateway, "ipv6", False):
        pytest.skip("this Lab has no IPv6 (Lab(ipv6=True) not available)")
    with LabChannel(lab_gateway) as ch:
        for name in ("split-request", "fin-race"):
            r = play(READY[name](seed=51, family=6), ch)
            assert r.ok, r.text()
            assert codec.parse(r.frames[0].packet).version == 6
        assert ch.rules() == {"client": False, "switch": False}


def test_lab_without_suppression_the_kernels_interfere(lab_gateway: object) -> None:
    """The checks above can fail: without the nft rules the client kernel resets the
    gateway's SYN-ACK (its socket does not exist) and the real server answers too."""
    with LabChannel(lab_gateway) as ch:
        ch._install_rules = lambda client, server: None  # type: ignore[method-assign]
        r = play(READY["fin-race"](seed=61), ch)
        kernel = [f for f in r.frames if f.sender == "kernel"]
        assert kernel and codec.parse(kernel[0].packet).flags & RST, r.text()
        assert not r.ok or [f for f in r.frames if f.sender == "server"], r.text()


def _capture_served_first(lab: object) -> bool:
    """tcpdump (a TPACKET ring: ``tpacket_rcv``) is served before the channel's socket
    (``packet_rcv``) on both legs' capture points; a capture stopped mid-check is fine."""
    return all(taps(lab, role, ifname) == CAPTURE_FIRST
               for role, ifname in (("client", "c0"), ("switch", "g0")))


def test_lab_captures_see_each_frame_before_the_scripted_peer_can_answer_it(
        lab_gateway: object, tmp_path: Path) -> None:
    """The runner opens the scripted peers' sockets before tcpdump: a frame is then in the
    pcap before the scripted client can read it, so its ACK can never be captured ahead of
    the segment it acknowledges (CI once failed TC33 on leg.ack_unseen that way)."""
    from conformance.runner import capturing
    from conformance.stimulus import Scripted

    with capturing(lab_gateway, tmp_path, "order", Scripted("get")) as (legs, channel):
        assert channel is not None
        assert _capture_served_first(lab_gateway)
        legs.stop()


def test_lab_channel_opened_after_the_capture_would_be_served_first(
        lab_gateway: object, tmp_path: Path) -> None:
    """Companion: the other order (the runner's old one) is caught by the check above."""
    from conformance.capture import BothLegs

    with BothLegs(lab_gateway, tmp_path, "late") as legs, LabChannel(lab_gateway) as ch:
        ch.open()
        assert not _capture_served_first(lab_gateway)
        assert taps(lab_gateway, "client", "c0") == CAPTURE_FIRST[::-1]
        legs.stop()


def test_a_scripted_client_waits_for_a_closed_window_before_sending(monkeypatch) -> None:
    """A gateway answering the handshake with window 0 (as a SYN proxy does) gets no data
    from the scripted client until it opens the window, here never: the client waits the
    bounded time, then sends and says so."""
    from conformance import script as script_mod
    from conformance.script import play
    from conformance.script_channels import MemoryChannel, reference_gateway
    from conformance.script_library import READY
    from reference.gateway import codec as _codec
    from reference.gateway import fastpath as fp
    from spec.segment import SYN as _SYN

    monkeypatch.setattr(fp, "SYN_WINDOW", 0)
    channel = MemoryChannel(reference_gateway())
    result = play(READY["get"](), channel)
    frames = [(f.time, _codec.parse(f.packet)) for f in channel.frames if f.leg == "client"]
    synack_t = next(t for t, p in frames if p.flags & _SYN and p.sport == 80)
    first_data_t = next(t for t, p in frames if p.payload and p.dport == 80)
    assert first_data_t - synack_t >= script_mod.WINDOW_WAIT
    assert "beyond the peer's window" in result.reason


def _server_conn_after_response() -> object:
    from conformance.script import _Conn

    c = _Conn("server")
    c.irs, c.rcv_nxt = 5000, 5047  # the request is in
    c.iss, c.snd_una, c.snd_nxt = 9000, 9001, 12002  # response and FIN sent, none acked
    return c


def _gateway_segment(flags: int, ack: int) -> codec.Packet:
    return codec.parse(build_packet(src="203.0.113.1", dst="203.0.113.11", sport=40000,
                                    dport=80, seq=5047, ack=ack, flags=flags, window=100))


def test_an_rst_acknowledging_everything_satisfies_the_scripted_peers_expect_ack() -> None:
    """HAProxy resets a server connection once the response is in, and acknowledges the last
    segment and the FIN only in that RST: the scripted server takes it as their ACK."""
    c = _server_conn_after_response()
    c.absorb(None, _gateway_segment(RST | ACK, 12002))  # type: ignore[attr-defined,arg-type]
    assert c.reset and c.snd_una == c.snd_nxt  # type: ignore[attr-defined]


def test_an_rst_without_the_ack_flag_acknowledges_nothing() -> None:
    """Companion: a bare RST carries no acknowledgement, so expect_ack still waits."""
    c = _server_conn_after_response()
    c.absorb(None, _gateway_segment(RST, 12002))  # type: ignore[attr-defined,arg-type]
    assert c.reset and c.snd_una == 9001  # type: ignore[attr-defined]

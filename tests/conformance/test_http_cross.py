"""Cross-leg judging of full (L7) proxies in HTTP terms: a proxy that rewrites heads and
spreads one client connection's requests over several server connections passes; a changed
body, a request no client sent, an answered request that reached no server and a response
cut by the gateway's FIN still fail; on gateways that relay bytes, byte identity stays."""

from __future__ import annotations

from pathlib import Path

from conformance import violations
from conformance.checker import CheckReport, check_pcaps
from conformance.policy import default_policy
from conformance.properties import KINDS
from conformance.violations import ACK, FIN, PSH, RST, Convo, Traffic
from spec.topology import CLIENT_IP, GW_SERVER_IP, SERVER_IPS, VIP, VPORT


def req(path: str, close: bool = False, lower: bool = False) -> bytes:
    conn = "" if lower else f"Connection: {'close' if close else 'keep-alive'}\r\n"
    text = f"GET {path} HTTP/1.1\r\nHost: {VIP}\r\nUser-Agent: t/1\r\n{conn}\r\n"
    return (text.replace("Host:", "host:").replace("User-Agent", "user-agent") if lower
            else text).encode()


def resp(server: str, body: bytes, lower: bool = False) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nX-Server: {server}\r\nContent-Length: {len(body)}\r\n\r\n"
    return (head.lower().replace("http/1.1", "HTTP/1.1").replace(" ok", " OK") if lower
            else head).encode() + body


def craft(*, body_c: tuple[bytes, bytes] | None = None, extra: bytes = b"",
          drop_second: bool = False, cut: int = 0, reset_server: bool = False) -> Traffic:
    """One client connection, two keep-alive requests; a proxy lowercases the heads and
    sends each request on a server connection of its own (to s1, then s2)."""
    bodies = (b"A" * 300, b"B" * 500)
    shown = body_c or bodies
    cl = Convo((CLIENT_IP, 40000), (VIP, VPORT), 0x10000000, 0x20000000)
    t = cl.handshake(0.0)
    frames_s = []
    for k, path in enumerate(("/one", "/two")):
        q = req(path, close=k == 1)
        t += 0.01
        cl.send(t, True, q, ACK | PSH)
        cl.send(t + 0.0001, False)  # the proxy acknowledges the request at once
        if drop_second and k == 1:
            cl.send(t + 0.003, False, resp("s2", shown[k], lower=True), ACK | PSH)
            continue
        sv = Convo((GW_SERVER_IP, 41000 + k), (SERVER_IPS[k], 80), 0x30000000 + k,
                   0x40000000 + k)
        ts = sv.handshake(t + 0.0005)
        sv.send(ts, True, req(path, lower=True), ACK | PSH)
        r = resp(f"s{k + 1}", bodies[k])
        sv.send(ts + 0.001, False, r, ACK | PSH)
        sv.send(ts + 0.0011, True)
        if reset_server:  # HAProxy's way: the response is whole, the client not yet served
            sv.send(ts + 0.0015, True, flags=RST | ACK)
        out = resp(f"s{k + 1}", shown[k], lower=True)
        if cut and k == 1:
            out = out[:-cut]
        cl.send(ts + 0.002, False, out, ACK | PSH)
        cl.send(ts + 0.0021, True)
        if not reset_server:
            sv.send(ts + 0.01, True, flags=FIN | ACK)  # the pool closes its idle connection
            sv.send(ts + 0.0101, False, flags=FIN | ACK)
            sv.send(ts + 0.0102, True)
        frames_s += sv.frames
        t = ts + 0.003
    if extra:
        sv = Convo((GW_SERVER_IP, 42000), (SERVER_IPS[2], 80), 0x50000000, 0x60000000)
        ts = sv.handshake(t)
        sv.send(ts, True, extra, ACK | PSH)
        frames_s += sv.frames
    cl.send(t + 0.02, False, flags=FIN | ACK)
    cl.send(t + 0.021, True, flags=FIN | ACK)
    cl.send(t + 0.022, False)
    return Traffic(cl.frames, sorted(frames_s, key=lambda f: f.t), meta={})


def check(tr: Traffic, tmp: Path, kind: str = "haproxy-http") -> CheckReport:
    violations.write_traffic(tr, tmp)
    return check_pcaps(tmp / "client.pcap", tmp / "server.pcap",
                       policy=default_policy(l7=KINDS[kind].l7), kind=kind)


def fails(rep: CheckReport) -> dict[str, str]:
    return {f.property: f.detail for p in rep.pairs for f in p.findings if f.verdict == "fail"}


def verdicts(rep: CheckReport, pid: str) -> list[str]:
    return [f.verdict for p in rep.pairs for f in p.findings if f.property == pid]


def test_a_rewriting_proxy_with_one_server_connection_per_request_passes(tmp_path: Path
                                                                         ) -> None:
    rep = check(craft(), tmp_path)
    assert not fails(rep), fails(rep)
    assert len(rep.pairs) == 2 and all(p.server is not None for p in rep.pairs)
    assert rep.path_classes() == ["proxied", "proxied"]
    details = [f.detail for p in rep.pairs for f in p.findings
               if f.property == "cross.stream_c2s"]
    assert all(d.startswith("HTTP-equivalent") and "re-cased" in d for d in details), details
    assert verdicts(rep, "cross.ack_safety") == ["n/a", "n/a"]


def test_a_changed_body_byte_fails_stream_s2c(tmp_path: Path) -> None:
    rep = check(craft(body_c=(b"A" * 300, b"B" * 499 + b"X")), tmp_path)
    f = fails(rep)
    assert "body differs at body byte 499" in f["cross.stream_s2c"], f


def test_a_server_request_no_client_sent_fails_pairing(tmp_path: Path) -> None:
    rep = check(craft(extra=req("/never")), tmp_path)
    assert "GET /never" in fails(rep)["cross.pairing"]


def test_an_answered_request_that_reached_no_server_fails_pairing(tmp_path: Path) -> None:
    rep = check(craft(drop_second=True), tmp_path)
    f = fails(rep)
    assert "request #2 (GET /two) was answered" in f["cross.pairing"], f


def test_a_response_cut_by_the_gateways_fin_fails_fin_rst(tmp_path: Path) -> None:
    rep = check(craft(cut=50), tmp_path)
    f = fails(rep)
    assert "truncation: response #2" in f["cross.fin_rst"], f
    assert "cross.stream_s2c" not in f  # a prefix: the close is the bug


def test_byte_identity_stays_the_rule_without_l7(tmp_path: Path) -> None:
    # the same legs from an L4 proxy: a rewritten head is a changed byte
    rep = check(craft(), tmp_path, kind="haproxy-tcp")
    assert "differs at stream offset" in fails(rep)["cross.stream_c2s"]


def test_an_early_ack_makes_a_splice_lookalike_proxied_only_without_splicing(
        tmp_path: Path) -> None:
    tr = violations.v_ack_safety()
    rep = check(tr, tmp_path / "tcp", kind="haproxy-tcp")
    assert rep.path_classes() == ["proxied"] and verdicts(rep, "cross.ack_safety") == ["n/a"]
    rep = check(tr, tmp_path / "ref", kind="reference")
    assert rep.path_classes() == ["spliced"] and "cross.ack_safety" in fails(rep)


def test_a_server_reset_after_its_whole_response_passes_fin_rst(tmp_path: Path) -> None:
    # Seen from HAProxy 2.6 (TC16): RST to the server once the response is whole, while the
    # client is still being served.
    rep = check(craft(reset_server=True), tmp_path)
    assert not fails(rep), fails(rep)
    details = [f.detail for p in rep.pairs for f in p.findings if f.property == "cross.fin_rst"]
    assert any("after its responses were complete" in d for d in details), details


def test_a_server_reset_mid_response_that_the_client_never_hears_of_fails(
        tmp_path: Path) -> None:
    body = b"C" * 2000
    cl = Convo((CLIENT_IP, 40000), (VIP, VPORT), 0x10000000, 0x20000000)
    t = cl.handshake(0.0)
    cl.send(t + 0.01, True, req("/one"), ACK | PSH)
    sv = Convo((GW_SERVER_IP, 41000), (SERVER_IPS[0], 80), 0x30000000, 0x40000000)
    ts = sv.handshake(t + 0.011)
    sv.send(ts, True, req("/one", lower=True), ACK | PSH)
    r = resp("s1", body)
    sv.send(ts + 0.001, False, r[:800], ACK)  # the response is half sent ...
    sv.send(ts + 0.0011, True)
    sv.send(ts + 0.0015, True, flags=RST | ACK)  # ... when the gateway resets the server
    cl.send(ts + 0.002, False, r[:800], ACK)  # the client keeps its half, and no close
    cl.send(ts + 0.0021, True)
    rep = check(Traffic(cl.frames, sv.frames, meta={}), tmp_path)
    assert "came mid-exchange" in fails(rep)["cross.fin_rst"], fails(rep)

"""The violations corpus: two-leg traces that each break exactly one property.

Every judge must be shown to fail on something; these traces are that something, kept as
pcaps (``client.pcap``, ``server.pcap``) with the verdicts they must get (``expected.json``)
so that any checker, ours or a vendor's, can be held to them. Each starts from a good trace
(the in-memory simulator running the real reference core, captured at the gateway's two
interfaces, or a crafted full-proxy conversation) and is mutated in one place.

``python -m conformance.violations --out pcaps/violations`` regenerates the corpus; it is
deterministic (seeded simulator, fixed capture epoch), so a diff means something changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conformance.pcapio import write_pcap
from reference.gateway import codec
from reference.gateway.config import DEFAULT_CONFIG_TOML, default_config, loads
from reference.gateway.gateway import CoreSettings, Gateway
from reference.gateway.scenarios import (
    IPV6_CLIENT,
    IPV6_CONFIG,
    IPV6_VIP,
    SCENARIOS,
    Scenario,
    request,
)
from reference.gateway.sim import ClientPlan, Network, response_body
from spec.topology import (
    CLIENT_IP,
    CLIENT_MAC,
    GW_CLIENT_MAC,
    GW_SERVER_IP,
    GW_SERVER_MAC,
    SERVER_IPS,
    SERVER_MAC,
    VIP,
    VPORT,
)

EPOCH = 1_700_000_000.0
"""Capture start, so that pcaps are byte-identical across runs."""
ISN_SECRET = "fastpath-conformance-corpus"
"""The gateway's ISN key in simulated traces (a random one would change every pcap)."""
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------- frames


@dataclass
class Frame:
    """One captured packet of one leg: time, and the fields we may mutate."""

    t: float
    version: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes = b""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    tsval: int | None = None
    tsecr: int | None = None
    sack: tuple[tuple[int, int], ...] = ()
    raw: bytes | None = None
    """Original bytes, written as is unless a field changed (keeps fragments, options)."""
    bad_checksum: bool = False

    @classmethod
    def parse(cls, t: float, raw: bytes) -> Frame:
        p = codec.parse(raw, verify_checksum=False)
        if not p.first_fragment:
            return cls(t, p.version, p.src, p.dst, 0, 0, 0, 0, 0, 0, raw=raw)
        return cls(t, p.version, p.src, p.dst, p.sport or 0, p.dport or 0, p.seq or 0,
                   p.ack or 0, p.flags or 0, p.window or 0, bytes(p.payload), p.mss,
                   p.wscale, p.sack_permitted, p.tsval, p.tsecr, p.sack, raw=raw)

    def changed(self, **kw: Any) -> Frame:
        """A copy with fields changed; it will be rebuilt (valid checksums) on write."""
        return replace(self, raw=None, **kw)

    def ip_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        b = codec.build(version=self.version, src=self.src, dst=self.dst, sport=self.sport,
                        dport=self.dport, seq=self.seq & M32, ack=self.ack & M32,
                        flags=self.flags, window=self.window, payload=self.payload,
                        mss=self.mss, wscale=self.wscale, sack_permitted=self.sack_permitted,
                        tsval=self.tsval, tsecr=self.tsecr, sack=self.sack)
        if self.bad_checksum:
            ihl = 20 if self.version == 4 else 40
            buf = bytearray(b)
            buf[ihl + 16] ^= 0x5A
            b = bytes(buf)
        return b

    @property
    def from_addr(self) -> str:
        return codec.addr_str(self.src)

    @property
    def is_data(self) -> bool:
        return bool(self.payload)


@dataclass
class Traffic:
    """Both legs as the gateway's two interfaces saw them."""

    client: list[Frame]
    server: list[Frame]
    gw_client: str = VIP
    """The gateway's address on the client leg (frames from it are the gateway's)."""
    gw_server: str = GW_SERVER_IP
    meta: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> Traffic:
        return Traffic(list(self.client), list(self.server), self.gw_client,
                       self.gw_server, dict(self.meta))

    def from_gw(self, leg: str, f: Frame) -> bool:
        return f.from_addr == (self.gw_client if leg == "client" else self.gw_server)

    def leg(self, name: str) -> list[Frame]:
        return self.client if name == "client" else self.server


def _eth(ip: bytes, from_gateway: bool, leg: str) -> bytes:
    if leg == "client":
        macs = (GW_CLIENT_MAC, CLIENT_MAC) if from_gateway else (CLIENT_MAC, GW_CLIENT_MAC)
    else:
        macs = (GW_SERVER_MAC, SERVER_MAC) if from_gateway else (SERVER_MAC, GW_SERVER_MAC)
    src, dst = (bytes.fromhex(m.replace(":", "")) for m in macs)
    etype = b"\x08\x00" if ip[0] >> 4 == 4 else b"\x86\xdd"
    return dst + src + etype + ip


def write_traffic(tr: Traffic, directory: Path) -> tuple[Path, Path]:
    """Write ``client.pcap`` and ``server.pcap`` (Ethernet, microsecond timestamps)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for leg in ("client", "server"):
        frames = sorted(tr.leg(leg), key=lambda f: f.t)  # stable: keeps same-time order
        out.append(write_pcap(directory / f"{leg}.pcap",
                              [(EPOCH + f.t, _eth(f.ip_bytes(), tr.from_gw(leg, f), leg))
                               for f in frames]))
    return out[0], out[1]


# ---------------------------------------------------------------------------- simulator


def simulate(sc: Scenario | str, *, seed: int = 1, extra_clients: int = 0,
             plan: ClientPlan | None = None) -> Traffic:
    """Run a scenario of ``reference.gateway.scenarios`` and capture both legs at the
    gateway: what reached it (after the links' impairments) and what it sent (before)."""
    if isinstance(sc, str):
        sc = SCENARIOS[sc]
    wrap = (lambda *a: (2**32 - 1500) & M32) if sc.near_wrap else None
    config = loads(IPV6_CONFIG, "<ipv6 scenario>") if sc.ipv6 else default_config()
    config = replace(config, isn_secret=ISN_SECRET)  # RFC 6528 ISNs, but reproducible
    gw = Gateway(config, isn_source=wrap, core=CoreSettings(rto_min=0.2, linger=0.5))
    client_addr = IPV6_CLIENT if sc.ipv6 else CLIENT_IP
    net = Network(gw, seed=seed, client_leg=sc.client_leg, server_leg=sc.server_leg,
                  isn=(lambda: 2**32 - 1000) if sc.near_wrap else None,
                  client_addr=client_addr)
    for pool in config.pools.values():
        for srv in pool.servers:
            net.add_server(srv.address, srv.port, sc.server)
    seen: dict[str, list[tuple[float, bytes]]] = {"client": [], "server": []}
    for link, leg in ((net.c2g, "client"), (net.s2g, "server")):
        inner = link.deliver

        def deliver(p: bytes, t: float, inner: Callable[[bytes, float], None] = inner,
                    leg: str = leg) -> None:
            seen[leg].append((t, p))
            inner(p, t)
        link.deliver = deliver
    vip = IPV6_VIP if sc.ipv6 else VIP
    base = replace(plan or sc.plan)
    net.start_client(vip, VPORT, base)
    for k in range(extra_clients):
        net.start_client(vip, VPORT, replace(base, port=base.port + 1 + k),
                         at=0.0005 * (k + 1))
    net.run(until=600.0)
    legs = {}
    for leg, sent in (("client", net.g2c.tap), ("server", net.g2s.tap)):
        tagged = [(t, 0, i, p) for i, (t, p) in enumerate(seen[leg])]
        tagged += [(t, 1, i, p) for i, (t, p) in enumerate(sent)]
        tagged.sort(key=lambda x: (x[0], x[1], x[2]))
        legs[leg] = [Frame.parse(t, p) for t, _, _, p in tagged]
    gw_server = config.server_address6 if sc.ipv6 else config.server_address
    return Traffic(legs["client"], legs["server"], gw_client=vip,
                   gw_server=gw_server or GW_SERVER_IP, meta={"scenario": sc.name,
                                                              "seed": seed})


# ---------------------------------------------------------------------------- crafting


class Convo:
    """A hand-written TCP conversation on one leg: seq/ack bookkeeping done for us."""

    def __init__(self, client: tuple[str, int], server: tuple[str, int], isn_c: int,
                 isn_s: int, mss: int = 1460) -> None:
        self.client, self.server = client, server
        self.isn = {True: isn_c, False: isn_s}
        self.nxt = {True: isn_c, False: isn_s}
        self.mss = mss
        self.frames: list[Frame] = []

    def send(self, t: float, from_client: bool, payload: bytes = b"", flags: int = ACK,
             ack: int | None = None, **opts: Any) -> Frame:
        (sa, sp), (da, dp) = (self.client, self.server) if from_client else \
            (self.server, self.client)
        src, dst = codec.addr_bytes(sa), codec.addr_bytes(da)
        peer = self.nxt[not from_client]
        f = Frame(t, 6 if ":" in sa else 4, src, dst, sp, dp, self.nxt[from_client] & M32,
                  (peer if ack is None else ack) & M32 if flags & ACK else 0, flags, 65535,
                  payload, **opts)
        self.frames.append(f)
        self.nxt[from_client] = (self.nxt[from_client] + len(payload)
                                 + (1 if flags & (SYN | FIN) else 0)) & M32
        return f

    def handshake(self, t: float, step: float = 0.0005) -> float:
        self.send(t, True, flags=SYN, mss=self.mss)
        self.send(t + step, False, flags=SYN | ACK, mss=self.mss)
        self.send(t + 2 * step, True)
        return t + 2 * step


def http_response(server: str, size: int) -> bytes:
    head = (f"HTTP/1.1 200 OK\r\nX-Server: {server}\r\nContent-Length: {size}\r\n"
            "\r\n").encode()
    return head + response_body(size)


def craft_proxied(size: int = 3000, server_ip: str = SERVER_IPS[0]) -> Traffic:
    """A full proxy's two legs: independent ISNs, the request acknowledged at once, the
    response re-segmented (1000-byte pieces from 1460-byte ones), the server's data
    acknowledged before the client has it."""
    req = request()
    resp = http_response("s1", size)
    cl = Convo((CLIENT_IP, 40000), (VIP, VPORT), 0x10000000, 0x20000000)
    sv = Convo((GW_SERVER_IP, 40000), (server_ip, 80), 0x30000000, 0x40000000)
    t = cl.handshake(0.0)
    cl.send(t + 0.001, True, req, ACK | PSH)
    cl.send(t + 0.0012, False)  # the proxy acknowledges the request itself
    t = sv.handshake(t + 0.002)
    sv.send(t + 0.0005, True, req, ACK | PSH)
    t += 0.001
    server_pieces = [resp[i:i + 1460] for i in range(0, len(resp), 1460)]
    got = 0
    sent = 0
    for k, piece in enumerate(server_pieces):
        t += 0.001
        last = k == len(server_pieces) - 1
        sv.send(t, False, piece, ACK | PSH | (FIN if last else 0))
        got += len(piece)
        sv.send(t + 0.0001, True)  # the proxy acknowledges at once
        while got - sent >= 1000 or (last and sent < got):
            n = min(1000, got - sent)
            cl.send(t + 0.0002, False, resp[sent:sent + n], ACK | PSH)
            sent += n
            cl.send(t + 0.0004, True)
            t += 0.0005
    cl.send(t + 0.001, False, flags=FIN | ACK)
    cl.send(t + 0.0015, True)
    cl.send(t + 0.002, True, flags=FIN | ACK)
    cl.send(t + 0.0025, False)
    sv.send(t + 0.003, True, flags=FIN | ACK)
    sv.send(t + 0.0035, False)
    return Traffic(cl.frames, sv.frames, meta={"crafted": "proxied"})


# ---------------------------------------------------------------------------- mutations


def _idx(frames: list[Frame], pred: Callable[[Frame], bool], nth: int = 0) -> int:
    hits = [i for i, f in enumerate(frames) if pred(f)]
    return hits[nth]


def _gw(tr: Traffic, leg: str) -> Callable[[Frame], bool]:
    return lambda f: tr.from_gw(leg, f)


def _peer(tr: Traffic, leg: str) -> Callable[[Frame], bool]:
    return lambda f: not tr.from_gw(leg, f)


def _nudge(t: float) -> float:
    return t + 1e-6


@dataclass
class Violation:
    name: str
    property: str
    """The one property that must fail (or, for cross.path, the one judged)."""
    description: str
    build: Callable[[], Traffic]
    kind: str = "reference"
    policy: bool = False
    expect: dict[str, str] = field(default_factory=dict)
    """Verdicts beyond ``property: fail`` (e.g. ``cross.path: pass``)."""
    path: str | None = None
    """The class ``cross.path`` must report, when the point is the classification."""

    def expected(self) -> dict[str, Any]:
        verdicts = {self.property: "fail", **self.expect}
        return {"name": self.name, "property": self.property,
                "description": self.description, "kind": self.kind,
                "policy": "policy.toml" if self.policy else None,
                "verdicts": verdicts, "path": self.path,
                "others": "no other property fails"}


def _eligible(size: int = 1000, **kw: Any) -> Traffic:
    return simulate("eligible_request", plan=ClientPlan(request=request(size=size), **kw))


def v_pairing() -> Traffic:
    """Two clients; the second's server-leg connection is missing although the gateway
    answered it (as if it served the request from nowhere)."""
    tr = simulate("eligible_request", extra_clients=1)
    ports = sorted({f.sport for f in tr.server if tr.from_gw("server", f)})
    drop = ports[-1]
    tr.server = [f for f in tr.server if drop not in (f.sport, f.dport)]
    return tr


def v_stream_c2s() -> Traffic:
    tr = _eligible()
    i = _idx(tr.server, lambda f: tr.from_gw("server", f) and f.is_data)
    f = tr.server[i]
    p = bytearray(f.payload)
    p[5] ^= 0x20  # "GET /size/1000": 's' becomes 'S'
    tr.server[i] = f.changed(payload=bytes(p))
    return tr


def v_stream_s2c() -> Traffic:
    tr = _eligible(size=5000)
    i = _idx(tr.client, lambda f: tr.from_gw("client", f) and f.is_data, 1)
    f = tr.client[i]
    p = bytearray(f.payload)
    p[100] ^= 0x01
    tr.client[i] = f.changed(payload=bytes(p))
    return tr


def v_delayed_binding() -> Traffic:
    """The server-leg handshake moved before the client's request (a gateway that
    connects on SYN yet claims delayed binding)."""
    tr = _eligible()
    t_req = tr.client[_idx(tr.client, lambda f: not tr.from_gw("client", f) and f.is_data)].t
    hs = [i for i, f in enumerate(tr.server) if f.flags & SYN][:2]
    third = _idx(tr.server, lambda f: tr.from_gw("server", f) and not f.flags & SYN)
    for k, i in enumerate([*hs, third] if not tr.server[third].payload else hs):
        tr.server[i] = replace(tr.server[i], t=t_req - 0.0003 + k * 0.0001)
    return tr


def v_selection() -> Traffic:
    """/size/1000 maps to pool "static" (.11, .12), but the gateway went to .13 (api)."""
    tr = _eligible()
    srv = {f.dst for f in tr.server if tr.from_gw("server", f)}
    assert len(srv) == 1
    old = srv.pop()
    new = codec.addr_bytes(SERVER_IPS[2])
    tr.server = [f.changed(src=new if f.src == old else f.src,
                           dst=new if f.dst == old else f.dst) for f in tr.server]
    return tr


def repair_timestamps(tr: Traffic) -> Traffic:
    """Give the gateway's client-leg segments that lack them the timestamps the connection
    negotiated (copied from its previous segment).

    Reference cores before the handoff fix sent the handoff ACK without timestamps (a
    ``leg.options`` failure of their own); a corpus trace must break exactly one property,
    so traces built on a handoff go through this (a no-op on a fixed core)."""
    last: Frame | None = None
    out = []
    for f in tr.client:
        if tr.from_gw("client", f):
            if f.tsval is None and last is not None and not f.flags & RST and f.raw \
                    is not None:
                f = f.changed(tsval=last.tsval, tsecr=last.tsecr)
            if f.tsval is not None:
                last = f
        out.append(f)
    tr.client = out
    return tr


def v_continuity() -> Traffic:
    """After the handoff the gateway's ACKs to the client go back (the normal path
    rebuilt its receive state from the wrong record)."""
    tr = repair_timestamps(simulate("split_request_2"))
    acks = [i for i, f in enumerate(tr.client) if tr.from_gw("client", f)
            and not f.flags & (SYN | FIN | RST) and f.flags & ACK and not f.payload]
    i = acks[-1]
    f = tr.client[i]
    tr.client.insert(i + 1, replace(f.changed(ack=(f.ack - 10) & M32), t=_nudge(f.t)))
    return tr


def v_ack_safety() -> Traffic:
    """The gateway ACKs the held request to the client at once, before the server has."""
    tr = _eligible()
    i = _idx(tr.client, lambda f: not tr.from_gw("client", f) and f.is_data)
    req = tr.client[i]
    synack = tr.client[_idx(tr.client, lambda f: bool(f.flags & SYN and f.flags & ACK))]
    early = Frame(_nudge(req.t), req.version, req.dst, req.src, req.dport, req.sport,
                  (synack.seq + 1) & M32, (req.seq + len(req.payload)) & M32, ACK,
                  synack.window, b"", tsval=synack.tsval, tsecr=req.tsval if req.tsval
                  is not None else None)
    tr.client.insert(i + 1, early)
    return tr


def v_fin_truncation() -> Traffic:
    """The HAProxy splice bug class on a full proxy: the server sent N bytes and FIN, the
    proxy acknowledged them all, the client got fewer and then FIN."""
    tr = craft_proxied(size=3000)
    data = [i for i, f in enumerate(tr.client) if tr.from_gw("client", f) and f.is_data]
    cut = data[-1]
    gone = len(tr.client[cut].payload)
    fin_i = _idx(tr.client, lambda f: bool(tr.from_gw("client", f) and f.flags & FIN))
    out = []
    for i, f in enumerate(tr.client):
        if i == cut:
            continue
        if tr.from_gw("client", f) and i > cut:
            f = f.changed(seq=(f.seq - gone) & M32)
        elif not tr.from_gw("client", f) and i > cut and f.flags & ACK:
            f = f.changed(ack=(f.ack - gone) & M32)
        out.append(f)
    del fin_i
    tr.client = out
    return tr


def v_rst_not_propagated() -> Traffic:
    """The server resets; the gateway tells the client nothing."""
    tr = simulate("rst_from_server")
    t_rst = tr.server[_idx(tr.server, lambda f: bool(f.flags & RST))].t
    tr.client = [f for f in tr.client if f.t < t_rst]
    return tr


def v_stream_s2c_ipv6() -> Traffic:
    tr = simulate("ipv6_eligible_request")
    i = _idx(tr.client, lambda f: tr.from_gw("client", f) and f.is_data, 3)
    f = tr.client[i]
    p = bytearray(f.payload)
    p[7] ^= 0x01
    tr.client[i] = f.changed(payload=bytes(p))
    return tr


def v_path_proxied() -> Traffic:
    return craft_proxied()


def v_leg_handshake() -> Traffic:
    """The server retransmits its SYN-ACK with another ISN."""
    tr = _eligible()
    i = _idx(tr.server, lambda f: bool(f.flags & SYN and f.flags & ACK))
    f = tr.server[i]
    tr.server.insert(i + 1, replace(f.changed(seq=(f.seq - 5000) & M32), t=_nudge(f.t)))
    return tr


def v_leg_seq() -> Traffic:
    """A server retransmission carries other bytes than the original."""
    tr = _eligible(size=5000)
    i = _idx(tr.server, lambda f: not tr.from_gw("server", f) and f.is_data, 1)
    f = tr.server[i]
    p = bytearray(f.payload)
    p[10] ^= 0x40
    tr.server.insert(i + 1, replace(f.changed(payload=bytes(p)), t=_nudge(f.t)))
    return tr


def v_leg_ack_unseen() -> Traffic:
    """The client acknowledges 5000 bytes more than the gateway ever sent it."""
    tr = _eligible()
    i = _idx(tr.client, lambda f: not tr.from_gw("client", f) and not f.payload
             and not f.flags & (SYN | FIN | RST) and f.ack != 0, -1)
    f = tr.client[i]
    tr.client[i] = f.changed(ack=(f.ack + 5000) & M32)
    return tr


def v_leg_window() -> Traffic:
    """The gateway offers the server a 1-unit window (128 bytes scaled) and the server
    sends 1000 bytes anyway."""
    tr = _eligible()
    tr.server = [f.changed(window=1) if tr.from_gw("server", f) else f for f in tr.server]
    return tr


def v_leg_mss() -> Traffic:
    """The gateway's SYN to the server announces MSS 500; the server sends 1000+."""
    tr = _eligible(size=3000)
    i = _idx(tr.server, lambda f: bool(f.flags & SYN and not f.flags & ACK))
    tr.server[i] = tr.server[i].changed(mss=500)
    return tr


def v_leg_options() -> Traffic:
    """The gateway puts an MSS option on a data segment (MSS only belongs on a SYN)."""
    tr = _eligible()
    i = _idx(tr.server, lambda f: tr.from_gw("server", f) and f.is_data)
    tr.server[i] = tr.server[i].changed(mss=1460)
    return tr


def v_leg_ts_monotonic() -> Traffic:
    """The client's TSval goes back on a segment that acknowledges new data."""
    tr = _eligible(size=5000)
    acks = [i for i, f in enumerate(tr.client) if not tr.from_gw("client", f)
            and f.tsval is not None and not f.flags & (SYN | RST)]
    i = acks[-2]
    f = tr.client[i]
    tr.client[i] = f.changed(tsval=(f.tsval - 1000) & M32)
    return tr


def v_leg_checksum() -> Traffic:
    """A duplicate of a server ACK with a corrupted TCP checksum."""
    tr = _eligible()
    i = _idx(tr.server, lambda f: not tr.from_gw("server", f) and not f.payload
             and not f.flags & (SYN | FIN | RST))
    f = tr.server[i]
    tr.server.insert(i + 1, replace(f.changed(bad_checksum=True), t=_nudge(f.t)))
    return tr


def v_leg_rst_window() -> Traffic:
    """The client sends a RST far outside the window and keeps going; the gateway falls
    silent on the client leg (it acted on the RST, RFC 5961 says ignore or challenge)."""
    tr = simulate("server_closes_first")
    cl = tr.client
    gfin = _idx(cl, lambda f: bool(tr.from_gw("client", f) and f.flags & FIN))
    f = cl[gfin]
    rst = Frame(_nudge(f.t), f.version, f.dst, f.src, f.dport, f.sport,
                (f.ack + 1_000_000) & M32, 0, RST, 0)
    keep = [g for k, g in enumerate(cl) if k <= gfin or not tr.from_gw("client", g)]
    keep.insert(gfin + 1, rst)
    tr.client = keep
    return tr


def v_leg_fin() -> Traffic:
    """The server sends a second FIN at another sequence number."""
    tr = _eligible()
    i = _idx(tr.server, lambda f: bool(not tr.from_gw("server", f) and f.flags & FIN))
    f = tr.server[i]
    tr.server.insert(i + 1, replace(f.changed(seq=(f.seq + len(f.payload) + 10) & M32,
                                              payload=b""), t=_nudge(f.t)))
    return tr


VIOLATIONS: list[Violation] = [
    Violation("cross-pairing-missing-server", "cross.pairing",
              "the gateway answered a client (ACK and response) but no server-leg "
              "connection carries its request", v_pairing),
    Violation("cross-stream-c2s-byte-changed", "cross.stream_c2s",
              "one request byte differs on the server leg", v_stream_c2s),
    Violation("cross-stream-s2c-byte-changed", "cross.stream_s2c",
              "one response byte differs on the client leg", v_stream_s2c),
    Violation("cross-stream-s2c-ipv6", "cross.stream_s2c",
              "IPv6: one response byte differs on the client leg", v_stream_s2c_ipv6),
    Violation("cross-delayed-binding-early-syn", "cross.delayed_binding",
              "the server-leg SYN precedes the client's request", v_delayed_binding),
    Violation("cross-selection-wrong-pool", "cross.selection",
              "a /size/ request (pool static: .11/.12) went to .13 (pool api)", v_selection,
              policy=True),
    Violation("cross-path-proxied", "cross.path",
              "a full proxy's legs (independent ISNs, re-segmented): classified proxied, "
              "which is a pass for a proxy; the case decides whether that is wanted",
              v_path_proxied, kind="haproxy-http", expect={"cross.path": "pass"},
              path="proxied"),
    Violation("cross-continuity-ack-backwards", "cross.continuity",
              "after a handoff the gateway's ACK to the client goes back 10 bytes",
              v_continuity),
    Violation("cross-ack-safety-early-ack", "cross.ack_safety",
              "the held request is acknowledged to the client before the server ACKed it",
              v_ack_safety),
    Violation("cross-fin-rst-truncation", "cross.fin_rst",
              "HAProxy splice bug class: server leg N bytes then FIN, client leg fewer "
              "bytes then FIN", v_fin_truncation, kind="haproxy-http"),
    Violation("cross-fin-rst-rst-dropped", "cross.fin_rst",
              "the server's RST is never propagated to the client", v_rst_not_propagated),
    Violation("leg-handshake-synack-isn", "leg.handshake",
              "server-leg SYN-ACK retransmitted with another ISN", v_leg_handshake),
    Violation("leg-seq-retransmission-differs", "leg.seq",
              "a server retransmission carries different bytes", v_leg_seq),
    Violation("leg-ack-unseen", "leg.ack_unseen",
              "the client acknowledges data it was never sent", v_leg_ack_unseen),
    Violation("leg-window-overrun", "leg.window",
              "the server sends beyond the window the gateway offered", v_leg_window),
    Violation("leg-mss-exceeded", "leg.mss",
              "the server sends segments above the gateway's MSS", v_leg_mss),
    Violation("leg-options-mss-on-data", "leg.options",
              "an MSS option on a data segment", v_leg_options),
    Violation("leg-ts-backwards", "leg.ts_monotonic",
              "the client's TSval goes back on a new ACK", v_leg_ts_monotonic),
    Violation("leg-checksum-bad", "leg.checksum",
              "a server ACK with a wrong TCP checksum", v_leg_checksum),
    Violation("leg-rst-window-acted-on", "leg.rst_window",
              "an out-of-window RST ends the connection", v_leg_rst_window),
    Violation("leg-fin-moved", "leg.fin",
              "the server sends a second FIN at another sequence number", v_leg_fin),
]


def write_corpus(out: Path) -> list[Path]:
    """Write every violation to ``out/<name>/`` and the index ``out/README.md``."""
    out.mkdir(parents=True, exist_ok=True)
    dirs = []
    for v in VIOLATIONS:
        d = out / v.name
        if d.exists():
            shutil.rmtree(d)
        write_traffic(v.build(), d)
        if v.policy:
            (d / "policy.toml").write_text(DEFAULT_CONFIG_TOML)
        (d / "expected.json").write_text(json.dumps(v.expected(), indent=2) + "\n")
        dirs.append(d)
    (out / "README.md").write_text(_readme())
    return dirs


def _readme() -> str:
    lines = [
        "# Violations corpus",
        "",
        "Two-leg traces that each break exactly one property of the conformance checker, with",
        "the verdict it must give. Each directory holds `client.pcap` (the gateway's client-side",
        "link), `server.pcap` (its server-side link) and `expected.json`: `property` must get",
        "the verdict in `verdicts` and **no other property may fail**; `kind` is the gateway",
        "kind to judge with (`conformance.properties.KINDS`), `policy` the selection policy",
        "file if one is needed.",
        "",
        "Regenerate (deterministic) with `python -m conformance.violations --out "
        "pcaps/violations`;",
        "`tests/conformance/test_violations.py` checks every entry through "
        "`conformance.checker.check_pcaps`.",
        "",
        "| directory | property | verdict | kind | what was broken |",
        "|---|---|---|---|---|",
    ]
    for v in VIOLATIONS:
        verdict = v.expected()["verdicts"][v.property]
        if v.path:
            verdict += f" ({v.path})"
        lines.append(f"| `{v.name}` | `{v.property}` | {verdict} | {v.kind} | "
                     f"{v.description} |")
    lines += ["", "Good traces come from the in-memory simulator running the reference core "
              "(`reference.gateway.sim`), captured at the gateway's two interfaces, or are "
              "crafted (`craft_proxied`, a full proxy); each is then mutated in one place "
              "(`conformance/violations.py` says where and why).", "",
              "`cross.path` is a classification, not a pass/fail property: its entry is a "
              "full proxy that must be classified `proxied` (verdict pass); whether that class "
              "is wanted is for the case to say.", "",
              "Traces built on a handoff pass through `repair_timestamps` (a no-op on the "
              "current core): older cores sent the handoff ACK without the negotiated "
              "timestamps, a `leg.options` failure of their own, and an entry must break "
              "one property only.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m conformance.violations",
                                 description="Regenerate the violations corpus.")
    ap.add_argument("--out", type=Path, default=Path("pcaps/violations"))
    args = ap.parse_args(argv)
    for d in write_corpus(args.out):
        print(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

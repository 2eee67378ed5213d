"""An in-memory network: virtual TCP clients and servers talking through the gateway core.

Everything is simulated and deterministic: time only moves to the next event, and every
impairment (loss, duplication, reordering, delay) draws from a seeded ``random.Random``. The
endpoints are full TCP stacks (``reference.gateway.tcp.TcpConnection``) and every packet on
every link is a real IPv4/IPv6 packet built and parsed by the codec, so the core runs exactly
as it does behind the raw-socket driver, without root.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from reference.gateway import codec
from reference.gateway.actions import Emit
from reference.gateway.gateway import Gateway
from reference.gateway.tcp import TcpConnection
from spec import eligibility
from spec.records import TCB, PacketBuffers
from spec.segment import ACK, SYN, Segment
from spec.seq import seq_add
from spec.states import TcpState

IsnFn = Callable[[], int]


@dataclass(frozen=True, slots=True)
class Impairment:
    """What a one-way link does to packets (probabilities per packet)."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    """Probability that a packet is held back by ``reorder_delay`` (others overtake it)."""
    delay: float = 0.0005
    reorder_delay: float = 0.003


class Link:
    """A one-way link: impairs, then schedules delivery on the network's event queue."""

    def __init__(self, net: Network, name: str, deliver: Callable[[bytes, float], None],
                 imp: Impairment, rng: random.Random) -> None:
        self.net, self.name, self.deliver, self.imp, self.rng = net, name, deliver, imp, rng
        self.sent = self.lost = self.duplicated = self.reordered = 0
        self.tap: list[tuple[float, bytes]] = []
        """Every packet put on the link (before impairment), for pcaps and checks."""
        self.mangle: Callable[[bytes], list[bytes]] | None = None
        """Optional rewrite of each packet into zero or more packets (fragmenting, ...)."""

    def send(self, packet: bytes, now: float) -> None:
        packets = self.mangle(packet) if self.mangle else [packet]
        for p in packets:
            self.tap.append((now, p))
            self.sent += 1
            if self.rng.random() < self.imp.loss:
                self.lost += 1
                continue
            copies = 2 if self.rng.random() < self.imp.duplicate else 1
            self.duplicated += copies - 1
            for _ in range(copies):
                t = now + self.imp.delay
                if self.rng.random() < self.imp.reorder:
                    self.reordered += 1
                    t += self.imp.reorder_delay
                self.net.at(t, lambda p=p, t=t: self.deliver(p, t))


@dataclass
class Endpoint:
    """A virtual host: one or more TCP connections on one address."""

    addr: bytes
    version: int
    conns: dict[tuple[int, bytes, int], TcpConnection] = field(default_factory=dict)
    """(local port, remote address, remote port) -> connection."""


@dataclass
class ClientPlan:
    """What one virtual client does."""

    request: bytes
    writes: tuple[int, ...] = ()
    """Sizes of the separate writes the request is sent in (empty: one write)."""
    write_gap: float = 0.002
    close_after_response: bool = True
    reset_after: int | None = None
    """Abort with a RST after this many response bytes."""
    port: int = 40000
    unknown_option: bool = False
    """Put an unknown TCP option (kind 253, RFC 6994 experimental) in data segments."""
    fragment_first_data: int | None = None
    """Send the first data packet as IP fragments of this many payload bytes."""
    swap_first_two_data: bool = False
    """Deliver the second data segment before the first (out-of-order first data)."""


@dataclass
class ServerBehaviour:
    response_size: Callable[[bytes], int] = lambda head: 100
    close_after_response: bool = True
    reset_after_request: bool = False


@dataclass
class ClientResult:
    received: bytearray = field(default_factory=bytearray)
    reset: bool = False
    closed: bool = False
    error: str = ""


class Network:
    """Clients, the gateway and servers joined by four impaired one-way links."""

    def __init__(self, gateway: Gateway, *, seed: int = 1,
                 client_leg: Impairment = Impairment(), server_leg: Impairment = Impairment(),
                 client_addr: str = "198.51.100.2", isn: IsnFn | None = None,
                 rto_min: float = 0.2) -> None:
        self.gw = gateway
        self.rng = random.Random(seed)
        self.now = 0.0
        self._q: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.isn = isn or (lambda: self.rng.getrandbits(32))
        self.rto_min = rto_min
        self.client_host = Endpoint(codec.addr_bytes(client_addr),
                                    6 if ":" in client_addr else 4)
        self.servers: dict[tuple[bytes, int], ServerBehaviour] = {}
        self.server_hosts: dict[bytes, Endpoint] = {}
        self.c2g = Link(self, "client->gateway", self._to_gw_client, client_leg,
                        random.Random(seed * 7 + 1))
        self.g2c = Link(self, "gateway->client", self._to_client, client_leg,
                        random.Random(seed * 7 + 2))
        self.g2s = Link(self, "gateway->server", self._to_server, server_leg,
                        random.Random(seed * 7 + 3))
        self.s2g = Link(self, "server->gateway", self._to_gw_server, server_leg,
                        random.Random(seed * 7 + 4))
        self.results: dict[int, ClientResult] = {}
        self.requests_seen: dict[tuple[bytes, int], bytearray] = {}
        """Bytes each server connection received, keyed by (server address, remote port)."""
        self.plans: dict[int, ClientPlan] = {}
        self._gw_deadline: float | None = None
        self.events = 0

    # ---- scheduling -----------------------------------------------------------------------
    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._q, (t, next(self._seq), fn))

    def run(self, *, until: float = 120.0, max_events: int = 2_000_000) -> None:
        """Run events in time order; stops when idle, at ``until`` or after ``max_events``."""
        while self.events < max_events:
            self._arm_timers()
            if not self._q:
                return
            t, _, fn = heapq.heappop(self._q)
            if t > until:
                heapq.heappush(self._q, (t, next(self._seq), fn))
                return
            self.now = max(self.now, t)
            self.events += 1
            fn()

    def _arm_timers(self) -> None:
        d = self.gw.next_deadline()
        if d is not None and d != self._gw_deadline:
            self._gw_deadline = d
            self.at(d, lambda d=d: self._gw_timer(d))
        for host in (self.client_host, *self.server_hosts.values()):
            for key, conn in list(host.conns.items()):
                nd = conn.next_deadline()
                if nd is not None and getattr(conn, "_sim_armed", None) != nd:
                    conn._sim_armed = nd  # type: ignore[attr-defined]
                    self.at(nd, lambda h=host, k=key, nd=nd: self._conn_timer(h, k, nd))

    def _gw_timer(self, d: float) -> None:
        if self._gw_deadline == d:
            self._gw_deadline = None
        self._gw_out(self.gw.handle_timer(now=self.now))

    def _conn_timer(self, host: Endpoint, key: tuple[int, bytes, int], nd: float) -> None:
        conn = host.conns.get(key)
        if conn is None or conn.next_deadline() is None or conn.next_deadline() > self.now:
            return
        conn._sim_armed = None  # type: ignore[attr-defined]
        segs = conn.handle_timer(now=self.now)
        self._send_from(host, key, segs)
        self._after(host, key)

    # ---- topology -------------------------------------------------------------------------
    def add_server(self, addr: str, port: int, behaviour: ServerBehaviour) -> None:
        a = codec.addr_bytes(addr)
        self.servers[(a, port)] = behaviour
        self.server_hosts.setdefault(a, Endpoint(a, 6 if ":" in addr else 4))

    def start_client(self, vip: str, vport: int, plan: ClientPlan, *, at: float = 0.0,
                     wscale: int | None = 7, sack: bool = True, timestamps: bool = True,
                     mss: int = 1460) -> None:
        self.plans[plan.port] = plan
        self.results[plan.port] = ClientResult()

        def go() -> None:
            conn, segs = TcpConnection.connect(
                iss=self.isn(), mss=mss, wscale=wscale, sack_permitted=sack,
                tsval=int(self.now * 1000) if timestamps else None, now=self.now,
                rto_min=self.rto_min)
            key = (plan.port, codec.addr_bytes(vip), vport)
            self.client_host.conns[key] = conn
            conn._sim_plan_sent = 0  # type: ignore[attr-defined]
            self._send_from(self.client_host, key, segs)

        self.at(at, go)

    # ---- packets --------------------------------------------------------------------------
    def _send_from(self, host: Endpoint, key: tuple[int, bytes, int], segs: list[Segment]
                   ) -> None:
        lport, raddr, rport = key
        is_client = host is self.client_host
        plan = self.plans.get(lport) if is_client else None
        for seg in segs:
            pkt = codec.build(version=host.version, src=host.addr, dst=raddr, sport=lport,
                              dport=rport, seq=seg.seq, ack=seg.ack, flags=seg.flags,
                              window=seg.window, payload=seg.payload or b"", mss=seg.mss,
                              wscale=seg.wscale, sack_permitted=seg.sack_permitted,
                              tsval=seg.tsval, tsecr=seg.tsecr, sack=seg.sack)
            if is_client and plan is not None and seg.length:
                pkt = self._client_mangle(plan, pkt, seg)
                if pkt is None:
                    continue
            (self.c2g if is_client else self.s2g).send(pkt, self.now)

    def _client_mangle(self, plan: ClientPlan, pkt: bytes, seg: Segment) -> bytes | None:
        if plan.unknown_option:
            pkt = add_tcp_option(pkt, bytes([253, 4, 0x12, 0x34]))
        if plan.fragment_first_data and not getattr(plan, "_fragmented", False):
            object.__setattr__(plan, "_fragmented", True)
            for frag in fragment_ipv4(pkt, plan.fragment_first_data):
                self.c2g.send(frag, self.now)
            return None
        if plan.swap_first_two_data:
            held = getattr(plan, "_held", None)
            count = getattr(plan, "_data_count", 0)
            object.__setattr__(plan, "_data_count", count + 1)
            if count == 0:
                object.__setattr__(plan, "_held", pkt)
                return None
            if count == 1 and held is not None:
                self.c2g.send(pkt, self.now)
                return held
        return pkt

    def _gw_out(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Emit):
                (self.g2c if a.leg == "client" else self.g2s).send(a.packet, self.now)

    def _to_gw_client(self, packet: bytes, t: float) -> None:
        self._gw_out(self.gw.handle("client", packet, now=self.now))

    def _to_gw_server(self, packet: bytes, t: float) -> None:
        self._gw_out(self.gw.handle("server", packet, now=self.now))

    def _to_client(self, packet: bytes, t: float) -> None:
        pkt = codec.parse(packet)
        key = (pkt.dport, pkt.src, pkt.sport)
        conn = self.client_host.conns.get(key)
        if conn is None:
            return
        segs = conn.receive(pkt.to_segment(), now=self.now)
        self._send_from(self.client_host, key, segs)
        self._after(self.client_host, key)

    def _to_server(self, packet: bytes, t: float) -> None:
        pkt = codec.parse(packet)
        behaviour = self.servers.get((pkt.dst, pkt.dport))
        host = self.server_hosts.get(pkt.dst)
        if behaviour is None or host is None:
            return
        key = (pkt.dport, pkt.src, pkt.sport)
        conn = host.conns.get(key)
        seg = pkt.to_segment()
        if conn is None:
            if not seg.flags & SYN or seg.flags & ACK:
                return
            conn, segs = accept(seg, iss=self.isn(), now=self.now, rto_min=self.rto_min)
            host.conns[key] = conn
            self.requests_seen[(pkt.dst, pkt.sport)] = bytearray()
            self._send_from(host, key, segs)
            return
        if conn.state is TcpState.SYN_RECEIVED and seg.flags & SYN and seg.seq == conn.tcb.irs:
            self._send_from(host, key, [synack_for(conn, seg)])  # our SYN/ACK was lost
            return
        segs = conn.receive(seg, now=self.now)
        self._send_from(host, key, segs)
        self._after(host, key)

    # ---- applications ---------------------------------------------------------------------
    def _after(self, host: Endpoint, key: tuple[int, bytes, int]) -> None:
        conn = host.conns[key]
        if host is self.client_host:
            self._client_app(key, conn)
        else:
            self._server_app(host, key, conn)

    def _client_app(self, key: tuple[int, bytes, int], conn: TcpConnection) -> None:
        plan, res = self.plans[key[0]], self.results[key[0]]
        if conn.state_is_established and not getattr(conn, "_sim_started", False):
            conn._sim_started = True  # type: ignore[attr-defined]
            sizes = plan.writes or (len(plan.request),)
            off = 0
            for i, n in enumerate(sizes):
                chunk = plan.request[off:off + n]
                off += n
                self.at(self.now + i * plan.write_gap,
                        lambda c=chunk, k=key: self._client_write(k, c))
            if off < len(plan.request):
                rest = plan.request[off:]
                self.at(self.now + len(sizes) * plan.write_gap,
                        lambda c=rest, k=key: self._client_write(k, c))
        res.received += conn.read()
        res.reset = res.reset or conn.reset
        if plan.reset_after is not None and len(res.received) >= plan.reset_after \
                and not conn.closed:
            self._send_from(self.client_host, key, conn.abort(now=self.now))
        if conn.eof_received and plan.close_after_response and not res.closed:
            res.closed = True
            self._send_from(self.client_host, key, conn.close(now=self.now))

    def _client_write(self, key: tuple[int, bytes, int], data: bytes) -> None:
        conn = self.client_host.conns.get(key)
        if conn is None or conn.closed:
            return
        self._send_from(self.client_host, key, conn.send(data, now=self.now))

    def _server_app(self, host: Endpoint, key: tuple[int, bytes, int],
                    conn: TcpConnection) -> None:
        seen = self.requests_seen.setdefault((host.addr, key[2]), bytearray())
        seen += conn.read()
        behaviour = self.servers[(host.addr, key[0])]
        head = eligibility.parse_request_head(bytes(seen))
        if head is not None and not getattr(conn, "_sim_answered", False):
            conn._sim_answered = True  # type: ignore[attr-defined]
            if behaviour.reset_after_request:
                self._send_from(host, key, conn.abort(now=self.now))
                return
            n = behaviour.response_size(bytes(seen[:head.head_len]))
            body = response_body(n)
            name = codec.addr_str(host.addr)
            hdr = (f"HTTP/1.1 200 OK\r\nX-Server: {name}\r\nContent-Length: {n}\r\n"
                   f"Connection: close\r\n\r\n").encode()
            conn._sim_out = bytearray(hdr + body)  # type: ignore[attr-defined]
        out = getattr(conn, "_sim_out", None)
        if out:
            room = conn.send_capacity()
            if room:
                chunk = bytes(out[:room])
                del out[:room]
                self._send_from(host, key, conn.send(chunk, now=self.now))
        if out is not None and not out and behaviour.close_after_response \
                and not getattr(conn, "_sim_closed", False):
            conn._sim_closed = True  # type: ignore[attr-defined]
            self._send_from(host, key, conn.close(now=self.now))


def accept(syn: Segment, *, iss: int, now: float, rto_min: float, mss: int = 1460,
           wscale: int = 7, buffer_bytes: int = 262144) -> tuple[TcpConnection, list[Segment]]:
    """Passive open for a virtual server (RFC 9293 §3.10.7.2): a connection in SYN-RECEIVED
    built from the SYN's options, and the SYN/ACK to send."""
    ws = syn.wscale is not None
    ts = syn.tsval is not None
    # SND.UNA starts past our SYN, as after a claim-1 handoff from SYN_RCVD: a lost SYN/ACK
    # is recovered by answering the client's retransmitted SYN (Network._to_server).
    tcb = TCB(state=TcpState.SYN_RECEIVED, iss=iss, irs=syn.seq, snd_una=seq_add(iss, 1),
              snd_nxt=seq_add(iss, 1), snd_wnd=syn.window, snd_wl1=syn.seq, snd_wl2=iss,
              rcv_nxt=seq_add(syn.seq, 1), rcv_wnd=buffer_bytes, mss=syn.mss or 536,
              snd_wscale=min(syn.wscale or 0, 14) if ws else 0, rcv_wscale=wscale if ws else 0,
              sack_permitted=syn.sack_permitted, ts_enabled=ts,
              ts_recent=syn.tsval, ts_sent=int(now * 1000) & 0xFFFFFFFF if ts else None)
    conn = TcpConnection.from_handoff(tcb, PacketBuffers(capacity=buffer_bytes), now=now,
                                      rto_min=rto_min, local_mss=mss)
    conn._sim_wscale = wscale if ws else None  # type: ignore[attr-defined]
    return conn, [synack_for(conn, syn)]


def synack_for(conn: TcpConnection, syn: Segment) -> Segment:
    t = conn.tcb
    return Segment(seq=t.iss, ack=t.rcv_nxt, flags=SYN | ACK, window=min(t.rcv_wnd, 65535),
                   mss=conn_local_mss(conn), wscale=getattr(conn, "_sim_wscale", None),
                   sack_permitted=t.sack_permitted,
                   tsval=t.ts_sent if t.ts_enabled else None,
                   tsecr=syn.tsval if t.ts_enabled else None)


def conn_local_mss(conn: TcpConnection) -> int:
    return getattr(conn, "local_mss", None) or getattr(conn, "_local_mss", 1460)


def response_body(n: int) -> bytes:
    """A deterministic body of ``n`` octets whose every 8-byte block says its own offset."""
    blocks = (n + 7) // 8
    return b"".join(f"{i * 8:08x}".encode()[-8:] for i in range(blocks))[:n]


def add_tcp_option(packet: bytes, option: bytes) -> bytes:
    """Insert ``option`` (padded to 4 octets) in the TCP header of an IPv4 packet."""
    option = option + b"\x01" * (-len(option) % 4)
    buf = bytearray(packet)
    ihl = (buf[0] & 0x0F) * 4
    doff = (buf[ihl + 12] >> 4) * 4
    if doff + len(option) > 60:
        return packet
    pkt = codec.parse(packet)
    payload = bytes(pkt.payload)
    new = codec.build(version=4, src=pkt.src, dst=pkt.dst, sport=pkt.sport, dport=pkt.dport,
                      seq=pkt.seq, ack=pkt.ack, flags=pkt.flags, window=pkt.window,
                      payload=b"", mss=pkt.mss, wscale=pkt.wscale,
                      sack_permitted=pkt.sack_permitted, tsval=pkt.tsval, tsecr=pkt.tsecr,
                      sack=pkt.sack)
    nb = bytearray(new)
    nihl = (nb[0] & 0x0F) * 4
    ndoff = (nb[nihl + 12] >> 4) * 4
    tcp = nb[nihl:nihl + ndoff] + option
    tcp[12] = ((len(tcp) // 4) << 4) | (tcp[12] & 0x0F)
    tcp[16:18] = b"\0\0"
    seg = bytes(tcp) + payload
    ip = bytearray(nb[:nihl])
    ip[2:4] = (nihl + len(seg)).to_bytes(2, "big")
    ip[10:12] = b"\0\0"
    ip[10:12] = codec.internet_checksum(bytes(ip)).to_bytes(2, "big")
    csum = codec.tcp_checksum(pkt.src, pkt.dst, seg)
    seg = seg[:16] + csum.to_bytes(2, "big") + seg[18:]
    return bytes(ip) + seg


def fragment_ipv4(packet: bytes, size: int) -> list[bytes]:
    """Split an IPv4 packet into fragments carrying ``size`` (rounded to 8) payload octets."""
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    body = packet[ihl:total]
    size = max(8, size - size % 8)
    out = []
    for off in range(0, len(body), size):
        piece = body[off:off + size]
        more = off + size < len(body)
        hdr = bytearray(packet[:ihl])
        hdr[2:4] = (ihl + len(piece)).to_bytes(2, "big")
        hdr[6:8] = ((0x2000 if more else 0) | (off // 8)).to_bytes(2, "big")
        hdr[10:12] = b"\0\0"
        hdr[10:12] = codec.internet_checksum(bytes(hdr)).to_bytes(2, "big")
        out.append(bytes(hdr) + piece)
    return out

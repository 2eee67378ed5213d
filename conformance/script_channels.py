"""Where scripted packets go: the reference core in memory, or a lab's two wires.

:class:`MemoryChannel` runs the sans-I/O core (``Gateway.handle``/``handle_timer``) on a
virtual clock, so every script runs without root, deterministically and in milliseconds;
when a script does not play the server, in-memory HTTP servers (full TCP endpoints from
:mod:`reference.gateway.tcp`, answering like the lab's ``reference.lab.httpserver``) do.

:class:`LabChannel` puts the same packets on real wires: the client side is an AF_PACKET
socket on ``c0`` in the lab's client namespace, the server side one on ``g0`` (the switch's
port towards the gateway). While a script runs, nftables netdev ingress drops keep the
harness's own kernels out: on ``c0`` TCP to ports 600-999 (the scripted clients' ports, so
the client kernel never answers or resets them) and, when the script plays the server, all
TCP on ``g0`` (the real servers never see the gateway's frames; ARP still passes, so the
gateway still resolves the servers). Both rules go away after the script, also on failure.
The harness's TCP segments leave with their checksum left to offload, as the lab's kernels
send theirs (:func:`offload_tcp_checksum`), so a gateway's kernel treats a scripted SYN like a
kernel client's.

Both record every frame of both legs with Ethernet headers carrying the lab's MACs, so a
result's pcaps look the same whichever channel made them.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from conformance.script import (
    CLIENT_PORTS,
    PCAP_EPOCH,
    RECENT_PORTS,
    Addresses,
    Frame,
    ScriptError,
    Side,
    default_addresses,
    ethernet,
)
from reference.gateway import codec
from reference.gateway._checksum import pseudo_sum, tcp_checksum
from reference.gateway.actions import Emit
from reference.gateway.config import DEFAULT_CONFIG_TOML, loads
from reference.gateway.gateway import Gateway
from reference.gateway.sim import accept, response_body, synack_for
from reference.gateway.tcp import TcpConnection
from spec.segment import ACK, RST, SYN, Segment
from spec.seq import seq_add
from spec.states import TcpState

MAX_EVENTS = 1_000_000
"""Bound on packets plus timer firings the memory channel processes per call."""
START = 10.0
"""Virtual time of a fresh channel: not 0, so timestamps (ms since start) are not 0 either."""
PACKET_GAP = 0.0001
"""Virtual seconds between two packets the harness sends (keeps pcap order readable)."""


def reference_gateway(**kw: object) -> Gateway:
    """The reference core on the embedded default config; if that has no IPv6 service on
    ``default_addresses(6)``'s VIP, one is added, so IPv4 and IPv6 scripts both run."""
    a6 = default_addresses(6)
    toml = DEFAULT_CONFIG_TOML
    config = loads(toml, "<embedded default>")
    if not any(codec.addr_bytes(sv.vip) == codec.addr_bytes(a6.vip) for sv in config.services):
        servers = ", ".join(f'"[{s}]:{a6.server_port}"' for s in a6.servers)
        if "server_address6" not in toml:
            toml = toml.replace("[gateway]\n",
                                f'[gateway]\nserver_address6 = "{a6.gw_server_ip}"\n', 1)
        toml += (f'\n[[service]]\nname = "script6"\nvip = "{a6.vip}"\nport = {a6.vport}\n'
                 f'default_pool = "script6"\n\n[pool.script6]\nservers = [{servers}]\n')
        config = loads(toml, "<embedded default + IPv6>")
    return Gateway(config, **kw)  # type: ignore[arg-type]


def _to_packet(version: int, local: tuple[bytes, int], remote: tuple[bytes, int],
               seg: Segment) -> bytes:
    return codec.build(version=version, src=local[0], dst=remote[0], sport=local[1],
                       dport=remote[1], seq=seg.seq, ack=seg.ack, flags=seg.flags,
                       window=seg.window, payload=seg.payload or b"", mss=seg.mss,
                       wscale=seg.wscale, sack_permitted=seg.sack_permitted, tsval=seg.tsval,
                       tsecr=seg.tsecr, sack=seg.sack)


# --------------------------------------------------------------------------- memory servers


def _lab_head(status: int, reason: str, name: str, length: int, ctype: str, close: bool
              ) -> bytes:
    """The response head ``reference.lab.httpserver`` writes (same bytes, same order)."""
    return (f"HTTP/1.1 {status} {reason}\r\nServer: fastpath-lab\r\nX-Server: {name}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode()


def answer(request_head: bytes, name: str) -> tuple[bytes, bool]:
    """(response, close after it) for one request head, as the lab's servers answer:
    ``/size/N`` with ``response_body(N)``, ``/`` a line of text, else 404; keep-alive by
    HTTP/1.1 default."""
    lines = request_head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        text = b"400 Bad Request\n"
        return _lab_head(400, "Bad Request", name, len(text), "text/plain", True) + text, True
    method, target, version = parts
    tokens: set[str] = set()
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "connection":
            tokens |= {t.strip().lower() for t in value.split(",")}
    close = "keep-alive" not in tokens if version == "HTTP/1.0" else "close" in tokens
    path = target.partition("?")[0]
    digits = path[len("/size/"):] if path.startswith("/size/") else ""
    if method not in ("GET", "HEAD"):
        text = b"only GET and HEAD\n"
        return _lab_head(405, "Method Not Allowed", name, len(text), "text/plain",
                         close) + text, close
    if digits.isdecimal() and digits.isascii() and len(digits) <= 9:
        n = int(digits)
        body = b"" if method == "HEAD" else response_body(n)
        return _lab_head(200, "OK", name, n, "application/octet-stream", close) + body, close
    ok = path == "/"
    text = (f"fastpath-tcp lab server {name}\n" if ok else "not found; try /size/N or /\n"
            ).encode()
    head = _lab_head(200 if ok else 404, "OK" if ok else "Not Found", name, len(text),
                     "text/plain; charset=utf-8", close)
    return head + (b"" if method == "HEAD" else text), close


@dataclass(slots=True)
class _ServerConn:
    conn: TcpConnection
    version: int
    local: tuple[bytes, int]
    remote: tuple[bytes, int]
    name: str
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    close_after: bool = False
    fin_queued: bool = False


class MemoryServers:
    """Virtual HTTP servers on every address the gateway connects to (one TCP endpoint per
    connection, keep-alive like the lab's servers)."""

    def __init__(self, *, seed: int = 1, rto_min: float = 0.2,
                 name_of: Callable[[str], str] = lambda ip: ip) -> None:
        import random

        self.rng = random.Random(seed)
        self.rto_min = rto_min
        self.name_of = name_of
        self.conns: dict[tuple[bytes, int, bytes, int], _ServerConn] = {}

    def deliver(self, packet: bytes, now: float) -> list[bytes]:
        """One packet from the gateway; returns the server's answers."""
        try:
            p = codec.parse(bytearray(packet))
        except codec.DecodeError:
            return []
        if not p.first_fragment or p.more_fragments:
            return []
        key = (p.dst, p.dport, p.src, p.sport)
        sc = self.conns.get(key)
        seg = p.to_segment()
        if sc is None:
            if seg.flags & RST:
                return []
            if not seg.flags & SYN or seg.flags & ACK:
                rst = (Segment(seq=seg.ack, ack=0, flags=RST, window=0) if seg.flags & ACK
                       else Segment(seq=0, ack=seq_add(seg.seq, seg.seg_len),
                                    flags=RST | ACK, window=0))
                return [_to_packet(p.version, (p.dst, p.dport), (p.src, p.sport), rst)]
            conn, segs = accept(seg, iss=self.rng.getrandbits(32), now=now,
                                rto_min=self.rto_min)
            sc = _ServerConn(conn, p.version, (p.dst, p.dport), (p.src, p.sport),
                             self.name_of(p.dst_str))
            self.conns[key] = sc
            return self._out(sc, segs)
        if sc.conn.state is TcpState.SYN_RECEIVED and seg.flags & SYN \
                and seg.seq == sc.conn.tcb.irs:
            return self._out(sc, [synack_for(sc.conn, seg)])
        segs = sc.conn.receive(seg, now=now)
        return self._out(sc, segs) + self._app(key, sc, now)

    def _out(self, sc: _ServerConn, segs: list[Segment]) -> list[bytes]:
        return [_to_packet(sc.version, sc.local, sc.remote, s) for s in segs]

    def _app(self, key: tuple[bytes, int, bytes, int], sc: _ServerConn, now: float
             ) -> list[bytes]:
        c = sc.conn
        out: list[Segment] = []
        sc.inbuf += c.read()
        while not sc.close_after:
            end = sc.inbuf.find(b"\r\n\r\n")
            if end < 0:
                break
            resp, close = answer(bytes(sc.inbuf[:end + 4]), sc.name)
            del sc.inbuf[:end + 4]
            sc.outbuf += resp
            sc.close_after = close
        if sc.outbuf:
            room = c.send_capacity()
            if room:
                chunk = bytes(sc.outbuf[:room])
                del sc.outbuf[:room]
                out += c.send(chunk, now=now)
        if not sc.outbuf and not sc.fin_queued and (sc.close_after or c.eof_received) \
                and c.state_is_established:
            sc.fin_queued = True
            out += c.close(now=now)
        out += c.flush(now=now)
        if c.closed:
            self.conns.pop(key, None)
        return self._out(sc, out)

    def next_deadline(self) -> float | None:
        ds = [d for sc in self.conns.values() if (d := sc.conn.next_deadline()) is not None]
        return min(ds) if ds else None

    def on_timer(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        for key, sc in list(self.conns.items()):
            d = sc.conn.next_deadline()
            if d is not None and d <= now:
                out += self._out(sc, sc.conn.handle_timer(now=now))
                out += self._app(key, sc, now)
        return out


# --------------------------------------------------------------------------- memory channel


class MemoryChannel:
    """The reference core (or any ``Gateway``-shaped core) on a virtual clock.

    Client-leg packets go to ``gateway.handle("client", ...)``; what the core emits on the
    client leg waits for the scripted client; on the server leg it goes to the scripted
    server if the script plays one, else to :class:`MemoryServers`. Time only moves when a
    script waits: then the core's and the servers' timers fire in order.
    """

    def __init__(self, gateway: Gateway | None = None, *, seed: int = 1,
                 rto_min: float = 0.2, addresses: dict[int, Addresses] | None = None) -> None:
        self.gateway = gateway if gateway is not None else reference_gateway()
        self._addrs = addresses or {4: default_addresses(4), 6: default_addresses(6)}
        self.servers = MemoryServers(seed=seed, rto_min=rto_min, name_of=self._server_name)
        self.frames: list[Frame] = []
        self.step = 0
        self.recent_ports: deque[int] = deque(maxlen=RECENT_PORTS)
        self._now = START
        self._inbox: dict[Side, deque[Frame]] = {"client": deque(), "server": deque()}
        self._plays = {"client": False, "server": False}

    def _server_name(self, ip: str) -> str:
        for a in self._addrs.values():
            k = a.server_index(ip)
            if k:
                return f"s{k}"
        return ip

    def addresses(self, family: int) -> Addresses:
        if family not in self._addrs:
            raise ScriptError(f"the memory channel has no IPv{family} addresses")
        return self._addrs[family]

    def begin(self, client: bool, server: bool) -> None:
        self._plays = {"client": client, "server": server}
        for q in self._inbox.values():
            q.clear()

    def end(self) -> None:
        self._plays = {"client": False, "server": False}

    def now(self) -> float:
        return self._now

    # ---- frames ----
    def _frame(self, leg: Side, sender: str, packet: bytes) -> Frame:
        a = self._addrs.get(4 if packet[0] >> 4 == 4 else 6) or default_addresses(4)
        if leg == "client":
            macs = ((a.gw_client_mac, a.client_mac) if sender == "harness"
                    else (a.client_mac, a.gw_client_mac))
        else:
            p = codec.parse(packet, verify_checksum=False) if packet[0] >> 4 in (4, 6) \
                else None
            if sender == "gateway":
                macs = (a.server_mac(p.dst_str) if p else a.server_mac(""), a.gw_server_mac)
            else:
                macs = (a.gw_server_mac, a.server_mac(p.src_str) if p else a.server_mac(""))
        f = Frame(PCAP_EPOCH + self._now, leg, sender, ethernet(macs[0], macs[1], packet),
                  self.step)
        self.frames.append(f)
        return f

    def send(self, side: Side, packet: bytes) -> None:
        self._now += PACKET_GAP
        self._frame(side, "harness", packet)
        self._into_gateway(side, packet)

    def _into_gateway(self, leg: Side, packet: bytes) -> None:
        work: deque[tuple[Side, bytes]] = deque([(leg, packet)])
        for _ in range(MAX_EVENTS):
            if not work:
                return
            leg, pkt = work.popleft()
            self._emit(self.gateway.handle(leg, pkt, now=self._now), work)
        raise RuntimeError(f"more than {MAX_EVENTS} packets in one exchange: a loop?")

    def _emit(self, actions: list, work: deque[tuple[Side, bytes]]) -> None:
        for a in actions:
            if not isinstance(a, Emit):
                continue
            f = self._frame(a.leg, "gateway", a.packet)
            if a.leg == "client" or self._plays["server"]:
                self._inbox[a.leg].append(f)
            else:
                for reply in self.servers.deliver(a.packet, self._now):
                    self._frame("server", "server", reply)
                    work.append(("server", reply))

    def _next_event(self) -> float | None:
        ds = [d for d in (self.gateway.next_deadline(), self.servers.next_deadline())
              if d is not None]
        return min(ds) if ds else None

    def _fire(self, t: float) -> None:
        self._now = max(self._now, t)
        work: deque[tuple[Side, bytes]] = deque()
        self._emit(self.gateway.handle_timer(now=self._now), work)
        for reply in self.servers.on_timer(self._now):
            self._frame("server", "server", reply)
            work.append(("server", reply))
        for _ in range(MAX_EVENTS):
            if not work:
                return
            leg, pkt = work.popleft()
            self._emit(self.gateway.handle(leg, pkt, now=self._now), work)

    def recv(self, side: Side, timeout: float) -> Frame | None:
        deadline = self._now + timeout
        for _ in range(MAX_EVENTS):
            if self._inbox[side]:
                return self._inbox[side].popleft()
            t = self._next_event()
            if t is None or t > deadline:
                self._now = max(self._now, deadline)
                return None
            self._fire(t)
        raise RuntimeError(f"more than {MAX_EVENTS} timer events while waiting")

    def wait(self, seconds: float) -> None:
        deadline = self._now + seconds
        for _ in range(MAX_EVENTS):
            t = self._next_event()
            if t is None or t > deadline:
                break
            self._fire(t)
        self._now = max(self._now, deadline)


# --------------------------------------------------------------------------- lab channel

ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
SOL_PACKET, PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING = 263, 15, 23
PACKET_OUTGOING = 4
SENT_MEMORY = 4096
"""Frames we sent and may still see leave (to tell them from the kernel's own)."""
TCP, IPV6_FRAGMENT = 6, 44
VNET = struct.Struct("=BBHHHH")
VNET_ZERO = bytes(VNET.size)
VNET_F_NEEDS_CSUM = 1
MAX_FRAME = VNET.size + 14 + 65535
NFT_TABLE = "fastpath_script"
"""The netdev table this channel adds (client and switch namespaces) while a script runs."""
OPEN_TIMEOUT = 10.0


def _packet_socket(ifname: str, ignore_outgoing: bool) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        if ignore_outgoing:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_in_netns(netns: str, ifname: str, *, ignore_outgoing: bool) -> socket.socket:
    """An AF_PACKET socket on ``ifname`` of namespace ``netns``: a helper thread enters the
    namespace (setns is per thread) and opens it; the socket stays bound there."""
    from reference.gateway.driver import enter_netns

    box: dict[str, object] = {}

    def target() -> None:
        try:
            enter_netns(netns)
            box["sock"] = _packet_socket(ifname, ignore_outgoing)
        except BaseException as e:  # reported to the caller below
            box["error"] = e

    t = threading.Thread(target=target, name=f"open-{netns}-{ifname}", daemon=True)
    t.start()
    t.join(OPEN_TIMEOUT)
    if "error" in box:
        raise ScriptError(f"cannot open a packet socket on {ifname} in {netns}: "
                          f"{box['error']}")
    if "sock" not in box:
        raise ScriptError(f"opening a packet socket on {ifname} in {netns} did not finish "
                          f"within {OPEN_TIMEOUT:g} s")
    return box["sock"]  # type: ignore[return-value]


def _complete_partial_checksum(buf: bytearray, ip: int, etype: int, n: int) -> None:
    """A kernel sending with checksum offload leaves only the pseudo-header sum in the TCP
    checksum field; a veth hands such a frame on without saying so (no NEEDS_CSUM on this
    side, the receiving kernel is told the checksum is verified). Complete it here, so the
    script's parser and pcaps see what a NIC would have put on the wire; a checksum that is
    neither complete nor this partial sum stays bad and is reported."""
    if etype == ETH_P_IP:
        if buf[ip + 9] != TCP or int.from_bytes(buf[ip + 6:ip + 8], "big") & 0x3FFF:
            return
        t = ip + (buf[ip] & 0x0F) * 4
        end = ip + int.from_bytes(buf[ip + 2:ip + 4], "big")
        pseudo = bytes(buf[ip + 12:ip + 20]) + b"\0\x06" + (end - t).to_bytes(2, "big")
    elif etype == ETH_P_IPV6 and buf[ip + 6] == TCP:
        t = ip + 40
        end = t + int.from_bytes(buf[ip + 4:ip + 6], "big")
        pseudo = bytes(buf[ip + 8:ip + 40]) + (end - t).to_bytes(4, "big") + b"\0\0\0\x06"
    else:
        return
    if end > n or end - t < 20:
        return
    field = int.from_bytes(buf[t + 16:t + 18], "big")
    words = sum(int.from_bytes(pseudo[i:i + 2], "big") for i in range(0, len(pseudo), 2))
    partial = (words - 1) % 0xFFFF + 1
    if field != partial:
        return
    seg = bytearray(buf[t:end])
    seg[16:18] = b"\0\0"
    buf[t + 16:t + 18] = codec.internet_checksum(pseudo + bytes(seg)).to_bytes(2, "big")


def offload_tcp_checksum(packet: bytes) -> tuple[bytes, bytes]:
    """``(vnet header, packet)`` to hand an IP packet to a veth as a kernel with TX checksum
    offload sends its own: the TCP checksum field holds only the pseudo-header sum and the
    header says NEEDS_CSUM (``csum_start`` at the TCP header of the Ethernet frame,
    ``csum_offset`` 16), so the skb is CHECKSUM_PARTIAL, and stays so across the veths and the
    impairment nodes, exactly like the lab's kernel clients' and servers' segments. (Should the
    sending device lack the offload, its kernel completes the checksum in software before the
    wire; either way the receiver gets the same bytes as from a full checksum.)

    Why not a full checksum and no vnet flags: such a frame arrives as CHECKSUM_NONE, and the
    receiving kernel then verifies it in software, which the nftables ``synproxy`` statement
    gets wrong for IPv6: ``nft_synproxy_do_eval`` calls ``nf_ip_checksum`` (the IPv4 routine,
    pseudo-header from bytes 12-19 of the IPv6 header) for both families and drops every
    valid IPv6 SYN that is not already marked verified or partial. See
    docs/howto/run-suite.rst.

    Left as it is (zero vnet header): anything that is not one whole TCP segment (a fragment,
    an IPv6 extension header) and a segment whose checksum is not valid (sent as is, so the
    receiver still verifies it and sees it bad)."""
    if len(packet) < 20:
        return VNET_ZERO, packet
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if packet[9] != TCP or int.from_bytes(packet[6:8], "big") & 0x3FFF or ihl < 20:
            return VNET_ZERO, packet
        end = int.from_bytes(packet[2:4], "big")
        src, dst = packet[12:16], packet[16:20]
    elif version == 6 and len(packet) >= 40 and packet[6] == TCP:
        ihl = 40
        end = 40 + int.from_bytes(packet[4:6], "big")
        src, dst = packet[8:24], packet[24:40]
    else:
        return VNET_ZERO, packet
    if end != len(packet) or end - ihl < 20:
        return VNET_ZERO, packet
    segment = packet[ihl:end]
    if tcp_checksum(src, dst, segment) != 0:
        return VNET_ZERO, packet  # a bad checksum stays bad, and verified as such
    partial = (pseudo_sum(src, dst, end - ihl) - 1) % 0xFFFF + 1  # folded, not inverted
    out = bytearray(packet)
    out[ihl + 16:ihl + 18] = partial.to_bytes(2, "big")
    return VNET.pack(VNET_F_NEEDS_CSUM, 0, 0, 0, 14 + ihl, 16), bytes(out)


class LabChannel:
    """A lab's client leg (``c0``, client namespace) and server leg (``g0``, switch
    namespace) on raw sockets; use as a context manager (or :meth:`close`)."""

    def __init__(self, lab: object, *, client_if: str = "c0", switch_if: str = "g0",
                 addresses: dict[int, Addresses] | None = None) -> None:
        self.lab = lab
        self.client_if, self.switch_if = client_if, switch_if
        self._addrs = addresses or {4: default_addresses(4), 6: default_addresses(6)}
        self.frames: list[Frame] = []
        self.step = 0
        self.recent_ports: deque[int] = deque(maxlen=RECENT_PORTS)
        self._socks: dict[Side, socket.socket] = {}
        self._inbox: dict[Side, deque[Frame]] = {"client": deque(), "server": deque()}
        self._plays = {"client": False, "server": False}
        self._buf = bytearray(MAX_FRAME + 1)
        self._sent: deque[bytes] = deque(maxlen=SENT_MEMORY)

    def __enter__(self) -> LabChannel:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._remove_rules()
        for s in self._socks.values():
            s.close()
        self._socks.clear()

    def addresses(self, family: int) -> Addresses:
        if family not in self._addrs:
            raise ScriptError(f"the lab channel has no IPv{family} addresses")
        return self._addrs[family]

    def now(self) -> float:
        return time.time()

    # ---- kernel suppression ----
    def _nft(self, role: str, text: str) -> None:
        res = self.lab.run(role, ["nft", "-f", "-"], input=text, text=True,  # type: ignore
                           capture_output=True, timeout=30)
        if res.returncode != 0:
            raise ScriptError(f"nft in the {role} namespace failed: {res.stderr.strip()}")

    def rules(self) -> dict[str, bool]:
        """Whether this channel's netdev table exists now, per namespace role."""
        out = {}
        for role in ("client", "switch"):
            res = self.lab.run(role, ["nft", "list", "table", "netdev",  # type: ignore
                                      NFT_TABLE], text=True, capture_output=True, timeout=30)
            out[role] = res.returncode == 0
        return out

    def _install_rules(self, client: bool, server: bool) -> None:
        lo, hi = CLIENT_PORTS[0], CLIENT_PORTS[-1]
        if client:
            self._nft("client", f"table netdev {NFT_TABLE} {{\n  chain script_in {{ type filter "
                                f"hook ingress device \"{self.client_if}\" priority -10; "
                                f"policy accept; tcp dport {lo}-{hi} counter drop; }}\n}}\n")
        if server:
            self._nft("switch", f"table netdev {NFT_TABLE} {{\n  chain script_in {{ type filter "
                                f"hook ingress device \"{self.switch_if}\" priority -10; "
                                f"policy accept; meta l4proto tcp counter drop; }}\n}}\n")

    def _remove_rules(self) -> None:
        errors = []
        for role in ("client", "switch"):
            res = self.lab.run(role, ["nft", "delete", "table", "netdev",  # type: ignore
                                      NFT_TABLE], text=True, capture_output=True, timeout=30)
            err = res.stderr.strip().lower()
            if res.returncode != 0 and "no such file" not in err:
                errors.append(f"{role}: {res.stderr.strip()}")
        if errors:
            raise ScriptError(f"could not remove the {NFT_TABLE} table: {'; '.join(errors)}")

    # ---- a run ----
    def open(self) -> None:
        """Open both packet sockets now (``begin`` opens them if this was not called).

        Open them *before* a capture on the same interfaces starts: the kernel hands an
        arriving frame to the interface's taps newest first, so a tcpdump started later
        queues every frame before this channel can read it and answer. Opened after
        tcpdump, the channel is served first, and a scheduling gap on the receiving CPU can
        let the channel's answer (an ACK) reach the pcap ahead of the segment it answers.
        """
        if self._socks:
            return
        ns = self.lab  # Lab: client_ns / switch_ns
        self._socks["client"] = open_in_netns(ns.client_ns, self.client_if,  # type: ignore
                                              ignore_outgoing=False)
        try:
            self._socks["server"] = open_in_netns(ns.switch_ns,  # type: ignore
                                                  self.switch_if, ignore_outgoing=False)
        except BaseException:
            self.close()
            raise

    def begin(self, client: bool, server: bool) -> None:
        self.open()
        self._remove_rules()  # a table left by a killed run
        self._plays = {"client": client, "server": server}
        try:
            self._install_rules(client, server)
        except BaseException:
            self._remove_rules()
            raise
        self._pump(0.0)
        for q in self._inbox.values():
            q.clear()

    def end(self) -> None:
        try:
            self._pump(0.0)
        finally:
            self._plays = {"client": False, "server": False}
            self._remove_rules()

    # ---- frames ----
    def send(self, side: Side, packet: bytes) -> None:
        a = self._addrs.get(4 if packet[0] >> 4 == 4 else 6) or default_addresses(4)
        if side == "client":
            frame = ethernet(a.gw_client_mac, a.client_mac, packet)
        else:
            src = codec.addr_str(packet[12:16] if packet[0] >> 4 == 4 else packet[8:24])
            frame = ethernet(a.gw_server_mac, a.server_mac(src), packet)
        self.frames.append(Frame(time.time(), side, "harness", frame, self.step))
        self._sent.append(frame)  # as our tap sees it leave: the checksum completed
        vnet, wire = offload_tcp_checksum(packet)
        self._socks[side].send(vnet + frame[:14] + wire)

    def _pump(self, timeout: float) -> bool:
        """Read every frame waiting (waiting up to ``timeout`` for the first); True if any."""
        poller = select.poll()
        by_fd = {s.fileno(): side for side, s in self._socks.items()}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        got = False
        for fd, _ in poller.poll(max(0, int(timeout * 1000))):
            side = by_fd[fd]
            for _ in range(256):
                try:
                    n, addr = self._socks[side].recvfrom_into(self._buf)
                except (BlockingIOError, InterruptedError):
                    break
                got = self._take(side, n, addr[2]) or got
        return got

    def _take(self, side: Side, n: int, pkttype: int) -> bool:
        now = time.time()
        e = VNET.size
        if n < e + 14 + 20:
            return False
        buf = self._buf
        etype = int.from_bytes(buf[e + 12:e + 14], "big")
        ip = e + 14
        if not ((etype == ETH_P_IP and buf[ip + 9] == TCP)
                or (etype == ETH_P_IPV6 and buf[ip + 6] in (TCP, IPV6_FRAGMENT))):
            return False  # ARP, ICMP, neighbour discovery: not part of either TCP leg
        flags, _, _, _, start, offset = VNET.unpack_from(buf, 0)
        if flags & VNET_F_NEEDS_CSUM:  # offloaded: complete it, so pcaps and parsers agree
            end = ip + (int.from_bytes(buf[ip + 2:ip + 4], "big") if etype == ETH_P_IP
                        else 40 + int.from_bytes(buf[ip + 4:ip + 6], "big"))
            s, at = e + start, e + start + offset
            if ip < s <= at and at + 2 <= min(end, n):
                # The field already holds the pseudo-header sum (that is what NEEDS_CSUM
                # means); summing from csum_start over it completes the checksum.
                buf[at:at + 2] = codec.internet_checksum(bytes(buf[s:min(end, n)])
                                                         ).to_bytes(2, "big")
        else:
            _complete_partial_checksum(buf, ip, etype, n)
        frame = bytes(buf[e:n])
        if pkttype == PACKET_OUTGOING:
            if frame in self._sent:
                self._sent.remove(frame)
                return False  # our own frame, recorded when sent
            # Someone else on our side of the leg: the real servers (a tap when the script
            # does not play the server), or a kernel that should have been kept out.
            who = "server" if side == "server" else "kernel"
            self.frames.append(Frame(now, side, who, frame, self.step))
            return False
        f = Frame(now, side, "gateway", frame, self.step)
        self.frames.append(f)
        if self._plays[side]:
            self._inbox[side].append(f)
            return True
        return False

    def recv(self, side: Side, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            if self._inbox[side]:
                return self._inbox[side].popleft()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(min(left, 0.5))

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._pump(min(left, 0.5))

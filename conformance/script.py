"""Scripted packets: the harness plays the TCP client and/or server of a gateway, packetdrill-like.

Kernels will not split a request at byte 9, send the second half first, fragment it, put an
unknown option on it, or answer a SYN with a window scale of 2 on request; a script does. A
script is plain Python: each call on ``script.client`` / ``script.server`` appends one step,
nothing is sent until :func:`play` runs it on a channel::

    s = Script("split-request", seed=7, expects="the response arrives byte-exact")
    c = s.client
    c.syn()
    c.expect_synack(bind="G")        # the gateway's ISN is whatever it sends: bound to G
    c.ack()
    c.send(REQ[:9])
    c.send(REQ[9:])
    c.receive(until_fin=True)        # a mini receiver: ACKs in-order data (SACK if holes)
    c.fin()
    c.expect_ack()
    s.expect_http([100])             # what the client application got, byte-exact
    result = play(s, MemoryChannel())

Symbolic ISNs: the harness's own ISNs, ports and timestamps come from ``seed``; the gateway's
ISNs are bound when first seen (``bind="G"`` on the client leg, ``bind="GS"`` on the server
leg) and a second binding of the same name must agree. Every expectation has a bounded
timeout (virtual time on the memory channel). A run returns a :class:`ScriptResult`: ok or
not, the failing step and why, every frame of both legs (also as pcaps) and the application
bytes each scripted peer received.

Sequence offsets in steps (``at=``) are stream offsets: 0 is the first byte after the SYN.

Channels live in :mod:`conformance.script_channels` (``MemoryChannel`` on the sans-I/O
reference core, ``LabChannel`` on raw sockets in a lab), ready scripts in
:mod:`conformance.script_library`.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import dpkt

from reference.gateway import codec
from reference.gateway._checksum import internet_checksum, tcp_checksum
from reference.gateway.sim import response_body
from spec import topology
from spec.segment import ACK, FIN, PSH, RST, SYN, flag_string
from spec.seq import seq_add, seq_diff, seq_le, seq_lt, seq_sub

Side = Literal["client", "server"]
SIDES: tuple[Side, ...] = ("client", "server")
CLIENT_PORTS = range(600, 1000)
"""Scripted clients' source ports: below the kernel's ephemeral range, so the client
namespace's netdev drop for these ports never hides a kernel connection."""
DEFAULT_TIMEOUT = 3.0
"""Seconds any expectation waits unless told otherwise."""
PCAP_EPOCH = 1_700_000_000
"""Added to virtual (memory channel) times so pcaps carry plausible dates."""
MAX_PACKETS_PER_STEP = 10_000
"""Bound on the packets one expectation reads, whatever the gateway sends."""
HALF = 1 << 30
RECENT_PORTS = 200
LINK_MTU = 1500


WINDOW_WAIT = 3.0
"""Seconds a scripted sender waits for a closed window to open before sending anyway."""


class ScriptError(ValueError):
    """A script that cannot be built or run as written (not a gateway failure)."""


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class Addresses:
    """Who is who on both legs for one address family (MACs are the lab's fixed ones)."""

    family: int
    client_ip: str
    vip: str
    vport: int
    gw_server_ip: str
    servers: tuple[str, ...]
    server_port: int = 80
    client_mac: str = topology.CLIENT_MAC
    gw_client_mac: str = topology.GW_CLIENT_MAC
    gw_server_mac: str = topology.GW_SERVER_MAC

    def server_mac(self, ip: str) -> str:
        """Server K's MAC (``02:00:00:00:01:KK``, as the lab sets it), K from the address."""
        k = self.server_index(ip)
        return f"02:00:00:00:01:{k:02x}" if k else topology.SERVER_MAC

    def server_index(self, ip: str) -> int:
        """1-based position of ``ip`` among the servers, 0 if it is not one of them."""
        norm = codec.addr_str(codec.addr_bytes(ip))
        for k, s in enumerate(self.servers, 1):
            if codec.addr_str(codec.addr_bytes(s)) == norm:
                return k
        return 0


V6_DEFAULTS = {"CLIENT_IP6": "2001:db8:1::2", "VIP6": "2001:db8::10",
               "GW_SERVER_IP6": "2001:db8:2::1",
               "SERVER_IPS6": ("2001:db8:2::11", "2001:db8:2::12", "2001:db8:2::13")}
"""Used until :mod:`spec.topology` defines its own IPv6 constants (then those win)."""


def default_addresses(family: int = 4) -> Addresses:
    """The lab's addresses (spec.topology); IPv6 from its ``*_IP6`` constants if present."""
    if family == 4:
        return Addresses(4, topology.CLIENT_IP, topology.VIP, topology.VPORT,
                         topology.GW_SERVER_IP, tuple(topology.SERVER_IPS), topology.SERVER_PORT)
    if family == 6:
        get = {k: getattr(topology, k, v) for k, v in V6_DEFAULTS.items()}
        return Addresses(6, get["CLIENT_IP6"], get["VIP6"], topology.VPORT,
                         get["GW_SERVER_IP6"], tuple(get["SERVER_IPS6"]), topology.SERVER_PORT)
    raise ScriptError(f"address family {family}: use 4 or 6")


# --------------------------------------------------------------------------- frames & channels


@dataclass(slots=True)
class Frame:
    """One Ethernet frame on one leg, as the harness sent or saw it."""

    time: float
    leg: Side
    sender: str
    """``harness`` (a scripted peer sent it), ``gateway``, ``server`` (a real or memory
    server the script does not play), or ``kernel`` (the client namespace's own kernel:
    never expected while a script runs)."""
    frame: bytes
    step: int = 0
    """1-based step that was running (0: before the first or while settling)."""
    partial_checksum: bool = False
    """The TCP checksum was left to offload (only possible for frames seen on a veth)."""

    @property
    def packet(self) -> bytes:
        return self.frame[14:]


def ethernet(dst_mac: str, src_mac: str, packet: bytes) -> bytes:
    """An Ethernet II frame around an IP packet."""
    etype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
    return (bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
            + etype.to_bytes(2, "big") + packet)


class Channel(Protocol):
    """Where a script's packets go: the reference core in memory, or a lab's wires."""

    frames: list[Frame]
    step: int
    recent_ports: deque[int]
    """Client ports of the last runs: a new run avoids them (the gateway may still hold
    those connections, in TIME-WAIT or lingering)."""

    def addresses(self, family: int) -> Addresses: ...

    def begin(self, client: bool, server: bool) -> None:
        """Start of a run: which sides the script plays (suppress those kernels)."""

    def end(self) -> None:
        """End of a run, also after a failure: undo whatever :meth:`begin` did."""

    def now(self) -> float: ...

    def send(self, side: Side, packet: bytes) -> None:
        """Put an IP packet on ``side``'s leg towards the gateway (and record it)."""

    def recv(self, side: Side, timeout: float) -> Frame | None:
        """The next frame the gateway sent to ``side``'s scripted peer, or None."""

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass (frames arriving meanwhile are queued and recorded)."""


# --------------------------------------------------------------------------- packet building


def build_packet(*, src: str, dst: str, sport: int, dport: int, seq: int, ack: int,
                 flags: int, window: int, payload: bytes = b"", mss: int | None = None,
                 wscale: int | None = None, sack_permitted: bool = False,
                 tsval: int | None = None, tsecr: int | None = None,
                 sack: tuple[tuple[int, int], ...] = (),
                 options: Sequence[tuple[int, bytes]] = (), ip_id: int = 0) -> bytes:
    """``codec.build`` plus raw extra options (``(kind, data)``, e.g. ``(253, b"\\x12\\x34")``)
    appended after the standard ones, NOP-padded to a 4-byte boundary."""
    s, d = codec.addr_bytes(src), codec.addr_bytes(dst)
    version = 4 if len(s) == 4 else 6
    kw = dict(version=version, src=s, dst=d, sport=sport, dport=dport, seq=seq & 0xFFFFFFFF,
              ack=ack & 0xFFFFFFFF, flags=flags, window=window, mss=mss, wscale=wscale,
              sack_permitted=sack_permitted, tsval=tsval, tsecr=tsecr, sack=sack, ip_id=ip_id)
    if not options:
        return codec.build(payload=payload, **kw)  # type: ignore[arg-type]
    base = codec.build(payload=b"", **kw)  # type: ignore[arg-type]
    ihl = 20 if version == 4 else 40
    tcp = bytearray(base[ihl:])
    extra = b"".join(bytes((k, len(v) + 2)) + v for k, v in options)
    extra += b"\x01" * (-len(extra) % 4)
    tcp += extra
    if len(tcp) > 60:
        raise ScriptError(f"TCP options do not fit: header would be {len(tcp)} bytes")
    tcp[12] = (len(tcp) // 4) << 4 | (tcp[12] & 0x0F)
    seg = bytearray(tcp + payload)
    seg[16:18] = b"\0\0"
    seg[16:18] = tcp_checksum(s, d, bytes(seg)).to_bytes(2, "big")
    ip = bytearray(base[:ihl])
    if version == 4:
        ip[2:4] = (ihl + len(seg)).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
    else:
        ip[4:6] = len(seg).to_bytes(2, "big")
    return bytes(ip + seg)


def fragment(packet: bytes, size: int, ident: int) -> list[bytes]:
    """Cut an IP packet into fragments of ``size`` payload bytes (rounded down to 8).

    IPv4: the header's MF/offset fields. IPv6: a Fragment extension header (RFC 8200 §4.5).
    """
    size = max(8, size - size % 8)
    out: list[bytes] = []
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        body = packet[ihl:int.from_bytes(packet[2:4], "big")]
        for off in range(0, len(body), size):
            piece = body[off:off + size]
            hdr = bytearray(packet[:ihl])
            hdr[2:4] = (ihl + len(piece)).to_bytes(2, "big")
            hdr[4:6] = (ident & 0xFFFF).to_bytes(2, "big")
            more = 0x2000 if off + size < len(body) else 0
            hdr[6:8] = (more | off // 8).to_bytes(2, "big")
            hdr[10:12] = b"\0\0"
            hdr[10:12] = internet_checksum(bytes(hdr)).to_bytes(2, "big")
            out.append(bytes(hdr) + piece)
        return out
    nh, body = packet[6], packet[40:]
    for off in range(0, len(body), size):
        piece = body[off:off + size]
        more = 1 if off + size < len(body) else 0
        fh = struct.pack("!BBHI", nh, 0, off | more, ident & 0xFFFFFFFF)
        hdr = bytearray(packet[:40])
        hdr[4:6] = (8 + len(piece)).to_bytes(2, "big")
        hdr[6] = 44
        out.append(bytes(hdr) + fh + piece)
    return out


# --------------------------------------------------------------------------- HTTP helpers


def http_request(size: int, *, host: str | None = None, close: bool = True,
                 path: str | None = None) -> bytes:
    """``GET /size/N`` as the lab's servers (and the memory servers) answer it."""
    host = host or topology.VIP
    target = path or f"/size/{size}"
    conn = "close" if close else "keep-alive"
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n".encode()


def http_response(size: int, *, name: str = "script", close: bool = True) -> bytes:
    """A response in the lab server's format with ``response_body(size)`` (for scripted
    servers, so :meth:`Script.expect_http` checks them like real ones)."""
    head = (f"HTTP/1.1 200 OK\r\nServer: fastpath-lab\r\nX-Server: {name}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode()
    return head + response_body(size)


def _split_responses(data: bytes) -> tuple[list[tuple[int, int, bytes]], bytes, str]:
    """Complete responses as (status, content length, body), the rest, and a problem."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, data[pos:], ""
        lines = data[pos:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            return out, data[pos:], f"not a status line at byte {pos}: {lines[0][:60]!r}"
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        if length is None:
            return out, data[pos:], f"response at byte {pos} has no Content-Length"
        if end + 4 + length > len(data):
            return out, data[pos:], ""
        out.append((int(parts[1]), length, data[end + 4:end + 4 + length]))
        pos = end + 4 + length
    return out, b"", ""


def check_http(data: bytes, sizes: Sequence[int]) -> list[str]:
    """Problems with ``data`` as exactly len(sizes) 200 responses carrying
    ``response_body(n)`` for each n, in order, and nothing after them (empty: all good)."""
    responses, rest, problem = _split_responses(data)
    problems = [problem] if problem else []
    for i, n in enumerate(sizes):
        if i >= len(responses):
            problems.append(f"response {i + 1} of {len(sizes)} missing or incomplete "
                            f"({len(rest)} bytes of a partial response)")
            break
        status, length, body = responses[i]
        if status != 200:
            problems.append(f"response {i + 1}: status {status}, expected 200")
        if length != n:
            problems.append(f"response {i + 1}: Content-Length {length}, expected {n}")
        elif body != response_body(n):
            bad = next(j for j, (a, b) in enumerate(zip(body, response_body(n), strict=True))
                       if a != b)
            problems.append(f"response {i + 1}: body differs from response_body({n}) at "
                            f"byte {bad}")
    if len(responses) > len(sizes):
        problems.append(f"{len(responses) - len(sizes)} response(s) more than expected")
    elif len(responses) == len(sizes) and rest:
        problems.append(f"{len(rest)} bytes after the last response")
    return problems


# --------------------------------------------------------------------------- steps


class StepFailed(Exception):
    """An expectation was not met; the message says what was seen instead."""


class _EndedByReset(Exception):
    """An RST arrived where the script allows one (``rst_ok``): the run ends, not failed."""


@dataclass(slots=True)
class Step:
    """One line of a script: who does what, readable, and the code that does it."""

    peer: str
    text: str
    run: Callable[[_Run], None]

    def __str__(self) -> str:
        return f"{self.peer}.{self.text}" if self.peer else self.text


def _fmt(args: dict[str, object]) -> str:
    def show(v: object) -> str:
        if isinstance(v, bytes | bytearray):
            return f"<{len(v)} bytes>" if len(v) > 24 else repr(bytes(v))
        return repr(v)
    return ", ".join(f"{k}={show(v)}" for k, v in args.items() if v is not None)


class _Peer:
    """Step builders shared by both scripted peers; each call appends one step."""

    side: Side

    def __init__(self, script: Script) -> None:
        self._script = script

    def _add(self, name: str, run: Callable[[_Conn, _Run], None], **args: object) -> _Peer:
        side = self.side

        def go(r: _Run) -> None:
            run(r.conn(side), r)

        self._script.steps.append(Step(side, f"{name}({_fmt(args)})", go))
        return self

    def ack(self, *, window: int | None = None) -> _Peer:
        """A pure ACK of everything received in order."""
        return self._add("ack", lambda c, r: c.send_segment(r, ACK, window=window),
                         window=window)

    def send(self, data: bytes, *, at: int | None = None, fin: bool = False,
             push: bool = True, window: int | None = None,
             options: Sequence[tuple[int, bytes]] = ()) -> _Peer:
        """One data segment; ``at`` = stream offset of its first byte (default: next new
        byte), for out-of-order data and overlapping retransmissions; ``options`` = extra
        raw TCP options ``(kind, data)``."""
        flags = ACK | (PSH if push else 0) | (FIN if fin else 0)
        return self._add("send", lambda c, r: c.send_data(r, data, at, flags, window,
                                                          tuple(options)),
                         data=data, at=at, fin=fin or None, window=window,
                         options=tuple(options) or None)

    def fragments(self, data: bytes, size: int, *, at: int | None = None) -> _Peer:
        """One data segment sent as IP fragments of ``size`` payload bytes each."""
        return self._add("fragments", lambda c, r: c.send_data(
            r, data, at, ACK | PSH, None, (), frag=size), data=data, size=size, at=at)

    def window(self, size: int) -> _Peer:
        """Advertise a receive window of ``size`` bytes (0: zero window) with an ACK."""
        def run(c: _Conn, r: _Run) -> None:
            c.rcv_buffer = size
            c.send_segment(r, ACK)
        return self._add("window", run, size=size)

    def fin(self) -> _Peer:
        """FIN (with ACK) after the data sent so far."""
        def run(c: _Conn, r: _Run) -> None:
            c.send_segment(r, FIN | ACK, seq=c.snd_nxt)
            c.snd_nxt = seq_add(c.snd_nxt, 1)
            c.fin_sent = True
        return self._add("fin", run)

    def rst(self, *, in_window: bool = True) -> _Peer:
        """RST at SND.NXT (exactly what RFC 5961 accepts) or, ``in_window=False``, 2^30
        beyond it (outside any window: a correct receiver ignores it)."""
        def run(c: _Conn, r: _Run) -> None:
            seq = c.snd_nxt if in_window else seq_add(c.snd_nxt, HALF)
            c.send_segment(r, RST | ACK, seq=seq, window=0)
        return self._add("rst", run, in_window=in_window)

    def receive(self, *, until_fin: bool = False, nbytes: int | None = None,
                responses: int | None = None, sack_holes: Sequence[int] = (),
                timeout: float = DEFAULT_TIMEOUT, rst_ok: bool = False) -> _Peer:
        """A mini receiver: read what the gateway sends, ACK every segment that carries
        data or FIN (with SACK blocks while there are holes), until the peer's FIN
        (``until_fin``), ``nbytes`` received in all, or ``responses`` complete HTTP
        responses. ``sack_holes``: indices (0-based, within this step) of data segments
        to treat as lost the first time they arrive, so the ACKs carry SACK blocks with
        holes and the sender must retransmit."""
        if not (until_fin or nbytes is not None or responses is not None):
            raise ScriptError("receive() needs until_fin, nbytes or responses")
        return self._add("receive", lambda c, r: c.receive(
            r, until_fin, nbytes, responses, tuple(sack_holes), timeout, rst_ok),
            until_fin=until_fin or None, nbytes=nbytes, responses=responses,
            sack_holes=tuple(sack_holes) or None, timeout=timeout)

    def expect_fin(self, *, timeout: float = DEFAULT_TIMEOUT) -> _Peer:
        """Wait for the peer's FIN (taking in data before it) and ACK it."""
        return self._add("expect_fin", lambda c, r: c.receive(
            r, True, None, None, (), timeout, False), timeout=timeout)

    def expect_ack(self, *, timeout: float = DEFAULT_TIMEOUT) -> _Peer:
        """Wait until everything sent (data and FIN) is acknowledged."""
        return self._add("expect_ack", lambda c, r: c.wait_for(
            r, lambda: c.snd_una == c.snd_nxt, "an ACK of everything sent", timeout),
            timeout=timeout)

    def expect_no_rst(self, seconds: float) -> _Peer:
        """For ``seconds``, no acceptable (in-window) RST may arrive; data is taken in."""
        def run(c: _Conn, r: _Run) -> None:
            c.quiet(r, seconds)
        return self._add("expect_no_rst", run, seconds=seconds)

    def expect_rst(self, *, timeout: float = DEFAULT_TIMEOUT) -> _Peer:
        """Wait for an RST (data arriving first is taken in). Through a gateway that does
        not splice (``play(proxy=True)``) a FIN ends it too: a proxy terminates TCP and
        closes each of its own connections its own way (after an error response, if any);
        only a splice must relay the RST itself."""
        return self._add("expect_rst", lambda c, r: c.wait_for(
            r, lambda: c.reset or (r.proxy and c.fin_received),
            "an RST" + (" or FIN" if r.proxy else ""), timeout,
            rst_expected=True), timeout=timeout)


class Client(_Peer):
    """The scripted client on the client leg (source port from the seed, 600-999)."""

    side: Side = "client"

    def syn(self, *, mss: int | None = 1460, wscale: int | None = 7, sack: bool = True,
            ts: bool = True, options: Sequence[tuple[int, bytes]] = (),
            port: int | None = None, bind: str = "C") -> Client:
        """SYN; a second call retransmits the same SYN (same ISN): a duplicate SYN."""
        def run(c: _Conn, r: _Run) -> None:
            c.open_client(r, port, bind, mss, wscale, sack, ts)
            c.send_segment(r, SYN, seq=c.iss, ack=0, mss=mss, wscale=wscale,
                           sack_permitted=sack, syn_ts=ts, options=tuple(options))
        self._add("syn", run, mss=mss, wscale=wscale, sack=sack, ts=ts,
                  options=tuple(options) or None, port=port, bind=bind)
        return self

    def expect_synack(self, *, bind: str = "G", timeout: float = DEFAULT_TIMEOUT) -> Client:
        """The gateway's SYN-ACK for our SYN; its ISN is bound to ``bind``."""
        self._add("expect_synack", lambda c, r: c.expect_synack(r, bind, timeout), bind=bind,
                  timeout=timeout)
        return self


class Server(_Peer):
    """The scripted server on the server leg: whichever server the gateway connects to."""

    side: Side = "server"

    def expect_syn(self, *, bind: str = "GS", timeout: float = DEFAULT_TIMEOUT) -> Server:
        """The gateway's SYN towards a server; its ISN is bound to ``bind``."""
        self._add("expect_syn", lambda c, r: c.expect_syn(r, bind, timeout), bind=bind,
                  timeout=timeout)
        return self

    def synack(self, *, mss: int | None = 1460, wscale: int | None = 7, sack: bool = True,
               ts: bool = True, bind: str = "S") -> Server:
        """SYN-ACK; each option only if the gateway's SYN offered it (``None``/``False``:
        refuse it), so a server with another window scale, no SACK or no timestamps."""
        self._add("synack", lambda c, r: c.synack(r, mss, wscale, sack, ts, bind), mss=mss,
                  wscale=wscale, sack=sack, ts=ts, bind=bind)
        return self

    def expect_data(self, data: bytes | int, *, timeout: float = DEFAULT_TIMEOUT,
                    rst_ok: bool = False) -> Server:
        """Wait for ``data`` (those exact bytes, or that many) in order, then ACK it."""
        n = data if isinstance(data, int) else len(data)
        want = None if isinstance(data, int) else bytes(data)
        self._add("expect_data", lambda c, r: c.expect_data(r, n, want, timeout, rst_ok),
                  data=data, timeout=timeout)
        return self

    def expect_request(self, request: bytes, *, timeout: float = DEFAULT_TIMEOUT,
                       rst_ok: bool = False) -> Server:
        """Wait for the HTTP request the client sent (``request``), then ACK it: the exact
        bytes on a gateway that relays bytes; on a full (L7) proxy, which rewrites heads
        (``play(http_equivalent=True)``), a complete request HTTP-equivalent to it."""
        want = bytes(request)
        self._add("expect_request", lambda c, r: c.expect_request(r, want, timeout, rst_ok),
                  data=want, timeout=timeout)
        return self

    def respond(self, body: bytes, *, close: bool = False) -> Server:
        """Send ``body`` in MSS-sized segments (FIN on the last one if ``close``); does not
        wait for ACKs (keep bodies within the client's window)."""
        def run(c: _Conn, r: _Run) -> None:
            c.respond(r, body, close)
        self._add("respond", run, body=body, close=close or None)
        return self

    def respond_if_proxy(self, body: bytes) -> Server:
        """Through a gateway that does not splice (``play(proxy=True)``), send ``body`` too.
        A proxy whose client went away may keep its server connection until the response
        has ended (HAProxy and nginx do by default) and must close it then; a splice has to
        pass the client's RST on at once, so for it this step sends nothing."""
        def run(c: _Conn, r: _Run) -> None:
            if r.proxy:
                c.respond(r, body, False)
        self._add("respond_if_proxy", run, body=body)
        return self


# --------------------------------------------------------------------------- the script


@dataclass
class ScriptResult:
    """What one run of a script did."""

    name: str
    ok: bool
    outcome: str
    """``completed``, ``reset`` (ended early by an RST the script allows), ``failed`` (an
    expectation was not met) or ``error`` (the channel could not send)."""
    failed_step: int | None
    step: str
    reason: str
    frames: list[Frame]
    steps: list[str]
    client_data: bytes
    """Application bytes the scripted client received in order (the response)."""
    server_data: bytes
    """Application bytes the scripted server received in order (the request)."""
    bindings: dict[str, int]
    binding_legs: dict[str, Side]
    expects: str

    def summary(self) -> str:
        if self.ok:
            why = f": {self.reason}" if self.outcome == "reset" else ""
            return f"{self.name}: ok ({self.outcome}{why})"
        return f"{self.name}: FAILED at step {self.failed_step} {self.step}: {self.reason}"

    def text(self) -> str:
        """Steps, then every frame packetdrill-like with symbolic sequence numbers."""
        lines = [self.summary(), f"expects: {self.expects}"]
        lines += [f"  {i:2d}. {s}" for i, s in enumerate(self.steps, 1)]
        t0 = self.frames[0].time if self.frames else 0.0
        for f in self.frames:
            lines.append(f"  {f.time - t0:9.6f} #{f.step:<2d} {f.leg:6s} "
                         f"{describe(f, self._names(f.leg))}")
        return "\n".join(lines)

    def _names(self, leg: Side) -> dict[str, int]:
        return {k: v for k, v in self.bindings.items() if self.binding_legs.get(k) == leg}

    def write_pcaps(self, client: str | Path, server: str | Path) -> tuple[Path, Path]:
        """Each leg's frames as a classic Ethernet pcap (Wireshark, tshark, the checker)."""
        out = []
        for leg, path in (("client", Path(client)), ("server", Path(server))):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                w = dpkt.pcap.Writer(f, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB)
                for fr in self.frames:
                    if fr.leg == leg:
                        w.writepkt(fr.frame, ts=fr.time)
            out.append(path)
        return out[0], out[1]


def describe(f: Frame, bindings: dict[str, int] | None = None) -> str:
    """One frame as text: addresses, flags, symbolic seq/ack where an ISN is bound."""
    try:
        p = codec.parse(f.packet, verify_checksum=not f.partial_checksum)
    except codec.DecodeError as e:
        return f"{f.sender}: undecodable ({e})"
    if not p.first_fragment:
        return (f"{p.src_str} > {p.dst_str} fragment id={p.ip_id} off={p.frag_offset} "
                f"len={len(p.payload)}{' MF' if p.more_fragments else ''}")

    def sym(v: int) -> str:
        best = None
        for name, isn in (bindings or {}).items():
            d = seq_diff(v, isn)
            if 0 <= d < HALF and (best is None or d < best[1]):
                best = (name, d)
        return f"{best[0]}+{best[1]}" if best else str(v)

    opts = []
    if p.mss is not None:
        opts.append(f"mss {p.mss}")
    if p.wscale is not None:
        opts.append(f"wscale {p.wscale}")
    if p.sack_permitted:
        opts.append("sackOK")
    if p.tsval is not None:
        opts.append(f"TS {p.tsval}/{p.tsecr}")
    if p.sack:
        opts.append("sack " + " ".join(f"{sym(a)}:{sym(b)}" for a, b in p.sack))
    opts += [f"opt{k}" for k in p.unknown_options]
    frag = " (frag MF)" if p.more_fragments else ""
    return (f"{f.sender:7s} {p.src_str}:{p.sport} > {p.dst_str}:{p.dport} "
            f"{flag_string(p.flags)} seq={sym(p.seq)} ack={sym(p.ack) if p.flags & ACK else 0} "
            f"win={p.window} len={len(p.payload)}{frag}"
            + (f" <{', '.join(opts)}>" if opts else ""))


class Script:
    """A named list of steps for a scripted client and/or server, with the seed that fixes
    the harness's ports, ISNs and timestamps, the address family, and what it expects."""

    def __init__(self, name: str, *, seed: int = 1, family: int = 4, expects: str = "",
                 settle: float = 0.2) -> None:
        if family not in (4, 6):
            raise ScriptError(f"address family {family}: use 4 or 6")
        self.name, self.seed, self.family, self.expects = name, seed, family, expects
        self.settle = settle
        """Seconds to keep recording after the last step (late retransmissions, ACKs)."""
        self.steps: list[Step] = []
        self.client = Client(self)
        self.server = Server(self)

    @property
    def plays(self) -> tuple[bool, bool]:
        """(plays the client, plays the server)."""
        return (any(s.peer == "client" for s in self.steps),
                any(s.peer == "server" for s in self.steps))

    def wait(self, seconds: float) -> Script:
        """Let time pass (the gateway's timers run; arriving frames are queued)."""
        self.steps.append(Step("", f"wait({seconds:g})", lambda r: r.channel.wait(seconds)))
        return self

    def expect_http(self, sizes: Sequence[int]) -> Script:
        """The client application got exactly these responses, bodies byte-exact."""
        sizes = tuple(sizes)

        def run(r: _Run) -> None:
            problems = check_http(bytes(r.conn("client").app), sizes)
            if problems:
                raise StepFailed("; ".join(problems))
        self.steps.append(Step("", f"expect_http({list(sizes)})", run))
        return self

    def __str__(self) -> str:
        return "\n".join([f"script {self.name} (seed {self.seed}, IPv{self.family})",
                          *(f"  {i:2d}. {s}" for i, s in enumerate(self.steps, 1))])


# --------------------------------------------------------------------------- running


@dataclass
class _Conn:
    """One scripted endpoint's TCP state: enough TCP to be a believable peer, no more."""

    side: Side
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    iss: int = 0
    snd_nxt: int = 0
    snd_una: int = 0
    irs: int | None = None
    rcv_nxt: int = 0
    my_wscale: int = 0
    peer_wscale: int = 0
    peer_right: int | None = None
    """Right edge of the window the peer last offered (its ACK + scaled window): a
    believable peer sends nothing beyond it (RFC 9293 §3.8.6)."""
    peer_mss: int = 536
    sack_ok: bool = False
    ts_ok: bool = False
    ts_offer: bool = False
    ws_offer: int | None = None
    sack_offer: bool = False
    ts_base: int = 0
    ts_last: int = 0
    ts_recent: int = 0
    rcv_buffer: int = 262144
    app: bytearray = field(default_factory=bytearray)
    ooo: dict[int, bytes] = field(default_factory=dict)
    """Out-of-order data by absolute sequence number."""
    peer_fin: int | None = None
    """Sequence number of the peer's FIN once seen (consumed when in order)."""
    fin_received: bool = False
    fin_sent: bool = False
    reset: bool = False
    syn_seen: dict[str, object] = field(default_factory=dict)

    # ---- output ----
    def window_field(self, syn: bool = False) -> int:
        if syn:
            return min(self.rcv_buffer, 65535)
        return min(self.rcv_buffer >> self.my_wscale, 65535)

    def tsval(self, r: _Run) -> int:
        v = (self.ts_base + int((r.channel.now() - r.t0) * 1000)) & 0xFFFFFFFF
        if seq_lt(v, self.ts_last):
            v = self.ts_last
        self.ts_last = v
        return v

    def sack_blocks(self) -> tuple[tuple[int, int], ...]:
        if not self.sack_ok or not self.ooo:
            return ()
        blocks: list[list[int]] = []
        for s in sorted(self.ooo, key=lambda x: seq_diff(x, self.rcv_nxt)):
            e = seq_add(s, len(self.ooo[s]))
            if blocks and seq_le(s, blocks[-1][1]):
                if seq_lt(blocks[-1][1], e):
                    blocks[-1][1] = e
            else:
                blocks.append([s, e])
        blocks.reverse()  # most recent (highest) first
        return tuple((a, b) for a, b in blocks[:3 if self.ts_ok else 4])

    def send_segment(self, r: _Run, flags: int, *, seq: int | None = None,
                     ack: int | None = None, payload: bytes = b"", window: int | None = None,
                     mss: int | None = None, wscale: int | None = None,
                     sack_permitted: bool = False, syn_ts: bool = False,
                     options: tuple[tuple[int, bytes], ...] = (), frag: int | None = None,
                     sack: bool = True) -> None:
        if self.local is None or self.remote is None:
            raise ScriptError(f"{self.side}: no connection yet (the script must start with "
                              f"{'syn()' if self.side == 'client' else 'expect_syn()'})")
        syn = bool(flags & SYN)
        ts = (syn_ts or self.ts_ok) if syn else self.ts_ok
        pkt = build_packet(
            src=self.local[0], dst=self.remote[0], sport=self.local[1], dport=self.remote[1],
            seq=self.snd_nxt if seq is None else seq,
            ack=(self.rcv_nxt if ack is None else ack) if flags & ACK else 0, flags=flags,
            window=self.window_field(syn) if window is None else window, payload=payload,
            mss=mss, wscale=wscale, sack_permitted=sack_permitted,
            tsval=self.tsval(r) if ts else None,
            tsecr=(self.ts_recent if flags & ACK else 0) if ts else None,
            sack=self.sack_blocks() if sack and not syn else (), options=options,
            ip_id=r.rng.getrandbits(16))
        if frag:
            for piece in fragment(pkt, frag, r.rng.getrandbits(32)):
                r.channel.send(self.side, piece)
        else:
            r.channel.send(self.side, pkt)

    def send_data(self, r: _Run, data: bytes, at: int | None, flags: int,
                  window: int | None, options: tuple[tuple[int, bytes], ...],
                  frag: int | None = None) -> None:
        base = seq_add(self.iss, 1)
        seq = self.snd_nxt if at is None else seq_add(base, at)
        end = seq_add(seq, len(data) + (1 if flags & FIN else 0))
        if data and self.peer_right is not None \
                and seq_lt(self.peer_right, seq_add(seq, len(data))):
            # Data beyond the offered window: wait (bounded) for the peer to open
            # it, as a real sender would; a SYN proxy, say, answers the handshake with a
            # zero window until its server side is up. Then send regardless, noted.
            need = seq_add(seq, len(data))
            try:
                self.wait_for(r, lambda: self.peer_right is not None
                              and seq_le(need, self.peer_right),
                              "the peer to open its window", WINDOW_WAIT)
            except StepFailed:
                r.note(f"{self.side} sent beyond the peer's window (right edge "
                       f"{self.peer_right}, data up to {need}) after {WINDOW_WAIT:g} s")
        self.send_segment(r, flags, seq=seq, payload=data, window=window, options=options,
                          frag=frag)
        if seq_lt(self.snd_nxt, end):
            self.snd_nxt = end
        if flags & FIN:
            self.fin_sent = True

    # ---- handshakes ----
    def open_client(self, r: _Run, port: int | None, bind: str, mss: int | None,
                    wscale: int | None, sack: bool, ts: bool) -> None:
        if self.local is None:
            a = r.addrs
            if port is None:
                recent = r.channel.recent_ports
                for _ in range(len(CLIENT_PORTS)):  # seeded, but not a port used just now
                    port = CLIENT_PORTS[r.rng.randrange(len(CLIENT_PORTS))]
                    if port not in recent:
                        break
                recent.append(port)
            self.local, self.remote = (a.client_ip, port), (a.vip, a.vport)
            self.iss = r.rng.getrandbits(32)
            self.ts_base = self.ts_last = r.rng.getrandbits(31)
            r.bind(bind, self.iss, self.side)
            self.snd_una, self.snd_nxt = self.iss, seq_add(self.iss, 1)
        self.ts_offer, self.ws_offer, self.sack_offer = ts, wscale, sack
        self.peer_mss = mss or 536

    def expect_synack(self, r: _Run, bind: str, timeout: float) -> None:
        def take(p: codec.Packet) -> bool:
            if p.flags & RST:
                raise StepFailed(f"RST instead of a SYN-ACK: {r.last_text}")
            if (p.flags & (SYN | ACK)) != SYN | ACK:
                return False
            if p.ack != seq_add(self.iss, 1):
                raise StepFailed(f"SYN-ACK acknowledges {p.ack}, expected C+1 "
                                 f"({seq_add(self.iss, 1)})")
            r.bind(bind, p.seq, self.side)
            self.irs, self.rcv_nxt = p.seq, seq_add(p.seq, 1)
            self.ts_ok = self.ts_offer and p.tsval is not None
            if self.ts_ok:
                self.ts_recent = p.tsval or 0
            ws = self.ws_offer is not None and p.wscale is not None
            self.my_wscale = (self.ws_offer or 0) if ws else 0
            self.peer_wscale = (p.wscale or 0) if ws else 0
            self.sack_ok = self.sack_offer and p.sack_permitted
            self.peer_mss = p.mss or 536
            self.snd_una = p.ack
            self.peer_right = seq_add(p.ack, p.window)  # never scaled in a SYN (RFC 7323)
            return True
        r.expect(self, take, "a SYN-ACK", timeout, handshake=True)

    def expect_syn(self, r: _Run, bind: str, timeout: float) -> None:
        def take(p: codec.Packet) -> bool:
            if (p.flags & (SYN | ACK | RST)) != SYN:
                return False
            self.local = (p.dst_str, p.dport)
            self.remote = (p.src_str, p.sport)
            r.bind(bind, p.seq, self.side)
            self.irs, self.rcv_nxt = p.seq, seq_add(p.seq, 1)
            self.syn_seen = {"mss": p.mss, "wscale": p.wscale, "sack": p.sack_permitted,
                             "ts": p.tsval}
            self.ts_recent = p.tsval or 0
            self.peer_mss = p.mss or 536
            return True
        r.expect(self, take, "a SYN from the gateway", timeout, handshake=True, any_tuple=True)

    def synack(self, r: _Run, mss: int | None, wscale: int | None, sack: bool, ts: bool,
               bind: str) -> None:
        if self.irs is None:
            raise ScriptError("server.synack() before server.expect_syn()")
        seen = self.syn_seen
        self.iss = r.rng.getrandbits(32)
        self.ts_base = self.ts_last = r.rng.getrandbits(31)
        r.bind(bind, self.iss, self.side)
        self.snd_una, self.snd_nxt = self.iss, self.iss
        ws = wscale is not None and seen["wscale"] is not None
        self.my_wscale = (wscale or 0) if ws else 0
        self.peer_wscale = int(seen["wscale"] or 0) if ws else 0  # type: ignore[call-overload]
        self.sack_ok = sack and bool(seen["sack"])
        self.ts_ok = ts and seen["ts"] is not None
        self.send_segment(r, SYN | ACK, seq=self.iss, mss=mss,
                          wscale=wscale if ws else None, sack_permitted=self.sack_ok,
                          syn_ts=self.ts_ok)
        self.snd_nxt = seq_add(self.iss, 1)

    # ---- input ----
    def absorb(self, r: _Run, p: codec.Packet) -> int:
        """Take one segment of our connection in; returns its sequence-space length."""
        if p.flags & RST:
            if self.irs is not None and not self._acceptable_rst(p.seq):
                r.note(f"{self.side} ignored an RST outside its window (seq {p.seq}, "
                       f"RCV.NXT {self.rcv_nxt})")
                return 0
            self.reset = True
            if p.flags & ACK and seq_lt(self.snd_una, p.ack) and seq_le(p.ack, self.snd_nxt):
                # The ACK field of an RST is its sender's RCV.NXT: what it had received
                # before it reset (HAProxy resets a server connection once the response is
                # in, acknowledging the last segment and the FIN only in that RST).
                self.snd_una = p.ack
            return 0
        if p.flags & SYN:
            if self.irs is not None and p.seq != self.irs:
                raise StepFailed(f"a second SYN with another ISN ({p.seq}, bound "
                                 f"{self.irs}): {r.last_text}")
            return 0  # a retransmitted SYN(-ACK): nothing new
        if p.flags & ACK and seq_lt(self.snd_una, p.ack) and seq_le(p.ack, self.snd_nxt):
            self.snd_una = p.ack
        if p.flags & ACK and seq_le(self.snd_una, p.ack) and seq_le(p.ack, self.snd_nxt):
            edge = seq_add(p.ack, p.window << self.peer_wscale)
            if self.peer_right is None or seq_lt(self.peer_right, edge):
                self.peer_right = edge
        if self.ts_ok and p.tsval is not None and seq_le(p.seq, self.rcv_nxt):
            self.ts_recent = p.tsval
        data = bytes(p.payload)
        seq = p.seq
        if data:
            if seq_lt(seq, self.rcv_nxt):  # trim what we have
                skip = seq_diff(self.rcv_nxt, seq)
                data, seq = data[skip:], self.rcv_nxt
            room = self.window_field() << self.my_wscale  # what we advertise
            limit = seq_add(self.rcv_nxt, room)
            if data and seq_lt(limit, seq_add(seq, len(data))):
                data = data[:max(0, seq_diff(limit, seq))]
            if data:
                if seq == self.rcv_nxt:
                    self.app += data
                    self.rcv_nxt = seq_add(self.rcv_nxt, len(data))
                    self._pull_ooo()
                else:
                    self.ooo[seq] = max(data, self.ooo.get(seq, b""), key=len)
        if p.flags & FIN:
            self.peer_fin = seq_add(p.seq, len(p.payload))
        if self.peer_fin is not None and self.peer_fin == self.rcv_nxt and not self.fin_received:
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
            self.fin_received = True
        return len(p.payload) + (1 if p.flags & FIN else 0)

    def _acceptable_rst(self, seq: int) -> bool:
        """RFC 9293 §3.10.7.4: an RST counts only with its sequence number in the window."""
        wnd = max(1, self.window_field() << self.my_wscale)
        return 0 <= seq_diff(seq, self.rcv_nxt) < wnd

    def _pull_ooo(self) -> None:
        for _ in range(len(self.ooo)):
            hit = [s for s in self.ooo if seq_le(s, self.rcv_nxt)]
            if not hit:
                return
            for s in hit:
                d = self.ooo.pop(s)
                skip = seq_diff(self.rcv_nxt, s)
                if skip < len(d):
                    self.app += d[skip:]
                    self.rcv_nxt = seq_add(self.rcv_nxt, len(d) - skip)

    def receive(self, r: _Run, until_fin: bool, nbytes: int | None, responses: int | None,
                holes: tuple[int, ...], timeout: float, rst_ok: bool) -> None:
        seen_data = [0]
        dropped: set[int] = set()

        def done() -> bool:
            if until_fin and not self.fin_received:
                return False
            if nbytes is not None and len(self.app) < nbytes:
                return False
            if responses is not None:
                got, _, _ = _split_responses(bytes(self.app))
                if len(got) < responses:
                    return False
            return True

        def take(p: codec.Packet) -> bool:
            if p.payload and not p.flags & (SYN | RST):
                i = seen_data[0]
                seen_data[0] += 1
                if i in holes and p.seq not in dropped:
                    dropped.add(p.seq)
                    r.note(f"treated data segment {i} (seq {p.seq}) as lost")
                    return False
            n = self.absorb(r, p)
            if self.reset:
                return False
            if n:
                self.send_segment(r, ACK)
            return done()

        what = ("the peer's FIN" if until_fin else f"{nbytes} bytes" if nbytes is not None
                else f"{responses} complete HTTP response(s)")
        if done():
            return
        r.expect(self, take, what, timeout, rst_ok=rst_ok)

    def wait_for(self, r: _Run, cond: Callable[[], bool], what: str, timeout: float,
                 rst_expected: bool = False) -> None:
        if cond():
            return

        def take(p: codec.Packet) -> bool:
            n = self.absorb(r, p)
            if n and not self.reset:
                self.send_segment(r, ACK)
            return cond()
        r.expect(self, take, what, timeout, rst_expected=rst_expected)

    def quiet(self, r: _Run, seconds: float) -> None:
        end = r.channel.now() + seconds
        for _ in range(MAX_PACKETS_PER_STEP):
            left = end - r.channel.now()
            f = r.channel.recv(self.side, left) if left > 0 else None
            if f is None:
                return
            p = r._parse(f)
            if p is None or not p.first_fragment or not r._ours(self, p):
                continue
            r.last_text = describe(f, r.leg_bindings(self.side))
            if self.absorb(r, p) and not self.reset:
                self.send_segment(r, ACK)
            if self.reset:
                raise StepFailed(f"an acceptable RST arrived: {r.last_text}")

    def expect_data(self, r: _Run, n: int, want: bytes | None, timeout: float,
                    rst_ok: bool) -> None:
        start = r.consumed.get(self.side, 0)
        target = start + n

        def take(p: codec.Packet) -> bool:
            self.absorb(r, p)
            return len(self.app) >= target
        if len(self.app) < target:
            r.expect(self, take, f"{n} bytes of data", timeout, rst_ok=rst_ok)
        got = bytes(self.app[start:target])
        r.consumed[self.side] = target
        self.send_segment(r, ACK)
        if want is not None and got != want:
            bad = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                       min(len(got), len(want)))
            raise StepFailed(f"data differs from the expected {n} bytes at byte {bad}: "
                             f"{got[max(0, bad - 8):bad + 16]!r}")

    def expect_request(self, r: _Run, want: bytes, timeout: float, rst_ok: bool) -> None:
        if not r.http_equivalent:
            self.expect_data(r, len(want), want, timeout, rst_ok)
            return
        from conformance.http_exchanges import equivalent, parse_requests

        sent = parse_requests(want).messages
        if not sent or not sent[0].complete:
            raise ScriptError(f"expect_request: {want[:40]!r} is not a complete HTTP request")
        start = r.consumed.get(self.side, 0)

        def first() -> object:
            got = parse_requests(bytes(self.app[start:]))
            if got.error:
                raise StepFailed(f"not an HTTP request: {got.error}")
            return got.messages[0] if got.messages and got.messages[0].complete else None

        def take(p: codec.Packet) -> bool:
            self.absorb(r, p)
            return first() is not None
        if first() is None:
            r.expect(self, take, "a complete HTTP request", timeout, rst_ok=rst_ok)
        msg = first()
        assert msg is not None
        r.consumed[self.side] = start + msg.end  # type: ignore[attr-defined]
        self.send_segment(r, ACK)
        v = equivalent(sent[0], msg)  # type: ignore[arg-type]
        if not v.ok:
            raise StepFailed(f"the request is not HTTP-equivalent to the one sent: {v.problem}")

    def respond(self, r: _Run, body: bytes, close: bool) -> None:
        ip_header = 20 if r.script.family == 4 else 40
        mss = min(self.peer_mss, LINK_MTU - ip_header - 20)  # an MSS may exceed the link
        room = max(1, mss - (12 if self.ts_ok else 0))
        if not body and close:
            self.send_segment(r, FIN | ACK)
            self.snd_nxt = seq_add(self.snd_nxt, 1)
            self.fin_sent = True
            return
        for off in range(0, len(body), room):
            piece = body[off:off + room]
            last = off + room >= len(body)
            flags = ACK | (PSH if last else 0) | (FIN if last and close else 0)
            self.send_segment(r, flags, payload=piece)
            self.snd_nxt = seq_add(self.snd_nxt, len(piece) + (1 if flags & FIN else 0))
        if close:
            self.fin_sent = True


class _Run:
    """The state of one run: channel, seeded random source, bindings, both connections."""

    def __init__(self, script: Script, channel: Channel, http_equivalent: bool = False,
                 proxy: bool = False) -> None:
        self.script, self.channel = script, channel
        self.http_equivalent = http_equivalent
        """Accept an HTTP-equivalent request where the script expects one (a full proxy)."""
        self.proxy = proxy
        """The gateway terminates TCP (does not splice): a FIN may end what a splice ends
        with a relayed RST."""
        self.addrs = channel.addresses(script.family)
        self.rng = random.Random(f"{script.name}/{script.seed}")
        self.bindings: dict[str, int] = {}
        self.binding_legs: dict[str, Side] = {}
        self.conns: dict[Side, _Conn] = {s: _Conn(s) for s in SIDES}
        self.consumed: dict[str, int] = {}
        self.notes: list[str] = []
        self.last_text = ""
        self.t0 = channel.now()

    def conn(self, side: Side) -> _Conn:
        return self.conns[side]

    def bind(self, name: str, value: int, leg: Side) -> None:
        old = self.bindings.get(name)
        if old is not None and old != value:
            raise StepFailed(f"{name} is bound to {old}, but this packet says {value}")
        if self.binding_legs.setdefault(name, leg) != leg:
            raise ScriptError(f"{name} is already a {self.binding_legs[name]}-leg name")
        self.bindings[name] = value

    def leg_bindings(self, leg: Side) -> dict[str, int]:
        return {k: v for k, v in self.bindings.items() if self.binding_legs.get(k) == leg}

    def note(self, text: str) -> None:
        self.notes.append(f"step {self.channel.step}: {text}")

    def expect(self, c: _Conn, take: Callable[[codec.Packet], bool], what: str,
               timeout: float, *, handshake: bool = False, any_tuple: bool = False,
               rst_ok: bool = False, rst_expected: bool = False) -> None:
        """Read frames for ``c`` until ``take`` says done; fail on timeout or RST."""
        deadline = self.channel.now() + timeout
        for _ in range(MAX_PACKETS_PER_STEP):
            left = deadline - self.channel.now()
            f = self.channel.recv(c.side, max(0.0, left)) if left > 0 else None
            if f is None:
                got = f" (got {len(c.app)} bytes so far)" if c.app else ""
                raise StepFailed(f"timed out after {timeout:g} s waiting for {what}{got}")
            p = self._parse(f)
            if p is None or not p.first_fragment:
                continue
            if not any_tuple and not self._ours(c, p):
                continue
            if any_tuple and c.local is not None and not self._ours(c, p):
                continue
            self.last_text = describe(f, self.leg_bindings(c.side))
            done = take(p)
            if c.reset and not handshake:
                if rst_expected:
                    return
                data_end = seq_sub(c.snd_nxt, 1)  # our FIN's own sequence number
                if self.proxy and c.fin_sent and (
                        seq_le(data_end, c.snd_una)
                        or (p.flags & ACK and seq_le(data_end, p.ack))):
                    # Our side had finished and all its data was acknowledged: a proxy may
                    # end its own connection with an RST then (RFC 9293 ABORT), even before
                    # our FIN reached it, and lose nothing; the checker's cross.fin_rst
                    # still judges what was relayed.
                    self.note(f"{c.side}: the gateway closed with an RST after this side "
                              f"had finished, instead of a FIN (a proxy may)")
                    return
                if rst_ok:
                    first = self.last_text
                    self._other_side_reset(c, timeout)
                    raise _EndedByReset(f"{c.side} got an RST: {first}")
                raise StepFailed(f"RST while waiting for {what}: {self.last_text}")
            if done:
                return
        raise StepFailed(f"more than {MAX_PACKETS_PER_STEP} packets without {what}")

    def _other_side_reset(self, c: _Conn, timeout: float) -> None:
        """An allowed RST must reach both scripted peers: a clean refusal, no half-open."""
        other = self.conns["server" if c.side == "client" else "client"]
        if other.local is None or other.reset:
            return
        try:
            other.wait_for(self, lambda: other.reset, "an RST", timeout, rst_expected=True)
        except StepFailed as e:
            raise StepFailed(f"{c.side} got an RST but the {other.side} did not: {e}") from None

    def _parse(self, f: Frame) -> codec.Packet | None:
        try:
            return codec.parse(bytearray(f.packet), verify_checksum=not f.partial_checksum)
        except codec.DecodeError as e:
            self.note(f"ignored an undecodable frame: {e}")
            return None

    @staticmethod
    def _ours(c: _Conn, p: codec.Packet) -> bool:
        if c.local is None or c.remote is None:
            return False
        return (p.dport == c.local[1] and p.sport == c.remote[1]
                and p.dst == codec.addr_bytes(c.local[0])
                and p.src == codec.addr_bytes(c.remote[0]))


def play(script: Script, channel: Channel, *, http_equivalent: bool = False,
         proxy: bool = False) -> ScriptResult:
    """Run ``script`` on ``channel``: every step in order until one fails; then record for
    ``script.settle`` seconds more. Kernel suppression is undone whatever happens.

    ``http_equivalent``: the gateway is a full (L7) proxy that rewrites requests, so
    ``expect_request`` accepts an HTTP-equivalent request, not only the exact bytes;
    ``proxy``: the gateway does not splice, so ``expect_rst`` also accepts its FIN."""
    client, server = script.plays
    if not client:
        raise ScriptError(f"script {script.name}: the harness must play the client (a "
                          "scripted server alone has nobody to connect through the gateway)")
    first = len(channel.frames)
    channel.step = 0
    run = _Run(script, channel, http_equivalent, proxy)
    outcome, failed, step_text, reason = "completed", None, "", ""
    channel.begin(client, server)
    try:
        for i, step in enumerate(script.steps, 1):
            channel.step = i
            try:
                step.run(run)
            except StepFailed as e:
                outcome, failed, step_text, reason = "failed", i, str(step), str(e)
                break
            except _EndedByReset as e:
                outcome, reason = "reset", str(e)
                break
            except OSError as e:  # the channel could not send: not the gateway's fault
                outcome, failed, step_text = "error", i, str(step)
                reason = f"channel error: {e}"
                break
        channel.step = 0
        if script.settle > 0:
            channel.wait(script.settle)
    finally:
        channel.end()
    if run.notes:
        reason = "; ".join(filter(None, [reason, *run.notes]))
    return ScriptResult(
        name=script.name, ok=failed is None, outcome=outcome, failed_step=failed,
        step=step_text, reason=reason, frames=list(channel.frames[first:]),
        steps=[str(s) for s in script.steps], client_data=bytes(run.conns["client"].app),
        server_data=bytes(run.conns["server"].app), bindings=dict(run.bindings),
        binding_legs=dict(run.binding_legs),
        expects=script.expects)

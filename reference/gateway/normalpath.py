"""The normal path: a full proxy with packet buffers (claim 1's normal path module).

Theory of operation. The normal path owns a client session only after a handoff. The fast
path gives it the triggering packet together with the session; :meth:`NormalPath.take_over`
then carries out claim 1 through ``spec.handoff.handoff`` (retrieve the first records, create
and associate the second proxy and client session records, copy both client ISNs, create the
TCB and buffers, process the packet), and wraps the resulting TCB in a full
:class:`~reference.gateway.tcp.TcpConnection`. From then on it is an ordinary proxy: it reads
the request head from the client connection, selects a server (the same rules as the fast
path), opens its own server connection and copies bytes both ways through bounded buffers,
propagating FIN and RST.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reference.gateway import codec
from reference.gateway.actions import Action, Drop
from reference.gateway.fastpath import family_mss
from reference.gateway.tcp import TcpConnection
from spec import eligibility, handoff, translate
from spec.eligibility import HandoffReason
from spec.handoff import HandoffResult
from spec.segment import FIN, RST, Segment

if TYPE_CHECKING:
    from reference.gateway.fastpath import FastSession
    from reference.gateway.gateway import Gateway

CHUNK = 16384
"""How much the proxy moves from one connection to the other per step."""


@dataclass(slots=True, eq=False)
class NormalSession:
    """A proxied session: the claim-1 second records, the client and server connections."""

    fast: FastSession
    """The fast path's session, whose first proxy session record the handoff retrieved."""
    handoff: HandoffResult
    client: TcpConnection
    reason: HandoffReason
    server: TcpConnection | None = None
    server_addr: tuple[bytes, int] | None = None
    gw_addr: tuple[bytes, int] | None = None
    head: bytearray = field(default_factory=bytearray)
    """Request bytes read from the client before a server was chosen."""
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_eof_sent: bool = False
    server_eof_sent: bool = False
    deadline: float | None = None
    queued: float | None = None
    """Deadline of this session's one entry in the gateway's timer heap (None: none)."""
    done: bool = False

    @property
    def buffered(self) -> int:
        n = len(self.head) + len(self.to_server) + len(self.to_client)
        n += self.client.buffered_bytes
        if self.server is not None:
            n += self.server.buffered_bytes
        return n


class NormalPath:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.cfg = gw.config

    # ---- the handoff ------------------------------------------------------------------------
    def take_over(self, fs: FastSession, pkt: codec.Packet, buf: bytearray | None,
                  reason: HandoffReason, now: float) -> list[Action]:
        """Claim 1: the fast path has sent ``pkt`` here; take the session over."""
        trigger = pkt.to_segment()
        res = handoff.handoff(fs.proxy, trigger, rcv_wnd=self.cfg.buffer_bytes,
                              buffer_capacity=self.cfg.buffer_bytes)
        assert res.client.tcb is not None and res.client.buffers is not None
        conn = TcpConnection.from_handoff(
            res.client.tcb, res.client.buffers, now=now, rto_min=self.cfg.rto_min,
            local_mss=fs.proxy.client.negotiated.local_mss, fin_received=bool(pkt.flags & FIN))
        ns = NormalSession(fast=fs, handoff=res, client=conn, reason=reason)
        self.gw.adopt_normal(ns)
        self.gw.stats.handoffs[reason.name] += 1
        self.gw.stats.sessions_handed_off += 1
        out: list[Action] = [self._to_client(ns, conn.stamp(res.reply, now))]
        out += self.pump(ns, now)
        return out

    # ---- segments ---------------------------------------------------------------------------
    def from_client(self, ns: NormalSession, pkt: codec.Packet, now: float) -> list[Action]:
        self.gw.stats.proxied_segments += 1
        segs = ns.client.receive(pkt.to_segment(), now=now)
        out = [self._to_client(ns, s) for s in segs]
        return out + self.pump(ns, now)

    def from_server(self, ns: NormalSession, pkt: codec.Packet, now: float) -> list[Action]:
        if ns.server is None:
            return [Drop("server", "normal_path:no_server_connection")]
        self.gw.stats.proxied_segments += 1
        segs = ns.server.receive(pkt.to_segment(), now=now)
        out = [self._to_server(ns, s) for s in segs]
        return out + self.pump(ns, now)

    def on_timer(self, ns: NormalSession, now: float) -> list[Action]:
        out = [self._to_client(ns, s) for s in ns.client.handle_timer(now=now)]
        if ns.server is not None:
            out += [self._to_server(ns, s) for s in ns.server.handle_timer(now=now)]
        return out + self.pump(ns, now)

    # ---- the proxy ----------------------------------------------------------------------------
    def pump(self, ns: NormalSession, now: float) -> list[Action]:
        """Move bytes between the two connections, open the server side, propagate FIN/RST."""
        out: list[Action] = []
        c = ns.client
        if ns.server is None:
            ns.head += c.read()
            head = eligibility.parse_request_head(bytes(ns.head))
            if head is None:
                if not ns.head and c.eof_received:
                    # Closed before sending anything: close back, no HTTP answer owed.
                    if not ns.client_eof_sent:
                        ns.client_eof_sent = True
                        out += [self._to_client(ns, x) for x in c.close(now=now)]
                elif eligibility.request_head_complete(bytes(ns.head)) or c.eof_received \
                        or len(ns.head) > self.cfg.buffer_bytes:
                    out += self._refuse(ns, now)
                if c.closed:
                    ns.done = True  # no server side was ever opened
                self._arm(ns, now)
                return out
            out += self._open_server(ns, head, now)
            ns.to_server += ns.head
            ns.head.clear()
        s = ns.server
        assert s is not None
        if s.state_is_established:
            if ns.to_server:
                n = s.send_capacity()
                if n:
                    chunk = bytes(ns.to_server[:n])
                    del ns.to_server[:n]
                    self.gw.stats.bytes_client_to_server += len(chunk)
                    out += [self._to_server(ns, x) for x in s.send(chunk, now=now)]
            if len(ns.to_server) < CHUNK:
                data = c.read(CHUNK)
                if data:
                    ns.to_server += data
                    out += self.pump_again(ns, now)
                    out += [self._to_client(ns, x) for x in c.flush(now=now)]
            if c.eof_received and not ns.to_server and not c.readable and \
                    not ns.server_eof_sent:
                ns.server_eof_sent = True
                out += [self._to_server(ns, x) for x in s.close(now=now)]
        if len(ns.to_client) < CHUNK:
            data = s.read(CHUNK)
            if data:
                ns.to_client += data
                out += [self._to_server(ns, x) for x in s.flush(now=now)]
        if ns.to_client:
            n = c.send_capacity()
            if n:
                chunk = bytes(ns.to_client[:n])
                del ns.to_client[:n]
                self.gw.stats.bytes_server_to_client += len(chunk)
                out += [self._to_client(ns, x) for x in c.send(chunk, now=now)]
        if s.eof_received and not ns.to_client and not s.readable and not ns.client_eof_sent:
            ns.client_eof_sent = True
            out += [self._to_client(ns, x) for x in c.close(now=now)]
        if s.reset and not c.closed:
            out += [self._to_client(ns, x) for x in c.abort(now=now)]
        if c.reset and not s.closed:
            out += [self._to_server(ns, x) for x in s.abort(now=now)]
        if c.closed and s.closed:
            ns.done = True
        self._arm(ns, now)
        return out

    def pump_again(self, ns: NormalSession, now: float) -> list[Action]:
        """Send what was just read, if the server connection has room (bounded recursion)."""
        s = ns.server
        assert s is not None
        n = s.send_capacity()
        if not n or not ns.to_server:
            return []
        chunk = bytes(ns.to_server[:n])
        del ns.to_server[:n]
        self.gw.stats.bytes_client_to_server += len(chunk)
        return [self._to_server(ns, x) for x in s.send(chunk, now=now)]

    def _open_server(self, ns: NormalSession, head: eligibility.RequestHead, now: float
                     ) -> list[Action]:
        fs = ns.fast
        pool, server = self.gw.selector.pick(fs.service, head, (codec.addr_str(fs.client[0]),
                                                                 fs.client[1]))
        fs.server_name = sys.intern(f"{pool}/{server.address}:{server.port}")
        ns.handoff.proxy.server_name = fs.server_name
        ns.server_addr = (codec.addr_bytes(server.address), server.port)
        gw_addr = self.gw.server_side_address(fs.version)
        ns.gw_addr = (gw_addr, self.gw.allocate_port(ns.server_addr, gw_addr))
        n = fs.proxy.client.negotiated
        conn, segs = TcpConnection.connect(
            iss=self.gw.isn(gw_addr, ns.gw_addr[1], ns.server_addr[0], ns.server_addr[1], now),
            mss=translate.mss_clamp(n.peer_mss, family_mss(self.cfg.mss, fs.version)),
            wscale=self.cfg.window_scale, sack_permitted=False,
            tsval=self.gw.ts_clock(now), now=now, buffer_bytes=self.cfg.buffer_bytes,
            rto_min=self.cfg.rto_min)
        ns.server = conn
        self.gw.index_normal_server_side(ns)
        return [self._to_server(ns, x) for x in segs]

    def _refuse(self, ns: NormalSession, now: float) -> list[Action]:
        """Not a request the service can route: answer 400 and close (the full stack can)."""
        if ns.client_eof_sent:
            return []
        ns.client_eof_sent = True
        body = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        out = [self._to_client(ns, x) for x in ns.client.send(body, now=now)]
        out += [self._to_client(ns, x) for x in ns.client.close(now=now)]
        self.gw.stats.drops["normal_path:unroutable_request"] += 1
        return out

    def _arm(self, ns: NormalSession, now: float) -> None:
        ds = [d for d in (ns.client.next_deadline(),
                          ns.server.next_deadline() if ns.server else None) if d is not None]
        ns.deadline = min(ds) if ds else None
        if ns.done:
            self.gw.retire_normal(ns)
        else:
            self.gw.schedule(ns)

    # ---- wire -------------------------------------------------------------------------------
    def _to_client(self, ns: NormalSession, seg: Segment) -> Action:
        fs = ns.fast
        if seg.flags & RST:
            self.gw.stats.resets_sent += 1
        return self.gw.emit("client", codec.build(
            version=fs.version, src=fs.vip[0], dst=fs.client[0], sport=fs.vip[1],
            dport=fs.client[1], seq=seg.seq, ack=seg.ack, flags=seg.flags, window=seg.window,
            payload=seg.payload or b"", mss=seg.mss, wscale=seg.wscale,
            sack_permitted=seg.sack_permitted, tsval=seg.tsval, tsecr=seg.tsecr, sack=seg.sack))

    def _to_server(self, ns: NormalSession, seg: Segment) -> Action:
        assert ns.server_addr is not None and ns.gw_addr is not None
        return self.gw.emit("server", codec.build(
            version=ns.fast.version, src=ns.gw_addr[0], dst=ns.server_addr[0],
            sport=ns.gw_addr[1], dport=ns.server_addr[1], seq=seg.seq, ack=seg.ack,
            flags=seg.flags, window=seg.window, payload=seg.payload or b"", mss=seg.mss,
            wscale=seg.wscale, sack_permitted=seg.sack_permitted, tsval=seg.tsval,
            tsecr=seg.tsecr, sack=seg.sack))

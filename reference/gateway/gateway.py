"""The gateway core: ``handle(leg, packet, now=...) -> actions``, deterministic, no I/O.

Data flows one way: bytes -> ``codec.parse`` -> dispatch on the session tables -> the fast
path (``fastpath.FastPath``) or, for sessions it handed off, the normal path
(``normalpath.NormalPath``) -> :class:`~reference.gateway.actions.Emit` actions. The single
timer the driver keeps is :meth:`Gateway.next_deadline`; when it fires the driver calls
:meth:`Gateway.handle_timer`.

Bad input never raises: a malformed packet, a packet for an unknown virtual service or an
unknown session is counted in ``stats.drops`` and answered with a :class:`Drop` action.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reference.gateway import codec
from reference.gateway.actions import Action, Drop, Emit, Leg
from reference.gateway.config import GatewayConfig, Selector, service_for
from reference.gateway.fastpath import FastPath, FastSession
from reference.gateway.fragments import Reassembler
from reference.gateway.isn import IsnSource, rfc6528
from reference.gateway.normalpath import NormalPath, NormalSession
from reference.gateway.stats import Stats
from spec.segment import ACK, RST, SYN
from spec.states import FastPathState, TcpState

SessionKey = tuple[bytes, int, bytes, int]
"""(remote address, remote port, local address, local port) as seen on one leg."""

EPHEMERAL = range(32768, 61000)


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """Core settings the config file does not (yet) carry, with their defaults."""

    open_retries: int = 3
    linger: float = 2.0
    rto_min: float = 1.0
    gso_output: bool = False
    """The driver can send a packet larger than the MTU and have it cut (virtio-net GSO): the
    fast path then relays a super-frame whole, with ``Emit.segment_size``, instead of
    splitting and rebuilding it segment by segment."""


class _Cfg:
    """The config file's settings plus :class:`CoreSettings`, read as one object."""

    def __init__(self, config: GatewayConfig, core: CoreSettings) -> None:
        self._config, self._core = config, core

    def __getattr__(self, name: str) -> Any:
        """Called only on a first read: the value is then kept in the instance, so the hot
        path's reads (``idle_timeout``, ``gso_output`` per packet) are plain lookups. Both
        sources are frozen dataclasses, so a kept value cannot go stale."""
        value = getattr(self._core if hasattr(self._core, name) else self._config, name)
        self.__dict__[name] = value
        return value


class Gateway:
    """One service gateway: its virtual services, session tables, fast and normal paths."""

    def __init__(self, config: GatewayConfig, *, isn_source: IsnSource | None = None,
                 ts_clock: Callable[[float], int] | None = None,
                 core: CoreSettings | None = None) -> None:
        self.config: Any = _Cfg(config, core or CoreSettings())
        secret = config.isn_secret.encode() if getattr(config, "isn_secret", None) else None
        self.isn: IsnSource = isn_source or rfc6528(secret)
        self.ts_clock = ts_clock or (lambda now: int(now * 1000) & 0xFFFFFFFF)
        self.selector = Selector(config)
        self.stats = Stats()
        self.fast = FastPath(self)
        self.normal = NormalPath(self)
        self.reassembler = Reassembler()
        self.client_sessions: dict[SessionKey, FastSession] = {}
        self.server_sessions: dict[SessionKey, FastSession] = {}
        self.normal_by_client: dict[SessionKey, NormalSession] = {}
        self.normal_by_server: dict[SessionKey, NormalSession] = {}
        self._ports: dict[tuple[bytes, int], set[int]] = {}
        self._port_cursor = itertools.cycle(EPHEMERAL)
        self._timers: list[tuple[float, int, Any]] = []
        self._tick = itertools.count()

    # ---- the driver's entry points ---------------------------------------------------------
    def handle(self, leg: Leg, packet: bytes | bytearray | memoryview, *, now: float,
               checksum_verified: bool = False) -> list[Action]:
        """Process one IP packet that arrived on ``leg``; return what to do."""
        self.stats.packets_in[leg] += 1
        buf = bytearray(packet)
        try:
            pkt = codec.parse(buf, verify_checksum=not checksum_verified)
        except codec.DecodeError as e:
            return [self._drop(leg, f"malformed:{e.reason.value}")]
        if pkt.is_fragment:
            return self._fragment(leg, pkt, buf, now)
        if leg == "client":
            return self._from_client(pkt, buf, now, fragment=False)
        return self._from_server(pkt, buf, now)

    def handle_timer(self, *, now: float) -> list[Action]:
        out: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            queued, _, s = heapq.heappop(self._timers)
            if s.queued != queued:
                continue  # an earlier entry replaced this one
            s.queued = None
            if s.deadline is None:
                continue
            if s.deadline > now:  # pushed back since it was queued: queue it anew
                self.schedule(s)
                continue
            if isinstance(s, FastSession):
                if s.state is FastPathState.HANDED_OFF:
                    continue
                out += self.fast.on_timer(s, now)
            elif not s.done:
                out += self.normal.on_timer(s, now)
        self.reassembler.expire(now)
        return out

    def next_deadline(self) -> float | None:
        """When to call :meth:`handle_timer` next (possibly early: a session's deadline may
        have moved later since it was queued; the call then just queues it anew)."""
        while self._timers and self._timers[0][2].queued != self._timers[0][0]:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    # ---- dispatch ---------------------------------------------------------------------------
    def _fragment(self, leg: Leg, pkt: codec.Packet, buf: bytearray, now: float
                  ) -> list[Action]:
        if pkt.version != 4:
            return [self._drop(leg, "ipv6_fragment")]
        whole = self.reassembler.add(buf, now)
        self.stats.buffered_bytes = self.reassembler.held_bytes
        if whole is None:
            return []
        wbuf = bytearray(whole)
        try:
            full = codec.parse(wbuf, verify_checksum=True)
        except codec.DecodeError as e:
            return [self._drop(leg, f"malformed_reassembled:{e.reason.value}")]
        if leg == "client":
            return self._from_client(full, wbuf, now, fragment=True)
        return self._from_server(full, wbuf, now)

    def _from_client(self, pkt: codec.Packet, buf: bytearray, now: float, *,
                     fragment: bool) -> list[Action]:
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        ns = self.normal_by_client.get(key)
        if ns is not None:
            if not (pkt.flags & SYN and self._new_incarnation(ns, pkt)):
                return self.normal.from_client(ns, pkt, now)
            # The old session's client side is in TIME-WAIT and its server side is over:
            # this SYN starts a new session on the same 4-tuple (below).
            ns.done = True
            self.retire_normal(ns)
            self.stats.sessions_reopened += 1
        s = self.client_sessions.get(key)
        if s is not None and pkt.flags & SYN and self.fast.reopened_by(s, pkt):
            self.retire_fast(s)  # both FINs are through: a new session on the same 4-tuple
            self.stats.sessions_reopened += 1
            s = None
        if s is None:
            service = service_for(self.config._config, pkt.dst_str, pkt.dport)
            if service is None:
                return [self._drop("client", "unknown_vip")]
            if not (pkt.flags & SYN) or pkt.flags & (ACK | RST):
                return [self._drop("client", "no_session")]
            s = self.fast.new_session(pkt, service, now)
            self.client_sessions[key] = s
            self.stats.live_fast_records = len(self.client_sessions)
        return self.fast.from_client(s, pkt, buf, now, fragment=fragment)

    @staticmethod
    def _new_incarnation(ns: NormalSession, pkt: codec.Packet) -> bool:
        """A SYN the old session's client-side TCP takes as a new incarnation (see
        ``TcpConnection.reopened_by``), once nothing is left to do on the server side."""
        server_over = ns.server is None or ns.server.tcb.state in (TcpState.CLOSED,
                                                                   TcpState.TIME_WAIT)
        return server_over and ns.client.reopened_by(pkt.to_segment())

    def _from_server(self, pkt: codec.Packet, buf: bytearray, now: float) -> list[Action]:
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        ns = self.normal_by_server.get(key)
        if ns is not None:
            return self.normal.from_server(ns, pkt, now)
        s = self.server_sessions.get(key)
        if s is None:
            return [self._drop("server", "no_session")]
        return self.fast.from_server(s, pkt, buf, now)

    # ---- services for the two paths -------------------------------------------------------
    def emit(self, leg: Leg, packet: bytes, segment_size: int = 0) -> Emit:
        self.stats.packets_out[leg] += 1
        return Emit(leg, packet, segment_size)

    def _drop(self, leg: Leg, reason: str) -> Drop:
        self.stats.drops[reason] += 1
        return Drop(leg, reason)

    def schedule(self, s: FastSession | NormalSession) -> None:
        """Queue ``s.deadline``, keeping at most one live heap entry per session: a deadline
        later than the queued one is left for :meth:`handle_timer` to queue when the
        earlier entry comes due (a normal session moves its RTO on every ACK, and one
        entry per move would grow the heap by one per packet for an RTO's time)."""
        d = s.deadline
        if d is None or (s.queued is not None and s.queued <= d):
            return
        s.queued = d
        heapq.heappush(self._timers, (d, next(self._tick), s))

    def server_side_address(self, version: int) -> bytes:
        addr = self.config.server_address if version == 4 else \
            getattr(self.config, "server_address6", None)
        if not addr:
            raise ValueError(f"no server-side address configured for IPv{version}")
        return codec.addr_bytes(addr)

    def allocate_port(self, server: tuple[bytes, int]) -> int:
        used = self._ports.setdefault(server, set())
        for _ in range(len(EPHEMERAL)):
            port = next(self._port_cursor)
            if port not in used:
                used.add(port)
                return port
        raise RuntimeError(f"no free source port towards {codec.addr_str(server[0])}:"
                           f"{server[1]}: every one of {len(EPHEMERAL)} is in use")

    def _free_port(self, server: tuple[bytes, int] | None, gw: tuple[bytes, int] | None
                   ) -> None:
        if server is not None and gw is not None:
            self._ports.get(server, set()).discard(gw[1])

    def index_server_side(self, s: FastSession) -> None:
        assert s.server is not None and s.gw is not None
        self.server_sessions[(s.server[0], s.server[1], s.gw[0], s.gw[1])] = s

    def index_normal_server_side(self, ns: NormalSession) -> None:
        assert ns.server_addr is not None and ns.gw_addr is not None
        self.normal_by_server[(ns.server_addr[0], ns.server_addr[1], ns.gw_addr[0],
                               ns.gw_addr[1])] = ns

    def adopt_normal(self, ns: NormalSession) -> None:
        """The fast path's session now belongs to the normal path: steer its 4-tuple there."""
        fs = ns.fast
        key = (fs.client[0], fs.client[1], fs.vip[0], fs.vip[1])
        self.client_sessions.pop(key, None)
        self.normal_by_client[key] = ns
        self.stats.live_fast_records = len(self.client_sessions)
        self.stats.live_normal_records = len(self.normal_by_client)

    def retire_fast(self, s: FastSession) -> None:
        key = (s.client[0], s.client[1], s.vip[0], s.vip[1])
        if self.client_sessions.get(key) is s:
            del self.client_sessions[key]
        if s.server is not None and s.gw is not None:
            self.server_sessions.pop((s.server[0], s.server[1], s.gw[0], s.gw[1]), None)
            self._free_port(s.server, s.gw)
        if s.proxy.held is not None:
            self.stats.held_request_bytes -= len(s.proxy.held.payload)
            s.proxy.held = None
        if s.proxy.splice is not None and not s.counted:
            s.counted = True
            self.stats.sessions_fast += 1
        self.stats.live_fast_records = len(self.client_sessions)

    def retire_normal(self, ns: NormalSession) -> None:
        fs = ns.fast
        self.normal_by_client.pop((fs.client[0], fs.client[1], fs.vip[0], fs.vip[1]), None)
        if ns.server_addr is not None and ns.gw_addr is not None:
            self.normal_by_server.pop((ns.server_addr[0], ns.server_addr[1], ns.gw_addr[0],
                                       ns.gw_addr[1]), None)
            self._free_port(ns.server_addr, ns.gw_addr)
        self.stats.live_normal_records = len(self.normal_by_client)

    # ---- introspection ----------------------------------------------------------------------
    def stats_json(self) -> dict[str, Any]:
        """The stats with the live gauges (records, buffered bytes) refreshed now."""
        st = self.stats
        st.live_fast_records = len(self.client_sessions)
        st.live_normal_records = len(self.normal_by_client)
        st.buffered_bytes = self.buffered_bytes()
        return st.as_json()

    def buffered_bytes(self) -> int:
        """Bytes held right now: normal-path buffers, fast-path held requests, fragments."""
        n = sum(ns.buffered for ns in self.normal_by_client.values())
        n += sum(len(s.proxy.held.payload) for s in self.client_sessions.values()
                 if s.proxy.held is not None)
        return n + self.reassembler.held_bytes

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
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from reference.gateway import codec
from reference.gateway.actions import Action, Drop, Emit, Leg
from reference.gateway.config import GatewayConfig, Selector, service_for
from reference.gateway.fastpath import FastPath, FastSession
from reference.gateway.fragments import Reassembler
from reference.gateway.isn import IsnSource, rfc6528
from reference.gateway.normalpath import NormalPath, NormalSession
from reference.gateway.session_rows import RowTable, flow_key
from reference.gateway.stats import Stats
from spec.segment import ACK, RST, SYN
from spec.states import FastPathState, TcpState

SessionKey = tuple[bytes, int, bytes, int]
"""(remote address, remote port, local address, local port) as seen on one leg."""

EPHEMERAL = range(32768, 61000)


def client_key(s: FastSession) -> SessionKey:
    """A session's key in the client-leg tables: its 4-tuple as the client's packets carry it."""
    return (s.client[0], s.client[1], s.vip[0], s.vip[1])


def server_key(s: FastSession) -> SessionKey:
    """A session's key in the server-leg table: its 4-tuple as the server's packets carry it."""
    assert s.server is not None and s.gw is not None
    return (s.server[0], s.server[1], s.gw[0], s.gw[1])


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
    compact_after: float | None = 1.0
    """Seconds a spliced session must be idle before it is compacted into a row
    (``session_rows``): about 250 bytes instead of 2 KB of objects; its next packet or timer
    restores it. None: never compact."""


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
        self.rows4, self.rows6 = RowTable(4), RowTable(16)
        """Compacted (idle spliced) sessions, by address family."""
        self._compact_queue: deque[tuple[float, FastSession]] = deque()
        """Spliced sessions in object form, each once, by when to look at them again."""
        self._port_next = EPHEMERAL.start
        self._timers: list[tuple[float, int, Any]] = []
        self._stale_timers = 0
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
        out: list[Action] = self._object_timers(now)
        self._compact_idle(now)
        for table in (self.rows4, self.rows6):
            for row in table.due(now):
                out += self.fast.on_timer(self._restore(table, row, now, timer_taken=True),
                                          now)
        self.reassembler.expire(now)
        return out

    def _object_timers(self, now: float) -> list[Action]:
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
        return out

    def next_deadline(self) -> float | None:
        """When to call :meth:`handle_timer` next (possibly early: a session's deadline may
        have moved later since it was queued; the call then just queues it anew)."""
        while self._timers and self._timers[0][2].queued != self._timers[0][0]:
            heapq.heappop(self._timers)
        due = [self._timers[0][0]] if self._timers else []
        q = self._compact_queue
        while q and not self._is_live(q[0][1]):
            q.popleft()
        if q:
            due.append(q[0][0] + self.config.compact_after)
        for table in (self.rows4, self.rows6):
            d = table.next_deadline()
            if d is not None:
                due.append(d)
        return min(due) if due else None

    # ---- compaction of idle spliced sessions ----------------------------------------------
    def note_spliced(self, s: FastSession, now: float) -> None:
        """``s`` has just spliced: look at it again once it may have been idle long enough."""
        if self.config.compact_after is not None:
            self._compact_queue.append((now, s))

    def _is_live(self, s: FastSession) -> bool:
        return self.client_sessions.get(client_key(s)) is s

    def _compact_idle(self, now: float) -> None:
        after = self.config.compact_after
        q = self._compact_queue
        compacted = self.stats.sessions_compacted
        while q and q[0][0] + after <= now:
            _, s = q.popleft()
            if not self._is_live(s):
                continue  # retired since
            if s.last_active + after > now:
                q.append((s.last_active, s))  # active since: look again later
                continue
            assert s.server is not None and s.gw is not None
            if self._rows_for(s.client[0]).compact(s) is None:
                continue  # cannot be stored exactly: it stays an object
            del self.client_sessions[client_key(s)]
            del self.server_sessions[server_key(s)]
            if s.queued is not None:
                s.queued = None  # its heap entry is stale now (the row has its own timer)
                self._stale_timers += 1
            self.stats.sessions_compacted += 1
        if self.stats.sessions_compacted != compacted:
            for table in (self.client_sessions, self.server_sessions):
                _shrink(table)
        if self._stale_timers * 4 > len(self._timers):
            # Stale entries hold compacted sessions' objects alive: drop them once they are
            # a quarter of the heap (entries of a session's earlier states go too).
            self._timers = [e for e in self._timers if e[2].queued == e[0]]
            heapq.heapify(self._timers)
            self._stale_timers = 0

    def _rows_for(self, addr: bytes) -> RowTable:
        return self.rows4 if len(addr) == 4 else self.rows6

    def _restore(self, table: RowTable, row: int, now: float, *, timer_taken: bool = False
                 ) -> FastSession:
        """Bring a compacted session back to object form (its next packet or timer)."""
        s = table.restore(row, timer_taken=timer_taken)
        self.client_sessions[client_key(s)] = s
        self.server_sessions[server_key(s)] = s
        self.schedule(s)
        self.note_spliced(s, now)
        self.stats.sessions_restored += 1
        return s

    def _compacted(self, pkt: codec.Packet, leg: Leg, now: float) -> FastSession | None:
        table = self._rows_for(pkt.src)
        if not table.live:
            return None
        key = flow_key(pkt.src, pkt.dst, pkt.sport, pkt.dport)
        row = table.find_client(key) if leg == "client" else table.find_server(key)
        return None if row < 0 else self._restore(table, row, now)

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
        s = self.client_sessions.get(key) or self._compacted(pkt, "client", now)
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
            self.stats.live_fast_records = self.live_fast()
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
        s = self.server_sessions.get(key) or self._compacted(pkt, "server", now)
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

    def allocate_port(self, server: tuple[bytes, int], gw_addr: bytes) -> int:
        """A source port for a new server-side connection from ``gw_addr``: one no live
        session (object or compacted) uses towards that server; it is free again when that
        session is retired. Looked up in the session tables, so it costs nothing per session."""
        rows = self._rows_for(gw_addr)
        for _ in range(len(EPHEMERAL)):
            port = self._port_next
            self._port_next = port + 1 if port + 1 < EPHEMERAL.stop else EPHEMERAL.start
            key = (server[0], server[1], gw_addr, port)
            if key in self.server_sessions or key in self.normal_by_server or \
                    rows.find_server(flow_key(server[0], gw_addr, server[1], port)) >= 0:
                continue
            return port
        raise RuntimeError(f"no free source port towards {codec.addr_str(server[0])}:"
                           f"{server[1]}: every one of {len(EPHEMERAL)} is in use")

    def index_server_side(self, s: FastSession) -> None:
        self.server_sessions[server_key(s)] = s

    def index_normal_server_side(self, ns: NormalSession) -> None:
        assert ns.server_addr is not None and ns.gw_addr is not None
        self.normal_by_server[(ns.server_addr[0], ns.server_addr[1], ns.gw_addr[0],
                               ns.gw_addr[1])] = ns

    def adopt_normal(self, ns: NormalSession) -> None:
        """The fast path's session now belongs to the normal path: steer its 4-tuple there."""
        fs = ns.fast
        key = client_key(fs)
        self.client_sessions.pop(key, None)
        self.normal_by_client[key] = ns
        self.stats.live_fast_records = self.live_fast()
        self.stats.live_normal_records = len(self.normal_by_client)

    def retire_fast(self, s: FastSession) -> None:
        s.queued = None  # its timer entry, if any, is stale now
        key = client_key(s)
        if self.client_sessions.get(key) is s:
            del self.client_sessions[key]
        if s.server is not None and s.gw is not None and \
                self.server_sessions.get(server_key(s)) is s:
            del self.server_sessions[server_key(s)]
        if s.proxy.held is not None:
            self.stats.held_request_bytes -= len(s.proxy.held.payload)
            s.proxy.held = None
        if s.proxy.splice is not None and not s.counted:
            s.counted = True
            self.stats.sessions_fast += 1
        self.stats.live_fast_records = self.live_fast()

    def retire_normal(self, ns: NormalSession) -> None:
        ns.queued = None  # its timer entry, if any, is stale now
        fs = ns.fast
        self.normal_by_client.pop(client_key(fs), None)
        if ns.server_addr is not None and ns.gw_addr is not None:
            self.normal_by_server.pop((ns.server_addr[0], ns.server_addr[1], ns.gw_addr[0],
                                       ns.gw_addr[1]), None)
        self.stats.live_normal_records = len(self.normal_by_client)

    # ---- introspection ----------------------------------------------------------------------
    def stats_json(self) -> dict[str, Any]:
        """The stats with the live gauges (records, buffered bytes) refreshed now."""
        st = self.stats
        st.live_fast_records = self.live_fast()
        st.compacted_records = self.rows4.live + self.rows6.live
        st.live_normal_records = len(self.normal_by_client)
        st.buffered_bytes = self.buffered_bytes()
        return st.as_json()

    def live_fast(self) -> int:
        """Live fast-path sessions: in object form and compacted."""
        return len(self.client_sessions) + self.rows4.live + self.rows6.live

    def fast_sessions(self) -> Iterator[FastSession]:
        """Every live fast-path session; a compacted one as a copy of its row (for reading:
        changing it changes nothing)."""
        yield from self.client_sessions.values()
        for table in (self.rows4, self.rows6):
            for row in table.rows():
                yield table.peek(row)

    def buffered_bytes(self) -> int:
        """Bytes held right now: normal-path buffers, fast-path held requests, fragments."""
        n = sum(ns.buffered for ns in self.normal_by_client.values())
        n += sum(len(s.proxy.held.payload) for s in self.client_sessions.values()
                 if s.proxy.held is not None)
        return n + self.reassembler.held_bytes


def _shrink(table: dict[Any, Any]) -> None:
    """Give back the memory of a dict that has emptied (a dict never shrinks by itself: one
    that held every session of a burst would keep that size after they were compacted)."""
    if sys.getsizeof(table) > 256 * len(table) + 4096:
        kept = table.copy()
        table.clear()
        table.update(kept)

"""Idle spliced sessions, compacted into fixed-size rows: no Python object per session.

Why: once spliced, a fast-path session is a few dozen small numbers (the splice constants,
the FIN and window marks, the claim-1 records' ISNs and options). As Python objects they
cost about 2 KB a session (every 32-bit number is a 28-byte int, every record an object);
packed into one row of a shared bytearray they cost 173 bytes (IPv4; 221 with IPv6's longer
flow keys), about 255 with the index and the timer. The gateway compacts a
session once it has been idle for ``CoreSettings.compact_after`` and restores it, field for
field, on its next packet or timer, so the fast path's code only ever sees the object form
(``fastpath.FastSession``) and no rule is written twice.

A compacted session leaves no per-session object behind: it is found through an
open-addressing index per leg (4 bytes a slot, the key bytes live in the row) and its one
timer is an int in a heap of ints (the deadline's float64 bits above the row number, which
orders like the deadline itself for deadlines >= 0).
"""

from __future__ import annotations

import heapq
import struct
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING

from reference.gateway import codec
from spec.records import (
    ClientSessionRecord,
    FourTuple,
    Negotiated,
    Owner,
    ProxySessionRecord,
    ServerSessionRecord,
    SynOptions,
)
from spec.states import FastPathState
from spec.translate import Splice

if TYPE_CHECKING:
    from reference.gateway.config import VirtualService
    from reference.gateway.fastpath import FastSession

S = FastPathState
COMPACTABLE = frozenset({S.SPLICED, S.CLIENT_FIN, S.SERVER_FIN, S.CLOSING})
"""States a session can be compacted in: spliced, so it holds no payload and no handoff
can happen any more (the claim-1 handoff starts from the first request segment)."""

FREE = 0
"""State byte of a free row (FastPathState.NO_SESSION: never a live session's state)."""

_HEAD = struct.Struct("<BIB 3B 4B 4B 3H 4H 2H H H H 5I 5I 4I 7I 3d")
"""Everything but the two keys, in the order of :func:`_flatten`."""
_PORTS = struct.Struct("!HH")
_DOUBLE = struct.Struct("<d")
_BITS = struct.Struct("<q")

# The row's ``flags`` word: presence of optional values, and the booleans.
C_SYN, S_SYN, P_SYN = 0, 4, 8
"""Where the 4 bits of each SYN option set start (the client's SYN, the gateway's SYN to the
server, the server's SYN/ACK): MSS present, window scale present, SACK-permitted, TSval
present."""
(C_TS_SENT, C_TS_RECENT, CN_SACK, CN_TS, S_TS_SENT, SN_SACK, SN_TS, SP_SACK, SP_TS,
 C_FIN_ACKED, S_FIN_ACKED, C_FIN_END, S_FIN_END, C_RCV_NXT, C_SND_NXT, S_SND_NXT, COUNTED,
 DEADLINE) = (1 << i for i in range(12, 30))

EMPTY, TOMB = -1, -2


def flow_key(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    """Key bytes of a flow as it arrives on a leg (what the index stores in the row)."""
    return src + dst + _PORTS.pack(sport, dport)


class _Index:
    """key bytes -> row number: linear probing over an ``array('i')``; the keys are read
    back from the rows (at ``koff``), so a slot costs 4 bytes and no key object is kept."""

    def __init__(self, rows: RowTable, koff: int) -> None:
        self.rows, self.koff = rows, koff
        self.slots = array("i", [EMPTY]) * 16
        self.used = 0
        self.tombs = 0

    def find(self, key: bytes) -> int:
        slots, mask = self.slots, len(self.slots) - 1
        i = hash(key) & mask
        klen, size, koff, data = len(key), self.rows.size, self.koff, self.rows.data
        while True:
            r = slots[i]
            if r == EMPTY:
                return -1
            if r >= 0:
                off = r * size + koff
                if data[off:off + klen] == key:
                    return r
            i = (i + 1) & mask

    def add(self, key: bytes, row: int) -> None:
        if (self.used + self.tombs + 1) * 3 > len(self.slots) * 2:
            self._resize(self.used + 1)
        slots, mask = self.slots, len(self.slots) - 1
        i = hash(key) & mask
        while slots[i] >= 0:
            i = (i + 1) & mask
        if slots[i] == TOMB:
            self.tombs -= 1
        slots[i] = row
        self.used += 1

    def remove(self, key: bytes, row: int) -> None:
        slots, mask = self.slots, len(self.slots) - 1
        i = hash(key) & mask
        while slots[i] != row:
            if slots[i] == EMPTY:  # pragma: no cover - every caller removes a key it added
                raise KeyError(key)
            i = (i + 1) & mask
        slots[i] = TOMB
        self.used -= 1
        self.tombs += 1
        if self.used * 8 < len(self.slots) and len(self.slots) > 16:
            self._resize(self.used)

    def _resize(self, want: int) -> None:
        """Rebuild at a load between 1/3 and 2/3, tombstones dropped (a probe always ends
        at an empty slot: at least a third of the slots are empty at any time)."""
        cap = 16
        while cap * 2 < want * 3 + 3:
            cap *= 2
        old = [r for r in self.slots if r >= 0]
        self.slots = slots = array("i", [EMPTY]) * cap
        self.used, self.tombs, mask = len(old), 0, cap - 1
        for r in old:
            i = hash(self.rows.key(r, self.koff)) & mask
            while slots[i] != EMPTY:
                i = (i + 1) & mask
            slots[i] = r


class RowTable:
    """Compacted spliced sessions of one address family (4- or 16-byte addresses).

    Freed rows are reused, last freed first; the table keeps its high-water mark of rows
    (a slab, as kernels keep theirs), while the indexes shrink as sessions leave."""

    def __init__(self, addr_len: int) -> None:
        self.addr_len = addr_len
        klen = 2 * addr_len + 4
        self.key_len = klen
        self.ckey_off = _HEAD.size
        self.skey_off = _HEAD.size + klen
        self.size = _HEAD.size + 2 * klen
        self.data = bytearray()
        self.free_rows = array("i")
        self.live = 0
        self.by_client = _Index(self, self.ckey_off)
        self.by_server = _Index(self, self.skey_off)
        self.timers: list[int] = []
        self.stale_timers = 0
        self._services: list[VirtualService] = []
        self._service_ix: dict[int, int] = {}
        self._names: list[str] = []
        self._name_ix: dict[str, int] = {}

    # ---- rows -----------------------------------------------------------------------------
    def key(self, row: int, koff: int) -> bytes:
        off = row * self.size + koff
        return bytes(self.data[off:off + self.key_len])

    def _alloc(self) -> int:
        if not self.free_rows:
            n = len(self.data) // self.size
            more = max(16, n // 8)
            self.data.extend(bytes(more * self.size))
            self.free_rows.extend(range(n + more - 1, n - 1, -1))
        return self.free_rows.pop()

    def state(self, row: int) -> int:
        return self.data[row * self.size]

    def deadline(self, row: int) -> float | None:
        v = _HEAD.unpack_from(self.data, row * self.size)
        return v[-1] if v[1] & DEADLINE else None

    def find_client(self, key: bytes) -> int:
        return self.by_client.find(key) if self.live else -1

    def find_server(self, key: bytes) -> int:
        return self.by_server.find(key) if self.live else -1

    # ---- compaction and restoration --------------------------------------------------------
    def compact(self, s: FastSession) -> int | None:
        """Store ``s`` in a row (and its timer in the heap); None when it cannot be stored
        exactly (not spliced, a value out of a field's range, text not in canonical form)."""
        head = self._flatten(s)
        if head is None:
            return None
        assert s.server is not None and s.gw is not None
        ckey = flow_key(s.client[0], s.vip[0], s.client[1], s.vip[1])
        skey = flow_key(s.server[0], s.gw[0], s.server[1], s.gw[1])
        if len(ckey) != self.key_len or len(skey) != self.key_len:
            return None
        row = self._alloc()
        off = row * self.size
        try:
            _HEAD.pack_into(self.data, off, *head)
        except struct.error:
            self.free_rows.append(row)
            return None
        self.data[off + self.ckey_off:off + self.size] = ckey + skey
        self.live += 1
        self.by_client.add(ckey, row)
        self.by_server.add(skey, row)
        if s.deadline is not None:
            heapq.heappush(self.timers, _timer_entry(s.deadline, row))
        return row

    def restore(self, row: int, *, timer_taken: bool = False) -> FastSession:
        """The session of ``row``, as it was compacted; the row is freed (its timer entry
        goes stale, unless :meth:`due` already took it off the heap)."""
        s = self.peek(row)
        self._release(row, s.deadline is not None and not timer_taken)
        return s

    def _release(self, row: int, had_timer: bool) -> None:
        off = row * self.size
        self.by_client.remove(self.key(row, self.ckey_off), row)
        self.by_server.remove(self.key(row, self.skey_off), row)
        self.data[off] = FREE
        self.free_rows.append(row)
        self.live -= 1
        if had_timer:
            self.stale_timers += 1
            if self.stale_timers * 2 > len(self.timers):
                self.timers = [e for e in self.timers if self._valid(e)]
                heapq.heapify(self.timers)
                self.stale_timers = 0

    def peek(self, row: int) -> FastSession:
        """The session of ``row`` as an object, the row left in place (for introspection)."""
        off = row * self.size
        v = _HEAD.unpack_from(self.data, off)
        ckey = bytes(self.data[off + self.ckey_off:off + self.skey_off])
        skey = bytes(self.data[off + self.skey_off:off + self.size])
        return self._build(v, ckey, skey)

    def rows(self) -> Iterator[int]:
        """Row numbers of the live compacted sessions."""
        for row in range(len(self.data) // self.size):
            if self.data[row * self.size] != FREE:
                yield row

    # ---- timers ----------------------------------------------------------------------------
    def _valid(self, entry: int) -> bool:
        row = entry & 0xFFFFFFFF
        if self.data[row * self.size] == FREE:
            return False
        d = self.deadline(row)
        return d is not None and _timer_entry(d, row) == entry

    def next_deadline(self) -> float | None:
        while self.timers and not self._valid(self.timers[0]):
            heapq.heappop(self.timers)
            self.stale_timers = max(0, self.stale_timers - 1)
        if not self.timers:
            return None
        return _entry_deadline(self.timers[0])

    def due(self, now: float) -> list[int]:
        """Rows whose deadline has come (their timer entries are taken off the heap)."""
        out = []
        while (d := self.next_deadline()) is not None and d <= now:
            out.append(heapq.heappop(self.timers) & 0xFFFFFFFF)
        return out

    # ---- the row's fields --------------------------------------------------------------------
    def _ix(self, service: VirtualService) -> int:
        ix = self._service_ix.get(id(service))
        if ix is None:
            ix = self._service_ix[id(service)] = len(self._services)
            self._services.append(service)
        return ix

    def _name(self, name: str) -> int:
        ix = self._name_ix.get(name)
        if ix is None:
            ix = self._name_ix[name] = len(self._names)
            self._names.append(name)
        return ix

    def _flatten(self, s: FastSession) -> tuple | None:
        p = s.proxy
        c, srv, sp = p.client, p.server, p.splice
        if (p.state not in COMPACTABLE or p.held is not None or p.owner is not Owner.FAST_PATH
                or srv is None or sp is None or s.server is None or s.gw is None
                or srv.rcv_isn is None or srv.peer_options is None or srv.negotiated is None
                or (s.deadline is not None and not s.deadline >= 0)
                or p.service != s.service.name or p.server_name != s.server_name):
            return None
        if (c.tuple != FourTuple(codec.addr_str(s.client[0]), s.client[1],
                                 codec.addr_str(s.vip[0]), s.vip[1])
                or srv.tuple != FourTuple(codec.addr_str(s.gw[0]), s.gw[1],
                                          codec.addr_str(s.server[0]), s.server[1])):
            return None  # a text not in canonical form would not come back the same
        cs, ss, ps, cn, sn = c.syn_options, srv.syn_options, srv.peer_options, c.negotiated, \
            srv.negotiated
        flags = _syn_bits(cs) << C_SYN | _syn_bits(ss) << S_SYN | _syn_bits(ps) << P_SYN
        for present, bit in (
                (c.ts_sent is not None, C_TS_SENT), (c.ts_recent is not None, C_TS_RECENT),
                (cn.sack, CN_SACK), (cn.timestamps, CN_TS),
                (srv.ts_sent is not None, S_TS_SENT), (sn.sack, SN_SACK),
                (sn.timestamps, SN_TS), (sp.sack, SP_SACK), (sp.timestamps, SP_TS),
                (s.client_fin_acked, C_FIN_ACKED), (s.server_fin_acked, S_FIN_ACKED),
                (s.client_fin_end is not None, C_FIN_END),
                (s.server_fin_end is not None, S_FIN_END),
                (s.client_rcv_nxt is not None, C_RCV_NXT),
                (s.client_snd_nxt is not None, C_SND_NXT),
                (s.server_snd_nxt is not None, S_SND_NXT), (s.counted, COUNTED),
                (s.deadline is not None, DEADLINE)):
            if present:
                flags |= bit
        name = self._name(s.server_name)
        if name > 0xFFFF:
            return None

        def z(v: int | None) -> int:
            return 0 if v is None else v

        return (int(p.state), flags, s.open_tries,
                z(cs.wscale), z(ss.wscale), z(ps.wscale),
                cn.snd_wscale, cn.rcv_wscale, sn.snd_wscale, sn.rcv_wscale,
                sp.client_snd_wscale, sp.client_rcv_wscale, sp.server_snd_wscale,
                sp.server_rcv_wscale,
                z(cs.mss), z(ss.mss), z(ps.mss),
                cn.peer_mss, cn.local_mss, sn.peer_mss, sn.local_mss,
                sp.client_mss, sp.server_mss, c.rcv_wnd_field, self._ix(s.service), name,
                c.rcv_isn, c.snd_isn, z(cs.tsval), z(c.ts_sent), z(c.ts_recent),
                srv.snd_isn, srv.rcv_isn, z(ss.tsval), z(ps.tsval), z(srv.ts_sent),
                sp.c2s_seq, sp.s2c_seq, sp.c2s_ts, sp.s2c_ts,
                s.ts_base, z(s.client_fin_end), z(s.server_fin_end), z(s.client_rcv_nxt),
                s.client_rcv_wnd, z(s.client_snd_nxt), z(s.server_snd_nxt),
                s.created, s.last_active, z(s.deadline))

    def _build(self, v: tuple, ckey: bytes, skey: bytes) -> FastSession:
        from reference.gateway.fastpath import FastSession, _shared

        (state, f, open_tries, cs_ws, ss_ws, ps_ws, cn_sws, cn_rws, sn_sws, sn_rws,
         sp_csw, sp_crw, sp_ssw, sp_srw, cs_mss, ss_mss, ps_mss,
         cn_pm, cn_lm, sn_pm, sn_lm, sp_cm, sp_sm, rcv_wnd_field, service_ix, name_ix,
         c_rcv_isn, c_snd_isn, cs_tsval, c_ts_sent, c_ts_recent,
         s_snd_isn, s_rcv_isn, ss_tsval, ps_tsval, s_ts_sent,
         c2s_seq, s2c_seq, c2s_ts, s2c_ts, ts_base, c_fin_end, s_fin_end, c_rcv_nxt,
         c_rcv_wnd, c_snd_nxt, s_snd_nxt, created, last_active, deadline) = v

        def o(bit: int, value: int | float) -> int | float | None:
            return value if f & bit else None

        a = self.addr_len
        client, vip = _ends(ckey, a)
        server, gw = _ends(skey, a)
        crec = ClientSessionRecord(
            tuple=FourTuple(codec.addr_str(client[0]), client[1], codec.addr_str(vip[0]),
                            vip[1]),
            rcv_isn=c_rcv_isn, snd_isn=c_snd_isn,
            syn_options=_syn_options(f >> C_SYN, cs_mss, cs_ws, cs_tsval),
            negotiated=_shared(Negotiated(cn_pm, cn_lm, cn_sws, cn_rws, bool(f & CN_SACK),
                                          bool(f & CN_TS))),
            ts_sent=o(C_TS_SENT, c_ts_sent), ts_recent=o(C_TS_RECENT, c_ts_recent),
            rcv_wnd_field=rcv_wnd_field)
        srec = ServerSessionRecord(
            tuple=FourTuple(codec.addr_str(gw[0]), gw[1], codec.addr_str(server[0]),
                            server[1]),
            snd_isn=s_snd_isn, rcv_isn=s_rcv_isn,
            syn_options=_syn_options(f >> S_SYN, ss_mss, ss_ws, ss_tsval),
            peer_options=_syn_options(f >> P_SYN, ps_mss, ps_ws, ps_tsval),
            negotiated=_shared(Negotiated(sn_pm, sn_lm, sn_sws, sn_rws, bool(f & SN_SACK),
                                          bool(f & SN_TS))),
            ts_sent=o(S_TS_SENT, s_ts_sent))
        service = self._services[service_ix]
        name = self._names[name_ix]
        proxy = ProxySessionRecord(
            client=crec, service=service.name, state=S(state), owner=Owner.FAST_PATH,
            server=srec, held=None,
            splice=Splice(c2s_seq, s2c_seq, c2s_ts, s2c_ts, sp_csw, sp_crw, sp_ssw, sp_srw,
                          sp_cm, sp_sm, bool(f & SP_SACK), bool(f & SP_TS)),
            server_name=name)
        return FastSession(
            proxy=proxy, version=4 if a == 4 else 6, client=client, vip=vip, service=service,
            created=created, last_active=last_active, server=server, gw=gw,
            server_name=name, deadline=o(DEADLINE, deadline), open_tries=open_tries,
            ts_base=ts_base, client_fin_end=o(C_FIN_END, c_fin_end),
            server_fin_end=o(S_FIN_END, s_fin_end), client_fin_acked=bool(f & C_FIN_ACKED),
            server_fin_acked=bool(f & S_FIN_ACKED), client_rcv_nxt=o(C_RCV_NXT, c_rcv_nxt),
            client_rcv_wnd=c_rcv_wnd, client_snd_nxt=o(C_SND_NXT, c_snd_nxt),
            server_snd_nxt=o(S_SND_NXT, s_snd_nxt), counted=bool(f & COUNTED))


def _syn_bits(o: SynOptions) -> int:
    return ((o.mss is not None) | (o.wscale is not None) << 1 | o.sack_permitted << 2
            | (o.tsval is not None) << 3)


def _syn_options(bits: int, mss: int, wscale: int, tsval: int) -> SynOptions:
    return SynOptions(mss=mss if bits & 1 else None, wscale=wscale if bits & 2 else None,
                      sack_permitted=bool(bits & 4), tsval=tsval if bits & 8 else None)


def _ends(key: bytes, a: int) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
    """(source, destination) of a flow key, as (address, port) with shared addresses."""
    sport, dport = _PORTS.unpack_from(key, 2 * a)
    return ((codec.addr_bytes(codec.addr_str(key[:a])), sport),
            (codec.addr_bytes(codec.addr_str(key[a:2 * a])), dport))


def _timer_entry(deadline: float, row: int) -> int:
    """One int per timer: the float64 bits of a deadline >= 0 order like the deadline."""
    return _BITS.unpack(_DOUBLE.pack(deadline))[0] << 32 | row


def _entry_deadline(entry: int) -> float:
    return float(_DOUBLE.unpack(_BITS.pack(entry >> 32))[0])

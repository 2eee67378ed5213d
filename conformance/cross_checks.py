"""Cross-leg judges: how a client-leg connection and the server-leg connection carrying its
bytes relate.

A gateway bug is only visible by comparing the legs (a truncated response, an early ACK, a
server picked against the rules), so each client-leg connection is first *paired* with its
server-leg connection, then judged. Offsets are stream offsets (0 = the byte after the ISN)
on both legs, so a byte at offset k on one leg is the byte at offset k on the other for any
gateway that does not rewrite the stream.

Path classification does not trust the ISNs (a proxy's offsets are also "constant", just
independent): a connection is *spliced* when every data segment the gateway sends lies inside
one segment it had already received from the other peer (relayed in place, perhaps cut to the
MSS, never coalesced or sent ahead), in both directions, and every ACK it sends the server
covers only what the client had acknowledged by then (a splice relays the client's ACKs; a
proxy acknowledges the server's data as it arrives). ACKs towards the *client* are left to
``cross.ack_safety`` so that an unsafe splice is failed, not reclassified as a proxy.

Times are compared with ``<=``: a capture at the gateway stamps a relayed segment with the
same time as the one that caused it.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, itemgetter, not_
from typing import Any

from conformance.flows import ACK, FIN, RST, SYN, Conn, Leg, Seg
from conformance.properties import Capabilities, Context, Finding, Property, register

M32 = 0xFFFFFFFF
HALF = 1 << 31
KEY = 16
MTU = 1500
"""Request bytes used to bucket server-leg connections for pairing."""
PATHS = ("spliced", "proxied", "handed-off")


@dataclass
class Pair:
    """A client-leg connection and the server-leg connection carrying its bytes.

    ``server`` is None for an unpaired client-leg connection; ``client`` is None for a
    server-leg connection no client-leg connection accounts for (an orphan)."""

    client: Conn | None
    server: Conn | None
    how: str
    """How the pair was made, or why there is none."""
    refused: bool = False
    """The gateway refused the client's connection (RST to its SYN, or no SYN-ACK)."""
    cache: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    """Classifications already made (three judges need the path)."""
    http: Any = None
    """``http_cross.Exchanges`` when a full proxy's legs were paired by HTTP exchanges."""

    @property
    def name(self) -> str:
        c = self.client.name if self.client else "(no client-leg connection)"
        s = self.server.name if self.server else "(no server-leg connection)"
        return f"{c} / {s}"


# ---------------------------------------------------------------------------- helpers


def _signed(x: int) -> int:
    return ((x + HALF) & M32) - HALF


def _base(conn: Conn, c2s: bool) -> int | None:
    return conn.base_c2s if c2s else conn.base_s2c


def _rel(conn: Conn, c2s: bool, seq: int) -> int | None:
    """Stream offset of ``seq`` in direction ``c2s`` of ``conn`` (None: base unknown)."""
    b = _base(conn, c2s)
    return None if b is None else ((seq - b + HALF) & M32) - HALF


# Every judge walks the same per-direction lists (what each side sent, its data, the ACKs
# of a direction); they are derived once per connection and kept in ``Conn.cache``
# (``flows.rebuild`` empties it). Callers must not modify the lists they get.


def _split(conn: Conn) -> tuple[list[Seg], list[Seg]]:
    """(segments the server side sent, segments the client side sent), capture order."""
    got = conn.cache.get("sent")
    if got is None:
        dirs = conn.from_client
        got = conn.cache["sent"] = (list(compress(conn.segs, map(not_, dirs))),
                                    list(compress(conn.segs, dirs)))
    return got  # type: ignore[no-any-return]


def _sent(conn: Conn, from_client: bool) -> list[Seg]:
    return _split(conn)[1 if from_client else 0]


def _data(conn: Conn, from_client: bool) -> list[Seg]:
    key = "data_c" if from_client else "data_s"
    got = conn.cache.get(key)
    if got is None:
        got = conn.cache[key] = [s for s in _sent(conn, from_client) if s.payload]
    return got  # type: ignore[no-any-return]


def _first_data_time(conn: Conn, from_client: bool) -> float | None:
    d = _data(conn, from_client)
    return d[0].time if d else None


def _syn(conn: Conn) -> Seg | None:
    for s in _sent(conn, True):
        if s.flags & SYN and not s.flags & ACK:
            return s
    return None


def _start_time(conn: Conn) -> float:
    return conn.syn_time if conn.syn_time is not None else conn.segs[0].time


def _stream(conn: Conn, c2s: bool) -> bytes:
    return conn.stream_c2s if c2s else conn.stream_s2c


def _gaps(conn: Conn, c2s: bool) -> list[tuple[int, int]]:
    return conn.gaps_c2s if c2s else conn.gaps_s2c


def _fin(conn: Conn, c2s: bool) -> Seg | None:
    return conn.fin_c if c2s else conn.fin_s


def _fin_offset(conn: Conn, c2s: bool) -> int | None:
    f = _fin(conn, c2s)
    if f is None:
        return None
    r = _rel(conn, c2s, f.seq)
    return None if r is None else r + len(f.payload)


def _prefix_compatible(a: bytes, b: bytes) -> bool:
    """One is a prefix of the other (``startswith`` compares in place, no slice copies)."""
    return b.startswith(a) if len(a) <= len(b) else a.startswith(b)


def _first_diff(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    if _prefix_compatible(a, b):
        return n
    lo, hi = 0, n  # binary search on prefix equality: O(log n) slices
    while lo < hi:
        mid = (lo + hi) // 2
        if a[lo:mid + 1] == b[lo:mid + 1]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _frame_at(conn: Conn, c2s: bool, offset: int) -> int | None:
    """Frame of the first segment carrying stream ``offset`` (or the FIN/end there)."""
    for s in _sent(conn, c2s):
        r = _rel(conn, c2s, s.seq)
        if r is None:
            return None
        if s.payload and r <= offset < r + len(s.payload):
            return s.index
    f = _fin(conn, c2s)
    return f.index if f is not None else None


def _acks(conn: Conn, c2s: bool) -> list[tuple[float, int, Seg]]:
    """(time, acknowledged stream offset of direction ``c2s``, segment) for every ACK the
    receiver of that direction sent (the offset counts the FIN as one more octet)."""
    key = "acks_c2s" if c2s else "acks_s2c"
    got = conn.cache.get(key)
    if got is None:
        b = _base(conn, c2s)
        if b is None:
            got = []
        else:
            off = HALF - b  # literals below: M32, HALF, ACK | RST, ACK (a hot loop)
            got = [(s.time, ((s.ack + off) & 0xFFFFFFFF) - 0x80000000, s)
                   for s in _sent(conn, not c2s) if s.flags & 0x14 == 0x10]
        conn.cache[key] = got
    return got  # type: ignore[no-any-return]


def _peer_data_acked(conn: Conn, c2s: bool, until: float | None = None) -> int:
    """Highest data offset of direction ``c2s`` its receiver acknowledged (FIN excluded)."""
    key = "acked_c2s" if c2s else "acked_s2c"
    if until is None and key in conn.cache:
        return conn.cache[key]  # type: ignore[no-any-return]
    fin = _fin_offset(conn, c2s)
    best = 0
    if until is None:
        best = max(0, max(map(_SECOND, _acks(conn, c2s)), default=0))
    else:
        for t, r, _ in _acks(conn, c2s):
            if t > until:
                break
            if r > best:
                best = r
    if fin is not None and best > fin:
        best = fin
    if until is None:
        conn.cache[key] = best
    return best


_SECOND = itemgetter(1)


def _leg_frames(leg: str, *idx: int | None) -> tuple[tuple[str, int], ...]:
    return tuple((leg, i) for i in idx if i)


def _gateway_refused(c: Conn) -> bool:
    """The gateway answered the SYN with RST, or never with a SYN-ACK."""
    return c.isn_s is None and (not any(d == 0 for d in c.from_client) or bool(c.rst))


# ---------------------------------------------------------------------------- pairing


def _client_order(c: Conn) -> tuple[float, float]:
    t = _first_data_time(c, True)
    return (t if t is not None else _start_time(c), _start_time(c))


def pair(client_leg: Leg, server_leg: Leg, ctx: Context | None = None) -> list[Pair]:
    """Pair each client-leg connection with the server-leg connection carrying its bytes.

    Greedy in the order clients sent their first data: the earliest still-unmatched
    server-leg connection whose request stream is a prefix-compatible copy of the client's
    (either may be the longer), whose response is prefix-compatible with what the client got,
    and whose first request byte was sent no earlier than the client's. With many identical
    concurrent requests this threshold-greedy order is the one that never pairs a server
    connection with a client that had not sent its request yet. Connections that match on
    nothing but time and response (a gateway that rewrote or corrupted the request) are
    paired in a second pass so that the stream judges can say where the bytes differ.
    """
    if ctx is not None and ctx.capabilities.l7 and not ctx.capabilities.splices:
        from conformance import http_cross  # a full proxy: pair HTTP exchanges
        return http_cross.pair_exchanges(client_leg, server_leg, ctx, pair)
    policy = ctx.policy if ctx is not None else None
    # connections to a virtual service; all of them if none is (a policy for another VIP
    # must not turn every server-leg connection into an orphan: cross.selection says why)
    clients = [c for c in client_leg.conns
               if policy is None or not policy.services() or policy.serves(*c.server)] \
        or list(client_leg.conns)
    clients.sort(key=_client_order)
    servers = sorted(server_leg.conns, key=_start_time)
    free = set(range(len(servers)))
    times = []
    for s in servers:
        t = _first_data_time(s, True)
        times.append(t if t is not None else _start_time(s))
    # free server connections by the first KEY request bytes, each list in time order;
    # b"" holds those without request bytes, ``short`` those with fewer than KEY
    buckets: dict[bytes, list[tuple[float, int]]] = {}
    short: list[tuple[float, int]] = []
    for i, s in enumerate(servers):
        req = s.stream_c2s
        if len(req) >= KEY or not req:
            buckets.setdefault(req[:KEY], []).append((times[i], i))
        else:
            short.append((times[i], i))
    for lst in [*buckets.values(), short]:
        lst.sort()
    result: dict[int, Pair] = {}

    def lists_for(c: Conn) -> list[list[tuple[float, int]]]:
        req = c.stream_c2s
        if not req:
            return [buckets.get(b"", [])]
        if len(req) >= KEY:
            return [buckets.get(req[:KEY], []), short]
        return [*buckets.values(), short]  # rare: a request shorter than KEY

    def fits(c: Conn, s: Conn, strict: bool) -> bool:
        if (":" in c.client[0]) != (":" in s.client[0]):
            return False  # another address family: not this client's server connection
        if not _prefix_compatible(c.stream_c2s, s.stream_c2s):
            return False
        if strict and not _prefix_compatible(c.stream_s2c, s.stream_s2c):
            return False
        # an empty client request never pairs with server-leg request bytes
        return bool(c.stream_c2s) or not s.stream_c2s

    def earliest(c: Conn, t0: float, strict: bool) -> tuple[list[tuple[float, int]], int]:
        best: tuple[list[tuple[float, int]], int] | None = None
        for lst in lists_for(c):
            k = bisect.bisect_left(lst, (t0, -1))
            while k < len(lst):
                i = lst[k][1]
                if _start_time(servers[i]) >= _start_time(c) and fits(c, servers[i], strict):
                    if best is None or lst[k] < best[0][best[1]]:
                        best = (lst, k)
                    break
                k += 1
        if best is None:
            raise LookupError
        return best

    pending: list[int] = []
    for ci, c in enumerate(clients):
        t = _first_data_time(c, True)
        t0 = t if t is not None else _start_time(c)
        chosen = None
        for strict in (True, False):
            try:
                lst, k = earliest(c, t0, strict)
            except LookupError:
                continue
            chosen = lst.pop(k)[1]
            break
        if chosen is None:
            pending.append(ci)
            continue
        free.discard(chosen)
        how = "request bytes" if c.stream_c2s else "no request: earliest free connection"
        result[ci] = Pair(c, servers[chosen], f"paired by {how} (server leg conn "
                                                f"#{servers[chosen].number})")
    # second pass: request differs; pair by response compatibility and time
    for ci in pending:
        c = clients[ci]
        t0 = _start_time(c)
        best = None
        for i in sorted(free, key=lambda i: (times[i], i)):
            s = servers[i]
            if _start_time(s) < t0 or not (c.stream_c2s and s.stream_c2s):
                continue
            same_resp = bool(c.stream_s2c) and _prefix_compatible(c.stream_s2c, s.stream_s2c)
            common = _first_diff(c.stream_c2s, s.stream_c2s)
            if same_resp or common >= 4:
                best = i
                break
        if best is None:
            result[ci] = Pair(c, None, "no server-leg connection carries this request",
                              refused=_gateway_refused(c))
            continue
        free.discard(best)
        for lst in [*buckets.values(), short]:
            if (times[best], best) in lst:
                lst.remove((times[best], best))
        result[ci] = Pair(c, servers[best], "paired by timing and response (the request "
                                            f"bytes differ; server leg conn "
                                            f"#{servers[best].number})")
    out = sorted(result.values(), key=lambda q: q.client.number if q.client else 0)
    out += [Pair(None, servers[i], "no client-leg connection sent this") for i in sorted(free)]
    return out


# ---------------------------------------------------------------------------- judges


def _f(pid: str, verdict: str, detail: str,
       packets: tuple[tuple[str, int], ...] = ()) -> Finding:
    return Finding(pid, verdict, detail, packets)


def judge_pairing(p: Pair, ctx: Context) -> Finding:
    pid = "cross.pairing"
    if p.http is not None:
        from conformance import http_cross
        got = http_cross.judge_pairing(p, ctx)
        if got is not None:
            return got
    if p.client is None:
        s = p.server
        assert s is not None
        if not s.stream_c2s and not s.stream_s2c:
            return _f(pid, "n/a", f"server-leg {s.name} carries no data (a probe or health "
                                  "check)", _leg_frames("server", s.first_frame()))
        return _f(pid, "fail", f"server-leg {s.name} carries {len(s.stream_c2s)} request "
                               "byte(s) that no client-leg connection sent",
                  _leg_frames("server", s.first_frame()))
    c = p.client
    if p.server is not None:
        return _f(pid, "pass", p.how, _leg_frames("client", c.first_frame()) +
                  _leg_frames("server", p.server.first_frame()))
    if p.refused:
        return _f(pid, "n/a", f"{c.name}: the gateway refused the connection",
                  _leg_frames("client", c.first_frame()))
    req = _data(c, True)
    if not req:
        return _f(pid, "pass", f"{c.name}: the client sent no data, so no server connection "
                               "was needed", _leg_frames("client", c.first_frame()))
    acked = _peer_data_acked(c, True)
    answered = _data(c, False)
    status = _local_error(c.stream_s2c)
    if status:
        return _f(pid, "n/a", f"{c.name}: the gateway answered the request itself "
                              f"(HTTP {status}); nothing to relay",
                  _leg_frames("client", answered[0].index))
    if acked > 0 or answered:
        ev = answered[0] if answered else next(s for _, r, s in _acks(c, True) if r > 0)
        return _f(pid, "fail", f"{c.name}: the gateway "
                  f"{'answered' if answered else 'acknowledged'} {len(c.stream_c2s)} request "
                  f"byte(s) (frame {ev.index}) but no server-leg connection carries them",
                  _leg_frames("client", req[0].index, ev.index))
    return _f(pid, "pass", f"{c.name}: request never acknowledged or answered; no server "
                           "connection expected", _leg_frames("client", req[0].index))


def _local_error(response: bytes) -> int | None:
    """The status of an HTTP/1.x error (4xx/5xx) response, which a gateway may send itself
    (400 for a request it cannot parse, 503 with no server) without a server connection."""
    if not response.startswith(b"HTTP/1.") or len(response) < 12:
        return None
    code = response[9:12]
    return int(code) if code.isdigit() and code[:1] in b"45" else None


def _both(p: Pair, pid: str) -> Finding | None:
    if p.client is None or p.server is None:
        return _f(pid, "n/a", f"{p.name}: not paired ({p.how})")
    return None


def _judge_stream(p: Pair, c2s: bool) -> Finding:
    pid = "cross.stream_c2s" if c2s else "cross.stream_s2c"
    na = _both(p, pid)
    if na:
        return na
    assert p.client is not None and p.server is not None
    src, dst = (p.client, p.server) if c2s else (p.server, p.client)
    sleg, dleg = src.leg, dst.leg
    a, b = _stream(src, c2s), _stream(dst, c2s)
    what = "request (client->server)" if c2s else "response (server->client)"
    first_gaps = [g[0] for g in _gaps(src, c2s)[:1] + _gaps(dst, c2s)[:1]]
    gap_at = min(first_gaps) if first_gaps else None
    limit = min(len(a), len(b)) if gap_at is None else min(len(a), len(b), gap_at)
    i = _first_diff(a[:limit], b[:limit])
    if i < limit:
        fs, fd = _frame_at(src, c2s, i), _frame_at(dst, c2s, i)
        return _f(pid, "fail", f"{what} differs at stream offset {i}: {sleg} leg has "
                  f"{a[i:i + 8]!r} (frame {fs}), {dleg} leg has {b[i:i + 8]!r} (frame {fd})",
                  _leg_frames(sleg, fs) + _leg_frames(dleg, fd))
    if gap_at is not None and gap_at < max(len(a), len(b)):
        return _f(pid, "unknown", f"{what} identical up to offset {gap_at}, where the "
                  "capture has a gap; bytes beyond it cannot be compared")
    if len(b) > len(a):
        fd = _frame_at(dst, c2s, len(a))
        return _f(pid, "fail", f"{dleg} leg carries {len(b) - len(a)} {what} byte(s) beyond "
                  f"the {len(a)} the {sleg} leg sent (from offset {len(a)}, frame {fd})",
                  _leg_frames(dleg, fd))
    if len(b) < len(a):
        return _f(pid, "pass", f"{what}: the {dleg} leg has a prefix ({len(b)} of "
                  f"{len(a)} bytes), identical; whether the close came too early is judged "
                  "by cross.fin_rst")
    return _f(pid, "pass", f"{what} identical on both legs ({len(a)} bytes)")


def judge_stream_c2s(p: Pair, ctx: Context) -> Finding:
    return _http_stream(p, ctx, True, _judge_stream(p, True))


def judge_stream_s2c(p: Pair, ctx: Context) -> Finding:
    return _http_stream(p, ctx, False, _judge_stream(p, False))


def _http_stream(p: Pair, ctx: Context, c2s: bool, byte: Finding) -> Finding:
    """Byte identity is the rule; a full proxy's pair that fails it (or carries only some of
    its connections' exchanges) is judged by HTTP equivalence instead."""
    if byte.verdict == "fail" or (p.http is not None and byte.verdict == "pass"):
        from conformance import http_cross
        if http_cross.applies(p, ctx, classify):
            return http_cross.judge_stream(p, c2s, byte)
    return byte


def judge_delayed_binding(p: Pair, ctx: Context) -> Finding:
    pid = "cross.delayed_binding"
    if not ctx.capabilities.delayed_binding:
        return _f(pid, "n/a", "the gateway does not do delayed binding")
    na = _both(p, pid)
    if na:
        return na
    assert p.client is not None and p.server is not None
    if p.http is not None and p.http.matched and p.http.matched[0][1] > 0:
        return _f(pid, "n/a", f"{p.server.name} was opened for an earlier exchange and "
                              "reused for this one (a proxy's connection pool)")
    syn = _syn(p.server)
    if syn is None:
        return _f(pid, "unknown", f"{p.server.name}: server-leg SYN not captured")
    req = _data(p.client, True)
    if not req:
        return _f(pid, "fail", f"server-leg SYN (frame {syn.index}) though the client sent "
                               "no request", _leg_frames("server", syn.index))
    if syn.time < req[0].time:
        return _f(pid, "fail", f"server-leg SYN (frame {syn.index}, t={syn.time:.6f}) before "
                  f"the client's first data (client frame {req[0].index}, "
                  f"t={req[0].time:.6f})",
                  _leg_frames("client", req[0].index) + _leg_frames("server", syn.index))
    return _f(pid, "pass", f"server-leg SYN (frame {syn.index}) "
              f"{syn.time - req[0].time:.6f}s after the first request segment "
              f"(client frame {req[0].index})",
              _leg_frames("client", req[0].index) + _leg_frames("server", syn.index))


def judge_selection(p: Pair, ctx: Context) -> Finding:
    pid = "cross.selection"
    policy = ctx.policy
    if policy is None:
        return _f(pid, "n/a", "no selection policy given")
    na = _both(p, pid)
    if na:
        return na
    assert p.client is not None and p.server is not None
    c, s = p.client, p.server
    vip, vport = c.server
    l7 = ctx.capabilities.l7
    request = c.stream_c2s
    if c.gaps_c2s:
        request = request[:c.gaps_c2s[0][0]]
    if p.http is not None and p.http.matched:  # the request this server was chosen for
        from conformance import http_cross
        request = request[http_cross.request_start(p):]
    if not policy.serves(vip, vport):
        return _f(pid, "fail", f"no virtual service on {vip}:{vport} in the policy, yet the "
                  f"gateway connected to {s.server[0]}:{s.server[1]}",
                  _leg_frames("server", s.first_frame()))
    if l7 and policy.request_head(request) is None:
        return _f(pid, "unknown", "the client's request head is not a complete, routable "
                                  "HTTP/1.x head; the rules cannot be applied")
    allowed = policy.allowed_servers(vip, vport, request, c.client, l7=l7)
    got = (_canon(s.server[0]), s.server[1])
    names = ", ".join(sorted(f"{a}:{b}" for a, b in allowed))
    pool = policy.pool_of(vip, vport, request) if l7 else "any pool (no L7)"
    if got not in allowed:
        return _f(pid, "fail", f"server {got[0]}:{got[1]} is not allowed: {pool} allows "
                  f"{names}", _leg_frames("server", s.first_frame()))
    return _f(pid, "pass", f"server {got[0]}:{got[1]} allowed by {pool} ({names})",
              _leg_frames("server", s.first_frame()))


def _canon(a: str) -> str:
    try:
        return str(ipaddress.ip_address(a))
    except ValueError:
        return a


_BY_TIME = attrgetter("time", "index")


def _in_place(p: Pair, c2s: bool) -> tuple[bool, str]:
    """Every data segment the gateway sent in direction ``c2s`` lies inside one segment it
    had received from the other peer, no later than it sent it."""
    assert p.client is not None and p.server is not None
    src, dst = (p.client, p.server) if c2s else (p.server, p.client)
    got = []
    b0 = _base(src, c2s)
    if b0 is not None:
        off = HALF - b0
        got = [(s.time, r := ((s.seq + off) & 0xFFFFFFFF) - 0x80000000, r + len(s.payload))
               for s in _data(src, c2s)]  # literals: M32, HALF
        got.sort()
    starts: list[int] = []  # sorted starts of segments received so far
    ends: dict[int, int] = {}  # start -> furthest end received from it
    k, ngot = 0, len(got)
    sent = sorted(_data(dst, c2s), key=_BY_TIME)
    b1 = _base(dst, c2s)
    if sent and b1 is None:
        return False, "stream base unknown"
    off = HALF - (b1 or 0)
    insort, bisect_right = bisect.insort, bisect.bisect_right
    for s in sent:
        t = s.time
        while k < ngot and got[k][0] <= t:
            _, a, b = got[k]
            if a not in ends:
                insort(starts, a)
                ends[a] = b
            elif b > ends[a]:
                ends[a] = b
            k += 1
        r = ((s.seq + off) & 0xFFFFFFFF) - 0x80000000
        end = r + len(s.payload)
        j = bisect_right(starts, r)
        if j and ends[starts[j - 1]] >= end:  # the usual case, the nearest start
            continue
        # segments overlap only through retransmissions: the few nearest starts suffice
        if any(ends[starts[i]] >= end for i in range(j - 1, max(j - 17, -1), -1)):
            continue
        if s.ip_len > MTU and _covered(starts, ends, r, end):
            continue  # a GRO super-frame relayed whole: the capture saw its pieces
        return False, (f"{dst.leg}-leg frame {s.index} (offset {r}, {len(s.payload)} "
                       f"bytes) is not a piece of any segment received before it")
    return True, ""


def _covered(starts: list[int], ends: dict[int, int], a: int, b: int) -> bool:
    """[a, b) is covered by the union of the received segments."""
    j = bisect.bisect_right(starts, a)
    reach = max((ends[starts[i]] for i in range(max(j - 16, 0), j)), default=a - 1)
    if reach <= a:
        return False
    while reach < b and j < len(starts) and starts[j] <= reach:
        reach = max(reach, ends[starts[j]])
        j += 1
    return reach >= b


def _acks_follow_client(p: Pair) -> tuple[bool, str]:
    """Every ACK the gateway sent the server covers only response data the client had
    acknowledged by then (the handshake aside)."""
    assert p.client is not None and p.server is not None
    client_acks = _acks(p.client, False)
    best, k, nacks = 0, 0, len(client_acks)
    for t, r, s in _acks(p.server, False):
        while k < nacks and client_acks[k][0] <= t:
            v = client_acks[k][1]
            if v > best:
                best = v
            k += 1
        if r > best and r > 0:
            return False, (f"server-leg frame {s.index} acknowledges response offset {r}, "
                           f"the client had acknowledged {best}")
    return True, ""


def classify(p: Pair, caps: Capabilities | None = None) -> str:
    """"spliced", "proxied" or "handed-off" ("proxied" on a gateway that splices), or
    "none" when nothing was relayed to classify by."""
    if p.client is None or p.server is None:
        return "none"
    base = p.cache.get("path")
    if base is None:
        if not (_data(p.server, True) or _data(p.client, False)):
            base = "none"
        elif all(_in_place(p, d)[0] for d in (True, False)) and _acks_follow_client(p)[0]:
            base = "spliced"
        else:
            base = "proxied"
        p.cache["path"] = base
    if base == "proxied" and caps is not None and caps.splices:
        return "handed-off"
    if base == "spliced" and caps is not None and not caps.splices and _not_a_splice(p):
        return "proxied"
    return base


def _not_a_splice(p: Pair) -> str:
    """Why a pair that looks spliced is a proxy's, on a gateway that does not splice: it
    acknowledged client data before the server did (a proxy ACKs what it buffers), or the
    bytes changed on the way (a splice relays them as they are). Empty: neither."""
    assert p.client is not None and p.server is not None
    got = p.cache.get("not_a_splice")
    if got is None:
        got = ""
        server_acks, best, k = _acks(p.server, True), 0, 0
        for t, r, s in _acks(p.client, True):
            while k < len(server_acks) and server_acks[k][0] <= t:
                best = max(best, server_acks[k][1])
                k += 1
            if not s.flags & SYN and r > 0 and r > best:
                got = (f"client-leg frame {s.index} acknowledges request offset {r} before "
                       f"the server had ({best}): the gateway buffers")
                break
        if not got and not all(_prefix_compatible(_stream(p.client, d), _stream(p.server, d))
                               for d in (True, False)):
            got = "the bytes changed on the way: the gateway rewrites what it relays"
        p.cache["not_a_splice"] = got
    return got


def _why_not_spliced(p: Pair) -> str:
    if p.cache.get("not_a_splice"):
        return p.cache["not_a_splice"]
    for d in (True, False):
        ok, why = _in_place(p, d)
        if not ok:
            return why
    return _acks_follow_client(p)[1]


def judge_path(p: Pair, ctx: Context) -> Finding:
    pid = "cross.path"
    na = _both(p, pid)
    if na:
        return na
    cls = classify(p, ctx.capabilities)
    if cls == "none":
        return _f(pid, "n/a", "no payload relayed; nothing to classify the path by")
    if cls == "spliced":
        return _f(pid, "pass", "spliced: every relayed segment kept its place in the stream "
                               "and ACKs to the server follow the client's")
    return _f(pid, "pass", f"{cls}: {_why_not_spliced(p)}")


def judge_continuity(p: Pair, ctx: Context) -> Finding:
    pid = "cross.continuity"
    na = _both(p, pid)
    if na:
        return na
    assert p.client is not None and p.server is not None
    cls = classify(p, ctx.capabilities)
    if cls == "proxied" or (cls == "none" and not ctx.capabilities.splices):
        return _f(pid, "n/a", "a full proxy owns the client's sequence space")
    c = p.client
    gw = _sent(c, False)
    # one pass for the SYN-ACKs and the first data or FIN before the stream start
    synacks = []
    early = None
    b0 = c.base_s2c
    off = HALF - (b0 or 0)
    for s in gw:
        f = s.flags
        if f & 0x06:  # SYN | RST
            if f & 0x02:
                synacks.append(s)
            continue
        if early is None and b0 is not None and (s.payload or f & 0x01) \
                and ((s.seq + off) & 0xFFFFFFFF) - 0x80000000 < 0:  # M32, HALF
            early = s
    if not synacks:
        return _f(pid, "unknown", "the gateway's SYN-ACK was not captured")
    isn = synacks[0].seq
    for s in synacks[1:]:
        if s.seq != isn:
            return _f(pid, "fail", f"second SYN-ACK (frame {s.index}) with ISN {s.seq}, the "
                      f"first (frame {synacks[0].index}) had {isn}",
                      _leg_frames("client", synacks[0].index, s.index))
    if early is not None:
        s = early
        return _f(pid, "fail", f"frame {s.index}: gateway seq {s.seq} is before its "
                  f"SYN-ACK ISN {isn} + 1", _leg_frames("client", s.index))
    acked_over = _peer_data_acked(c, False)
    for a, b in c.gaps_s2c:
        if acked_over < b:
            fr = _frame_at(c, False, b)
            return _f(pid, "fail", f"the gateway's stream to the client skips offsets "
                      f"[{a}, {b}) (next data frame {fr}); the client never acknowledged "
                      "past them, so they were never sent", _leg_frames("client", fr))
    server_rst = [s for s in p.server.rst]
    client_rst = [s for s in _sent(c, True) if s.flags & RST] if c.rst else []
    for s in gw if c.rst else ():
        if not s.flags & RST:
            continue
        cause = [r for r in server_rst + client_rst if r.time <= s.time]
        if not cause and _syn(p.server) is not None and p.server.isn_s is not None:
            return _f(pid, "fail", f"the gateway reset the client (frame {s.index}) though "
                      "neither peer had reset", _leg_frames("client", s.index))
    if cls == "handed-off":
        last, lf = None, None
        for _, r, s in _acks(c, True):
            if s.flags & SYN:
                continue
            if last is not None and r < last:
                return _f(pid, "fail", f"the gateway's ACK to the client went back from "
                          f"{last} (frame {lf}) to {r} (frame {s.index})",
                          _leg_frames("client", lf, s.index))
            last, lf = r, s.index
    return _f(pid, "pass", f"{cls}: the client's sequence space continues from the "
                           f"gateway's ISN {isn} unbroken")


def judge_ack_safety(p: Pair, ctx: Context) -> Finding:
    pid = "cross.ack_safety"
    na = _both(p, pid)
    if na:
        return na
    assert p.client is not None and p.server is not None
    cls = classify(p, ctx.capabilities)
    if cls != "spliced":
        return _f(pid, "n/a", f"path is {cls}, not spliced")
    server_acks = _acks(p.server, True)
    best, k, nacks = 0, 0, len(server_acks)
    best_frame = None
    for t, r, s in _acks(p.client, True):
        while k < nacks and server_acks[k][0] <= t:
            if server_acks[k][1] > best:
                best, best_frame = server_acks[k][1], server_acks[k][2].index
            k += 1
        if r <= 0 or s.flags & 0x02:  # SYN
            continue
        if r > best:
            return _f(pid, "fail", f"client-leg frame {s.index} acknowledges request offset "
                      f"{r}, the server had acknowledged only {best} by then"
                      + (f" (server frame {best_frame})" if best_frame else ""),
                      _leg_frames("client", s.index) + _leg_frames("server", best_frame))
    return _f(pid, "pass", "every ACK to the client covers only what the server had "
                           "acknowledged")


def _finished_before(conn: Conn, t: float) -> bool:
    fc, fs = conn.fin_c, conn.fin_s
    return fc is not None and fs is not None and fc.time <= t and fs.time <= t


def judge_fin_rst(p: Pair, ctx: Context) -> Finding:
    pid = "cross.fin_rst"
    na = _both(p, pid)
    if na:
        return na
    assert p.client is not None and p.server is not None
    if p.http is not None or (ctx.capabilities.l7 and not ctx.capabilities.splices):
        from conformance import http_cross  # a full proxy: judged by messages
        if http_cross.requests(p.client).messages and http_cross.applies(p, ctx, classify):
            return http_cross.judge_fin_rst(p, ctx)
    notes = []
    for c2s in (True, False):
        src, dst = (p.client, p.server) if c2s else (p.server, p.client)
        fin = _fin(dst, c2s)  # the gateway's FIN towards the destination peer
        if fin is None:
            continue
        F = _fin_offset(dst, c2s)
        if F is None:
            continue
        what = "client's request" if c2s else "server's response"
        src_fin = _fin(src, c2s)
        Fs = _fin_offset(src, c2s)
        acked = _peer_data_acked(src, c2s, until=fin.time)
        if acked > F:
            return _f(pid, "fail", f"truncation: the gateway sent FIN at offset {F} to the "
                      f"{dst.leg} peer (frame {fin.index}) after acknowledging {acked} bytes "
                      f"of the {what} on the {src.leg} leg: {acked - F} byte(s) dropped",
                      _leg_frames(dst.leg, fin.index))
        if src_fin is not None and Fs is not None and src_fin.time <= fin.time and Fs != F:
            return _f(pid, "fail", f"truncation: the gateway's FIN to the {dst.leg} peer "
                      f"(frame {fin.index}) is at offset {F}, the {src.leg} peer's FIN "
                      f"(frame {src_fin.index}) at {Fs}",
                      _leg_frames(dst.leg, fin.index) + _leg_frames(src.leg, src_fin.index))
        delivered = _stream(dst, c2s)
        gaps = [g for g in _gaps(dst, c2s) if g[0] < F]
        dst_acked = _peer_data_acked(dst, c2s)
        missing = (len(delivered), F) if len(delivered) < F else gaps[0] if gaps else None
        ended_by_rst = bool(src.rst or dst.rst)
        if missing and dst_acked < missing[1] and not ended_by_rst:
            return _f(pid, "fail", f"the gateway's FIN to the {dst.leg} peer (frame "
                      f"{fin.index}) follows offsets [{missing[0]}, {missing[1]}) it never "
                      "sent", _leg_frames(dst.leg, fin.index))
        notes.append(f"{'c2s' if c2s else 's2c'} FIN at offset {F}")
    legs = {"client": p.client, "server": p.server}
    client, server = p.client, p.server

    def done() -> bool:
        """A full proxy may keep an idle server connection for reuse once the exchange is
        done (asked only after a peer's RST: comparing the streams is not free)."""
        return client.stream_c2s == server.stream_c2s and \
            client.stream_s2c == server.stream_s2c
    for leg, conn in legs.items():
        other_leg = "server" if leg == "client" else "client"
        other = legs[other_leg]
        # on the client leg the peer is the client (from_client 1); on the server leg the
        # gateway is the client of the connection
        peer_is_client = leg == "client"
        if not conn.rst:
            peer_rst = gw_rst = []
        else:
            peer_rst = [s for s in _sent(conn, peer_is_client) if s.flags & RST]
            gw_rst = [s for s in _sent(conn, not peer_is_client) if s.flags & RST]
        gw_other = _sent(other, other_leg == "server")
        other_rst = bool(other.rst)
        if peer_rst:
            t0 = peer_rst[0].time
            if not _finished_before(other, t0) and not other_rst and not any(
                    s.flags & FIN and s.time >= t0 for s in gw_other) and not (
                    done() and classify(p) == "proxied"):
                return _f(pid, "fail", f"the {leg} peer's RST (frame {peer_rst[0].index}) "
                          f"was not followed by a RST or FIN from the gateway to the "
                          f"{other_leg} peer", _leg_frames(leg, peer_rst[0].index))
            notes.append(f"{leg} peer's RST propagated")
        if gw_rst and not peer_rst:
            t0 = gw_rst[0].time
            if not _finished_before(other, t0) and not other_rst and not any(
                    s.flags & FIN and s.time >= t0 for s in gw_other):
                return _f(pid, "fail", f"the gateway reset the {leg} peer (frame "
                          f"{gw_rst[0].index}) but left the {other_leg} peer open (no RST "
                          "or FIN there)", _leg_frames(leg, gw_rst[0].index))
    return _f(pid, "pass", "; ".join(notes) or "no FIN or RST to propagate")


JUDGES: dict[str, tuple[str, tuple[str, ...], Callable[[Pair, Context], Finding]]] = {
    "cross.pairing": ("Every relayed client connection has a server-leg connection",
                      ("C1.fp",), judge_pairing),
    "cross.stream_c2s": ("Request bytes identical on both legs", ("C1.fp", "C1.j"),
                         judge_stream_c2s),
    "cross.stream_s2c": ("Response bytes identical on both legs", ("C1.fp", "C1.j"),
                         judge_stream_s2c),
    "cross.delayed_binding": ("Server-leg SYN only after the client's request",
                              ("C1.a",), judge_delayed_binding),
    "cross.selection": ("Server chosen per the policy", ("C1.a",), judge_selection),
    "cross.path": ("Path classification: spliced, proxied or handed-off",
                   ("C1.fp", "C1.c"), judge_path),
    "cross.continuity": ("The client's sequence space is unbroken across a handoff",
                         ("C1.g", "C1.i", "C1.h"), judge_continuity),
    "cross.ack_safety": ("A splice never ACKs to the client what the server has not",
                         ("C1.fp", "RFC 9293 §3.10.7.4"), judge_ack_safety),
    "cross.fin_rst": ("FIN/RST propagated without truncation", ("RFC 9293 §3.6",),
                      judge_fin_rst),
}

for _pid, (_title, _serves, _judge) in JUDGES.items():
    register(Property(_pid, _title, "cross", _serves, _judge))


def judge_pair(p: Pair, ctx: Context) -> list[Finding]:
    """Every cross property on one pair, in registration order."""
    return [j(p, ctx) for _, _, j in JUDGES.values()]


__all__ = ["JUDGES", "PATHS", "Pair", "classify", "judge_pair", "pair"]

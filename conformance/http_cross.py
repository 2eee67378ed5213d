"""Cross-leg judges in HTTP terms, for full (L7) proxies.

A full proxy owns both connections: it rewrites heads (HAProxy lowercases field names and
drops Connection), re-frames bodies, and spreads one client connection's requests over
several server connections while reusing one server connection for several clients
(HAProxy ``http-reuse``, nginx ``keepalive``). Pairing by bytes and judging raw offsets then
fails correct proxies, so for a gateway with L7 that does not splice this module pairs
*exchanges* (request line + Host, body digest and response as tie-breakers, in time order)
and judges streams and closes by messages (:mod:`conformance.http_exchanges`). A server
request no client sent, a client request answered without reaching a server, a changed body
byte or a response cut short by the gateway's FIN still fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from conformance import http_exchanges as hx
from conformance.cross_checks import (
    FIN,
    RST,
    Pair,
    _data,
    _frame_at,
    _leg_frames,
    _rel,
    _sent,
    _start_time,
)
from conformance.flows import Conn, Leg
from conformance.properties import Context, Finding


@dataclass
class Exchanges:
    """Which HTTP exchanges a pair carries: (client request index, server request index)
    in the parsed request lists of its two connections, and those left without a match."""

    matched: list[tuple[int, int]] = field(default_factory=list)
    unmatched_client: list[int] = field(default_factory=list)
    unmatched_server: list[int] = field(default_factory=list)
    server_leg: list[Conn] = field(default_factory=list, repr=False)
    """Every server-leg connection (a proxy may retry a request on another one)."""


# ---------------------------------------------------------------------------- parsing


def requests(conn: Conn) -> hx.Parsed:
    got = conn.cache.get("http_req")
    if got is None:
        got = conn.cache["http_req"] = hx.parse_requests(conn.stream_c2s)
    return got  # type: ignore[no-any-return]


def responses(conn: Conn) -> list[hx.Message]:
    """Final responses (1xx interim ones left out), index i answering request i."""
    got = conn.cache.get("http_resp")
    if got is None:
        methods = [m.method for m in requests(conn).messages]
        p = hx.parse_responses(conn.stream_s2c, methods, eof=conn.fin_s is not None)
        got = conn.cache["http_resp"] = (
            [m for m in p.messages if not 100 <= m.status < 200], p.error)
    return got[0]  # type: ignore[no-any-return]


def _resp_error(conn: Conn) -> str:
    responses(conn)
    return conn.cache["http_resp"][1]  # type: ignore[no-any-return]


def time_at(conn: Conn, from_client: bool, offset: int) -> float | None:
    """When the byte at stream ``offset`` was first seen on this leg."""
    best = None
    for s in _data(conn, from_client):
        r = _rel(conn, from_client, s.seq)
        if r is not None and r <= offset < r + len(s.payload) and (best is None or
                                                                   s.time < best):
            best = s.time
    return best


def end_time(conn: Conn, from_client: bool, msg: hx.Message) -> float | None:
    """When a complete message's last byte (or the FIN ending it) was first seen."""
    if msg.end is None:
        return None
    if msg.end == msg.start:
        return time_at(conn, from_client, msg.start)
    t = time_at(conn, from_client, msg.end - 1)
    if t is None and msg.end == msg.head_end:  # no body: the head's end
        t = time_at(conn, from_client, msg.head_end - 1)
    fin = conn.fin_c if from_client else conn.fin_s
    if fin is not None and not msg.chunked and msg.values("content-length") == [] and \
            not msg.request and msg.end == len(conn.stream_s2c):
        t = fin.time if t is None else max(t, fin.time)  # delimited by the close
    return t


# ---------------------------------------------------------------------------- pairing


def applies(p: Pair, ctx: Context, classify: Callable[..., str]) -> bool:
    """Judge ``p`` in HTTP terms: the gateway reads HTTP and this pair is not a splice."""
    caps = ctx.capabilities
    if not caps.l7 or p.client is None or p.server is None:
        return False
    return getattr(p, "http", None) is not None or not caps.splices or \
        classify(p, caps) != "spliced"


def pair_exchanges(client_leg: Leg, server_leg: Leg, ctx: Context,
                   fallback: Callable[[Leg, Leg, Context], list[Pair]]) -> list[Pair]:
    """Pairs of a full proxy's legs, one per (client connection, server connection) that
    share exchanges; connections that carry no parsable request go to ``fallback`` (the
    byte pairing)."""
    policy = ctx.policy
    clients = [c for c in client_leg.conns
               if policy is None or not policy.services() or policy.serves(*c.server)] \
        or list(client_leg.conns)
    http_c = [c for c in clients if requests(c).messages]
    http_s = [s for s in server_leg.conns if requests(s).messages]
    # server requests by key, each (time, server conn, index)
    free: dict[tuple[str, str, str], list[tuple[float, int, int]]] = {}
    for si, s in enumerate(http_s):
        for k, m in enumerate(requests(s).messages):
            t = time_at(s, True, m.start)
            free.setdefault(m.key(), []).append((t if t is not None else _start_time(s),
                                                 si, k))
    for lst in free.values():
        lst.sort()
    todo = []
    for ci, c in enumerate(http_c):
        for k, m in enumerate(requests(c).messages):
            t = time_at(c, True, m.start)
            todo.append((t if t is not None else _start_time(c), ci, k))
    todo.sort()
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    lost: dict[int, list[int]] = {}
    for t, ci, k in todo:
        c = http_c[ci]
        m = requests(c).messages[k]
        cands = free.get(m.key(), [])
        best, score = None, None
        for j, (ts, si, sk) in enumerate(cands):
            if ts < t:
                continue
            s = http_s[si]
            sm = requests(s).messages[sk]
            cr, sr = responses(c), responses(s)
            same_resp = k < len(cr) and sk < len(sr) and cr[k].status == sr[sk].status \
                and cr[k].body == sr[sk].body
            sc = (sm.body != m.body, not same_resp, ts)
            if score is None or sc < score:
                best, score = j, sc
        if best is None:
            lost.setdefault(ci, []).append(k)
            continue
        _, si, sk = cands.pop(best)
        groups.setdefault((ci, si), []).append((k, sk))
    out: list[Pair] = []
    used_s: dict[int, set[int]] = {}
    for (ci, si), ex in sorted(groups.items(), key=lambda g: (http_c[g[0][0]].number,
                                                               http_s[g[0][1]].number)):
        c, s = http_c[ci], http_s[si]
        used_s.setdefault(si, set()).update(sk for _, sk in ex)
        which = ", ".join(f"#{a + 1}->#{b + 1}" for a, b in ex)
        out.append(_pair(c, s, f"paired by HTTP exchanges (client request -> server-leg "
                               f"conn #{s.number} request: {which})", Exchanges(ex),
                         server_leg.conns))
    for ci, ks in sorted(lost.items(), key=lambda g: http_c[g[0]].number):
        c = http_c[ci]
        which = ", ".join(f"#{k + 1} ({requests(c).messages[k].label()})" for k in ks)
        out.append(_pair(c, None, f"request {which} reached no server-leg connection",
                         Exchanges(unmatched_client=ks)))
    for si, s in enumerate(http_s):
        rest = [k for k in range(len(requests(s).messages)) if k not in used_s.get(si, ())]
        if rest:
            which = ", ".join(f"#{k + 1} ({requests(s).messages[k].label()})" for k in rest)
            out.append(_pair(None, s, f"request {which} was sent by no client-leg "
                                      "connection", Exchanges(unmatched_server=rest)))
    # the rest (no parsable request on one side) by bytes
    in_c = set(map(id, http_c))
    in_s = set(map(id, http_s))
    rest_c = [c for c in client_leg.conns if id(c) not in in_c]
    rest_s = [s for s in server_leg.conns if id(s) not in in_s]
    if rest_c or rest_s:
        out += fallback(Leg(client_leg.path, rest_c, [], 0, "client"),
                        Leg(server_leg.path, rest_s, [], 0, "server"),
                        Context(policy=ctx.policy))
    return out


def _pair(c: Conn | None, s: Conn | None, how: str, ex: Exchanges,
          server_leg: list[Conn] | None = None) -> Pair:
    ex.server_leg = server_leg or []
    p = Pair(c, s, how)
    p.http = ex  # type: ignore[attr-defined]
    return p


def matched(p: Pair) -> list[tuple[int, int]]:
    """The pair's exchanges; for a pair made by bytes, message i with message i."""
    ex: Exchanges | None = getattr(p, "http", None)
    if ex is not None:
        return ex.matched
    assert p.client is not None and p.server is not None
    n = min(len(requests(p.client).messages), len(requests(p.server).messages))
    return [(i, i) for i in range(n)]


# ---------------------------------------------------------------------------- judges


def _f(pid: str, verdict: str, detail: str,
       packets: tuple[tuple[str, int], ...] = ()) -> Finding:
    return Finding(pid, verdict, detail, packets)


def judge_pairing(p: Pair, ctx: Context) -> Finding | None:
    """Pairing of an exchange-paired pair (None: not one, the byte judge decides)."""
    pid = "cross.pairing"
    ex: Exchanges | None = getattr(p, "http", None)
    if ex is None:
        return None
    if p.client is not None and p.server is not None:
        return _f(pid, "pass", p.how, _leg_frames("client", p.client.first_frame()) +
                  _leg_frames("server", p.server.first_frame()))
    if p.client is None:
        s = p.server
        assert s is not None
        m = requests(s).messages[ex.unmatched_server[0]]
        fr = _frame_at(s, True, m.start)
        return _f(pid, "fail", f"server-leg {s.name}: request #{ex.unmatched_server[0] + 1} "
                  f"({m.label()}, frame {fr}) matches no request any client sent",
                  _leg_frames("server", fr))
    c = p.client
    resp = responses(c)
    bad = []
    for k in ex.unmatched_client:
        m = requests(c).messages[k]
        if k >= len(resp):
            continue  # never answered: nothing was relayed in its name
        r = resp[k]
        if r.status >= 400:
            continue  # the gateway's own error (400 unparsable, 503 no server)
        bad.append((k, m, r))
    if not bad:
        return _f(pid, "pass", f"{c.name}: {p.how}, but it was never answered or answered by "
                  "the gateway itself with an error", _leg_frames("client", c.first_frame()))
    k, m, r = bad[0]
    fr = _frame_at(c, False, r.start)
    return _f(pid, "fail", f"{c.name}: request #{k + 1} ({m.label()}) was answered "
              f"({r.status}, client frame {fr}) but no server-leg connection carries it",
              _leg_frames("client", _frame_at(c, True, m.start), fr))


def judge_stream(p: Pair, c2s: bool, byte: Finding) -> Finding:
    """HTTP equivalence of one direction, after byte identity failed (or for a pair that
    carries only some of its connections' exchanges)."""
    assert p.client is not None and p.server is not None
    pid = byte.property
    c, s = p.client, p.server
    what = "request" if c2s else "response"
    errs = [e for e in ((requests(c).error, requests(s).error) if c2s else
                        (_resp_error(s), _resp_error(c))) if e]
    ex = matched(p)
    if c2s:
        sent = [requests(c).messages[a] for a, _ in ex]
        got = [requests(s).messages[b] for _, b in ex]
        dst, dleg = s, "server"
    else:
        sr, cr = responses(s), responses(c)
        sent, got, own = [], [], []
        for a, b in ex:
            rs = sr[b] if b < len(sr) else None
            rc = cr[a] if a < len(cr) else None
            if rc is not None and rc.complete and rc.status in hx.GATEWAY_ERRORS and (
                    rs is None or not rs.complete) and (s.rst or s.fin_s is not None):
                own.append(f"#{a + 1}: the gateway's own {rc.status} after the server "
                           f"{'reset' if s.rst else 'closed'}")
                continue
            if rs is None:
                if rc is not None:
                    fr = _frame_at(c, False, rc.start)
                    return _f(pid, "fail", f"response to request #{a + 1} ({rc.status}, "
                              f"client frame {fr}) was never sent by the server",
                              _leg_frames("client", fr))
                continue
            sent.append(rs)
            if rc is not None:
                got.append(rc)
        dst, dleg = c, "client"
    bad = requests(s).error if c2s else _resp_error(c)  # the delivered side
    if bad:
        off = requests(s).rest if c2s else None
        fr = _frame_at(dst, c2s, off) if off is not None else None
        return _f(pid, "fail", f"not HTTP-equivalent: the {dleg} leg carries bytes that are "
                  f"not an HTTP/1.x {what} ({bad}); bytes: {byte.detail}",
                  _leg_frames(dleg, fr) + byte.packets)
    # pair each sent message with the delivered one at its place
    cmp = hx.compare(sent, got, what)
    if not cmp.ok:
        fr = _frame_at(dst, c2s, cmp.offset) if cmp.offset is not None else None
        return _f(pid, "fail", f"not HTTP-equivalent: {cmp.detail} ({dleg} leg frame {fr}); "
                  f"bytes: {byte.detail}", _leg_frames(dleg, fr) + byte.packets)
    detail = cmp.detail
    if not c2s and own:
        detail += "; " + "; ".join(own)
    if errs:
        detail += f"; beyond the exchanges: {errs[0]}"
    return _f(pid, "pass", detail)


def _done(p: Pair, t: float | None = None) -> bool:
    """Every exchange of the pair relayed completely (by time ``t``)."""
    assert p.client is not None and p.server is not None
    cr = responses(p.client)
    for a, _ in matched(p):
        if a >= len(cr) or not cr[a].complete:
            return False
        if t is not None:
            e = end_time(p.client, False, cr[a])
            if e is None or e > t:
                return False
    return True


def _server_done(p: Pair, t: float) -> bool:
    """The server had sent every response of the pair completely by ``t``."""
    assert p.server is not None
    sr = responses(p.server)
    for _, b in matched(p):
        if b >= len(sr) or not sr[b].complete:
            return False
        e = end_time(p.server, False, sr[b])
        if e is None or e > t:
            return False
    return True


def _closed_after(conn: Conn, gateway_is_client: bool, t0: float) -> bool:
    """The gateway sent FIN or RST on ``conn`` at or after ``t0`` (or it had ended)."""
    return any(seg.flags & (FIN | RST) and seg.time >= t0
               for seg in _sent(conn, gateway_is_client)) or bool(
        conn.fin_c is not None and conn.fin_s is not None and
        max(conn.fin_c.time, conn.fin_s.time) <= t0)


def judge_fin_rst(p: Pair, ctx: Context) -> Finding:
    """FIN/RST in message terms: the gateway's FIN to the client follows every response the
    server had completed; a reset mid-exchange is passed on; connection management between
    exchanges is each hop's own (a proxy keeps or closes idle connections at will)."""
    pid = "cross.fin_rst"
    assert p.client is not None and p.server is not None
    c, s = p.client, p.server
    notes = []
    ex = matched(p)
    cr, sr = responses(c), responses(s)
    fin = c.fin_s  # the gateway's FIN to the client
    if fin is not None:
        for a, b in ex:
            if b >= len(sr) or not sr[b].complete:
                continue
            te = end_time(s, False, sr[b])
            if te is None or te > fin.time:
                continue
            rc = cr[a] if a < len(cr) else None
            if rc is None or not rc.complete or (rc.end or 0) > len(c.stream_s2c):
                have = len(rc.body) if rc is not None else 0
                return _f(pid, "fail", f"truncation: response #{a + 1} ({sr[b].status}, "
                          f"{len(sr[b].body)} body bytes) was complete on the server leg "
                          f"before the gateway's FIN to the client (frame {fin.index}), which "
                          f"got {'no response' if rc is None else f'{have} body bytes'}",
                          _leg_frames("client", fin.index))
        notes.append("FIN to the client after every completed response")
    fin = s.fin_c  # the gateway's FIN to the server
    if fin is not None:
        rq_c, rq_s = requests(c).messages, requests(s).messages
        for a, b in ex:
            if not rq_c[a].complete:
                continue
            tc = end_time(c, True, rq_c[a])
            if tc is not None and tc <= fin.time and not rq_s[b].complete:
                return _f(pid, "fail", f"truncation: request #{a + 1} ({rq_c[a].label()}) "
                          f"was complete on the client leg before the gateway's FIN to the "
                          f"server (frame {fin.index}), which got "
                          f"{len(rq_s[b].body)} of its {len(rq_c[a].body)} body bytes",
                          _leg_frames("server", fin.index))
    # resets: only an unfinished exchange must be ended on the other leg
    for leg, conn, other, other_leg in (("client", c, s, "server"), ("server", s, c, "client")):
        if not conn.rst:
            continue
        peer_is_client = leg == "client"
        peer_rst = [x for x in _sent(conn, peer_is_client) if x.flags & RST]
        gw_rst = [x for x in _sent(conn, not peer_is_client) if x.flags & RST]
        gw_is_client_other = other_leg == "server"
        for kind, rsts in (("peer", peer_rst), ("gateway", gw_rst)):
            if not rsts or (kind == "gateway" and peer_rst):
                continue
            t0 = rsts[0].time
            if _done(p, t0) or (leg == "client" and _server_done(p, t0) and kind == "peer"):
                notes.append(f"{leg} {kind} RST after the exchanges were done")
                continue
            if leg == "server" and kind == "gateway" and _server_done(p, t0):
                # Every response was whole on the server leg: the server's part is over, and
                # resetting its connection is connection management (HAProxy does so while
                # it still delivers the response). Whether the client gets all of it is
                # judged by the streams and by the FIN rule above.
                notes.append("gateway RST to the server after its responses were complete")
                continue
            if other.rst or _closed_after(other, gw_is_client_other, t0):
                notes.append(f"{leg} {kind} RST passed on")
                continue
            if leg == "server" and _own_error(p):
                notes.append("server RST answered with the gateway's own error response")
                continue
            retry = _retry(p, t0) if leg == "server" else None
            if retry is not None:
                return _f(pid, "unknown", f"the server peer's RST (frame {rsts[0].index}) "
                          f"came mid-exchange; the gateway retried on {retry.name} (a proxy "
                          "may retry an idempotent request, RFC 9110 §9.2.2), which the "
                          "capture does not show answered, so whether the client is "
                          "answered or closed cannot be judged",
                          _leg_frames("server", rsts[0].index, retry.first_frame()))
            who = f"the {leg} peer's RST" if kind == "peer" else f"the gateway's RST to " \
                f"the {leg} peer"
            return _f(pid, "fail", f"{who} (frame {rsts[0].index}) came mid-exchange, yet "
                      f"the gateway neither reset nor closed the {other_leg} peer",
                      _leg_frames(leg, rsts[0].index))
    return _f(pid, "pass", "; ".join(notes) or "no FIN or RST to propagate (HTTP terms)")


def _retry(p: Pair, t0: float) -> Conn | None:
    """A server-leg connection the gateway opened after ``t0`` (a retry)."""
    ex: Exchanges | None = getattr(p, "http", None)
    for s in ex.server_leg if ex is not None else ():
        if s is not p.server and s.syn_time is not None and s.syn_time >= t0:
            return s
    return None


def _own_error(p: Pair) -> bool:
    assert p.client is not None
    cr = responses(p.client)
    return any(a < len(cr) and cr[a].complete and cr[a].status in hx.GATEWAY_ERRORS
               for a, _ in matched(p))


def request_start(p: Pair) -> int:
    """Stream offset of the client request of the pair's first exchange (selection judges
    the request this server connection was chosen for)."""
    ex: Exchanges | None = getattr(p, "http", None)
    if ex is None or not ex.matched or p.client is None:
        return 0
    return requests(p.client).messages[ex.matched[0][0]].start


def reused(p: Pair) -> bool:
    """The server connection served earlier exchanges before this pair's first one."""
    ex: Exchanges | None = getattr(p, "http", None)
    return ex is not None and bool(ex.matched) and ex.matched[0][1] > 0


__all__ = ["Exchanges", "applies", "judge_fin_rst", "judge_pairing", "judge_stream",
           "pair_exchanges", "request_start", "requests", "responses", "reused"]

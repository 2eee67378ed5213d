"""The conformance case catalog: what each case does to the gateway and what it judges.

Every case has an ID and a slug (``TC07``, ``split-2``), the claim-1 elements and RFC
requirements it checks (``serves``: the docs' traceability matrix places each case by these),
a stimulus (:mod:`conformance.stimulus`: real kernel peers, or a script where the harness plays
the client and/or the server), and the properties (:mod:`conformance.properties`) it is about.
Every case runs on IPv4 and on IPv6 (``TC07[v6]``).

Judging: the trace checker judges *every* property on both legs of every case; a case fails if
its stimulus failed (a response not byte-exact, a script expectation unmet), if any property
fails, or if the connections' path class is not what the gateway's capabilities predict
(:func:`expected_path`). ``focus`` lists the properties the case exists to exercise: the report
shows them first, and a focus property that comes out ``n/a`` on a gateway it applies to is
reported, since the case then tested nothing of what it is for.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.stimulus import Connection, Impairment, RealPeer, Request, Scripted, Stimulus

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    name: str
    title: str
    description: str
    serves: tuple[str, ...]
    stimulus: Stimulus
    focus: tuple[str, ...]
    fast_path: bool | None = True
    """Whether a fast-path (delayed-binding, splicing) gateway should keep this connection on
    the fast path (True: spliced), hand it to its normal path (False: handed-off), or None
    when no path is predicted (the connection may be refused or reset before any server)."""
    needs: frozenset[str] = frozenset()
    """Capabilities the gateway must have for the case to apply, e.g. ``l7`` for routing by
    Host or path; otherwise the case is skipped with that reason."""
    families: tuple[int, ...] = (4, 6)
    family_note: str = ""
    """Why the case does not run on a family it leaves out."""

    @property
    def properties(self) -> tuple[str, ...]:
        return self.focus


def expected_path(case: Case, splices: bool, delayed_binding: bool) -> str | None:
    """The path class (``cross.path``) a gateway with these capabilities must show.

    A splicing gateway with delayed binding (a fast path) splices what its fast path can
    process and hands the rest to its normal path; a splicing gateway without delayed binding
    (SYNPROXY + DNAT) splices everything; a gateway that does not splice proxies everything.
    """
    if case.fast_path is None:
        return None
    if not splices:
        return "proxied"
    if not delayed_binding:
        return "spliced"
    return "spliced" if case.fast_path else "handed-off"


def _py(*conns: Connection, **kw: object) -> RealPeer:
    return RealPeer(client="python", connections=conns, **kw)  # type: ignore[arg-type]


def _get(size: int = 1024, **kw: object) -> Connection:
    return Connection(requests=(Request(size=size),), **kw)  # type: ignore[arg-type]


STREAMS = ("cross.stream_c2s", "cross.stream_s2c")
SPLICE = ("cross.path", "cross.ack_safety", "cross.delayed_binding", *STREAMS)
HANDOFF = ("cross.path", "cross.continuity", *STREAMS)
LOSSY = ("leg.seq", "leg.ack_unseen", "leg.window", *STREAMS)
HANDOFF_CLAIM = ("C1.a", "C1.b", "C1.c", "C1.d", "C1.e", "C1.f", "C1.g", "C1.h", "C1.i",
                 "C1.j")
_REORDER = Impairment(reorder=0.03, duplicate=0.02, seed=5)


def _catalog() -> tuple[Case, ...]:
    c = Case
    return (
        # --- the fast path: real kernel peers ------------------------------------------
        c("TC01", "get-1k", "Ordinary GET of 1 KiB",
          "curl GETs /size/1024 on a connection of its own; a fast path answers the handshake, "
          "binds after the request and splices.",
          ("C1.fp", "C1.a", "RFC 9293 §3.5"), RealPeer(), SPLICE),
        c("TC02", "get-1b", "GET of a 1-byte body",
          "The smallest response: one data byte each way after the head.",
          ("C1.fp", "RFC 9293 §3.8"), RealPeer(connections=(_get(1),)), SPLICE),
        c("TC03", "get-10m", "10 MiB response",
          "Bulk transfer through the splice: windows, MSS and SACK translated on thousands of "
          "segments.",
          ("C1.fp", "RFC 9293 §3.8.6", "RFC 7323 §2"),
          RealPeer(connections=(_get(10 * MiB),)), (*SPLICE, "leg.window", "leg.mss")),
        c("TC04", "keepalive", "Three requests on one keep-alive connection",
          "The second and third requests ride on a connection already spliced to one server.",
          ("C1.fp", "RFC 9293 §3.8"),
          _py(Connection(requests=(Request(1024, close=False), Request(100_000, close=False),
                                   Request(2048)))), SPLICE),
        c("TC05", "route-path", "Path rule selects the pool",
          "GET /api/... must reach the api pool (delayed binding on the request line).",
          ("C1.a", "RFC 9293 §3.5"),
          RealPeer(connections=(Connection(requests=(Request(path="/api/v1/items"),)),)),
          ("cross.selection", "cross.delayed_binding", *STREAMS), needs=frozenset({"l7"})),
        c("TC06", "route-host", "Host rule selects the pool",
          "Host: api.example must reach the api pool whatever the path.",
          ("C1.a", "RFC 9293 §3.5"),
          _py(Connection(requests=(Request(1024, host="api.example"),))),
          ("cross.selection", "cross.delayed_binding", *STREAMS), needs=frozenset({"l7"})),
        c("TC07", "split-2", "Request in two segments",
          "The request line is cut after 9 bytes (TCP_NODELAY, two writes): a fast path "
          "cannot pick a server from a partial URI and hands the session to its normal "
          "path, which takes over the client's sequence space.",
          HANDOFF_CLAIM, _py(_get(5000, split_at=(9,))), HANDOFF, fast_path=False),
        c("TC08", "split-3", "Request in three segments",
          "Cut at bytes 4 and 20: the normal path must reassemble before it selects.",
          HANDOFF_CLAIM, _py(_get(7000, split_at=(4, 20))), HANDOFF, fast_path=False),
        c("TC09", "no-sack", "Client without SACK",
          "net.ipv4.tcp_sack=0 in the client: no SACK-permitted in its SYN, so no SACK "
          "blocks may reach it.",
          ("C1.fp", "RFC 2018 §2"),
          RealPeer(connections=(_get(MiB),), client_sysctls=(("net.ipv4.tcp_sack", "0"),)),
          ("leg.options", *SPLICE)),
        c("TC10", "no-timestamps", "Client without timestamps",
          "net.ipv4.tcp_timestamps=0: no TSopt may be sent to it after the handshake.",
          ("C1.fp", "RFC 7323 §3.2"),
          RealPeer(connections=(_get(MiB),),
                   client_sysctls=(("net.ipv4.tcp_timestamps", "0"),)),
          ("leg.options", "leg.ts_monotonic", *SPLICE)),
        c("TC11", "no-wscale", "Client without window scaling",
          "net.ipv4.tcp_window_scaling=0: windows towards it are unscaled 16-bit values.",
          ("C1.fp", "RFC 7323 §2.2"),
          RealPeer(connections=(_get(MiB),),
                   client_sysctls=(("net.ipv4.tcp_window_scaling", "0"),)),
          ("leg.window", "leg.options", *SPLICE)),
        c("TC12", "small-mss", "Client MSS 536",
          "TCP_MAXSEG 536 on the client: segments towards it must respect the MSS it "
          "announced (super-frames aside).",
          ("C1.fp", "RFC 9293 §3.7.1", "RFC 6691"),
          _py(_get(MiB), maxseg=536), ("leg.mss", *SPLICE)),
        c("TC13", "loss-client", "2% loss on the client leg",
          "Seeded loss on the client leg for a 1 MiB response: retransmissions relayed, "
          "streams byte-exact.",
          ("C1.fp", "RFC 9293 §3.8.1", "RFC 6298"),
          RealPeer(connections=(_get(MiB),),
                   impair=(("client", Impairment(loss=0.02, seed=3)),)), (*LOSSY, *SPLICE)),
        c("TC14", "loss-server", "2% loss on the server leg",
          "Seeded loss on the server leg for a 1 MiB response.",
          ("C1.fp", "RFC 9293 §3.8.1", "RFC 6298"),
          RealPeer(connections=(_get(MiB),),
                   impair=(("server", Impairment(loss=0.02, seed=4)),)), (*LOSSY, *SPLICE)),
        c("TC15", "reorder-dup", "Reordering and duplication on both legs",
          "3% reordering and 2% duplication on each leg for a 1 MiB response.",
          ("C1.fp", "RFC 9293 §3.10.7.4"),
          RealPeer(connections=(_get(MiB),),
                   impair=(("client", _REORDER), ("server", _REORDER))), (*LOSSY, *SPLICE)),
        c("TC16", "delay-jitter", "Delay with jitter on both legs",
          "5 ms +- 3 ms on each leg: reordering by timing, RTT estimates on both sides.",
          ("C1.fp", "RFC 9293 §3.8.1"),
          RealPeer(connections=(_get(256 * 1024),),
                   impair=(("client", Impairment(delay_ms=5, jitter_ms=3, seed=6)),
                           ("server", Impairment(delay_ms=5, jitter_ms=3, seed=7)))),
          (*LOSSY, *SPLICE)),
        c("TC17", "concurrent", "40 concurrent connections",
          "40 connections at once, each one GET: pairing, selection and splices must not "
          "mix sessions.",
          ("C1.fp", "C1.a", "RFC 9293 §3.5"),
          RealPeer(client="python", connections=tuple(_get(2000 + 7 * i) for i in range(40))),
          ("cross.pairing", "cross.selection", *SPLICE)),
        c("TC18", "half-close", "Client half-closes after the request",
          "shutdown(SHUT_WR) right after the request: the FIN must reach the server after "
          "the request and the whole response must still reach the client.",
          ("RFC 9293 §3.6", "C1.fp"),
          _py(Connection(requests=(Request(64 * 1024),), half_close=True)),
          ("cross.fin_rst", "leg.fin", *STREAMS), fast_path=None),
        c("TC19", "server-close", "Server closes after the response",
          "HTTP/1.0: the server sends FIN after the body; the FIN must reach the client "
          "after every byte (no truncation).",
          ("RFC 9293 §3.6", "C1.fp"),
          _py(Connection(requests=(Request(300_000, version="HTTP/1.0"),))),
          ("cross.fin_rst", "leg.fin", *SPLICE)),
        c("TC20", "client-abort", "Client resets part way through a response",
          "The client reads 64 KiB of a 10 MiB response, then closes with SO_LINGER 0: the "
          "RST must end the server side too.",
          ("RFC 9293 §3.5.2", "C1.fp"),
          _py(Connection(requests=(Request(10 * MiB),), abort_after=64 * 1024)),
          ("cross.fin_rst", "leg.rst_window"), fast_path=None),
        c("TC21", "post-body", "POST with a 64 KiB body",
          "The request head fits the first segment and the body follows in many segments: "
          "the client-to-server stream must arrive byte for byte.",
          ("C1.fp", "RFC 9293 §3.8"),
          _py(Connection(requests=(Request(path="/upload", method="POST", body=64 * 1024),))),
          ("cross.stream_c2s", "leg.window", *SPLICE)),
        c("TC22", "pipelined", "Two pipelined requests",
          "Both requests in one write: the first segment carries a whole request and part "
          "of the next.",
          ("C1.fp", "RFC 9293 §3.8"),
          _py(Connection(requests=(Request(4096, close=False), Request(8192)),
                         pipeline=True)), SPLICE),
        # --- scripted: the harness plays client and/or server -------------------------
        c("TC23", "s-split-method", "Request cut inside the method",
          "The scripted client sends 'GE' then the rest: the smallest partial request.",
          HANDOFF_CLAIM, Scripted("split-request", (("splits", (2,)),),
                                  summary="request cut after 2 bytes"), HANDOFF,
          fast_path=False),
        c("TC24", "s-ooo-first", "First data out of order",
          "The request's second half arrives before its first: a fast path must not buffer "
          "it and hands over; the normal path reassembles.",
          HANDOFF_CLAIM, Scripted("out-of-order-first-data", summary="second half first"),
          HANDOFF, fast_path=False),
        c("TC25", "s-overlap", "Overlapping retransmission",
          "A retransmission overlaps bytes already sent (same bytes): the stream must keep "
          "them once.",
          ("RFC 9293 §3.10.7.4", "C1.j"),
          Scripted("overlapping-retransmission", summary="overlap of 10 bytes"),
          ("leg.seq", *STREAMS), fast_path=None),
        c("TC26", "s-fragments", "Request in IP fragments",
          "The request segment arrives as IP fragments: the fast path hands it over, the "
          "normal path reassembles.",
          HANDOFF_CLAIM, Scripted("ip-fragments", summary="fragments of 40 bytes"),
          HANDOFF, fast_path=False, families=(4,),
          family_note="IPv6 fragments: the reference gateway does not reassemble IPv6 "
                      "fragments yet (it counts and drops them), so there is no known-good "
                      "behaviour to hold other gateways to"),
        c("TC27", "s-unknown-option", "Unsupported TCP option",
          "The request segment carries an option the fast path does not support "
          "(kind 253, RFC 6994 experimental).",
          HANDOFF_CLAIM, Scripted("unsupported-option", summary="option kind 253 on the request"),
          (*HANDOFF, "leg.options"), fast_path=False),
        c("TC28", "s-zero-window", "Client closes its window, then opens it",
          "The client advertises a zero window after the request: nothing but 1-byte probes "
          "may reach it until it opens.",
          ("RFC 9293 §3.8.6.1", "C1.fp"),
          Scripted("zero-window", summary="window 0 for 1 s"), ("leg.window", *STREAMS),
          fast_path=None),
        c("TC29", "s-rst-in-window", "RST in window from the client",
          "An in-window RST after the request must end both sides.",
          ("RFC 9293 §3.5.3", "RFC 5961 §3"),
          Scripted("rst-in-window", plays=("client", "server"), summary="RST at RCV.NXT"),
          ("cross.fin_rst", "leg.rst_window"),
          fast_path=None),
        c("TC30", "s-rst-out-of-window", "RST out of window from the client",
          "An RST far outside the window must be ignored (RFC 5961): the response still "
          "arrives.",
          ("RFC 9293 §3.5.3", "RFC 5961 §3"),
          Scripted("rst-out-of-window", (("survive", True),), plays=("client", "server"),
                   summary="RST 1 GiB beyond the window"),
          ("leg.rst_window", *STREAMS), fast_path=None),
        c("TC31", "s-sack-holes", "Client SACKs with holes",
          "The client acknowledges the response with SACK blocks above a hole: the blocks "
          "must be translated and the hole retransmitted.",
          ("RFC 2018 §3", "C1.fp"),
          Scripted("sack-holes", summary="SACK blocks above 2 holes"),
          ("leg.options", *STREAMS), fast_path=None),
        c("TC32", "s-fin-race", "Client and server close at once",
          "Simultaneous FINs from the scripted client and the scripted server after the "
          "response: both FINs relayed, both acknowledged.",
          ("RFC 9293 §3.6",),
          Scripted("fin-race", plays=("client", "server"), summary="FIN from both ends"),
          ("cross.fin_rst", "leg.fin"), fast_path=None),
        c("TC33", "s-keepalive-second", "Second request on a spliced connection",
          "After the first response, a second request on the same connection: it must "
          "reach the same server through the splice.",
          ("C1.fp", "RFC 9293 §3.8"),
          Scripted("keep-alive", summary="two requests, one connection"),
          ("cross.path", *STREAMS)),
        c("TC34", "s-dup-syn", "Duplicate SYN",
          "The client retransmits its SYN: the gateway must answer with the same ISN, one "
          "connection results.",
          ("RFC 9293 §3.5", "C1.fp"),
          Scripted("duplicate-syn", summary="SYN twice"), ("leg.handshake", *STREAMS)),
        c("TC35", "s-server-rst", "Server resets after the request",
          "The scripted server answers the request with an RST: the client must see an RST "
          "(or a clean close), never a hang or a half response passed as whole.",
          ("RFC 9293 §3.5.3",),
          Scripted("server-resets", plays=("client", "server"),
                   summary="server RSTs after the request"), ("cross.fin_rst",),
          fast_path=None),
        c("TC36", "s-server-wscale", "Server with another window scale",
          "The scripted server answers with window scale 2 where the client got 7 from the "
          "gateway: every window must be rescaled on the way.",
          ("C1.fp", "RFC 7323 §2.3"),
          Scripted("server-window-scale", plays=("client", "server"),
                   summary="server: window scale 2"),
          ("leg.options", "leg.window", *STREAMS)),
        c("TC37", "s-server-no-sack", "Server without SACK",
          "The scripted server refuses SACK the client was promised: no SACK blocks may reach "
          "it, whatever the client sends.",
          ("C1.fp", "RFC 2018 §2"),
          Scripted("server-no-sack", plays=("client", "server"), summary="server: no SACK"),
          ("leg.options", *STREAMS)),
        c("TC38", "s-server-no-ts", "Server without timestamps",
          "The scripted server refuses timestamps: the gateway must either carry on without "
          "passing TSopts to it, or refuse cleanly with an RST to both sides.",
          ("C1.fp", "RFC 7323 §3.2"),
          Scripted("server-no-timestamps", plays=("client", "server"),
                   summary="server: no timestamps"),
          ("leg.options", "cross.fin_rst"), fast_path=None),
        c("TC39", "s-request-fin", "Request and FIN in one segment",
          "The whole request with FIN set: the response must still come back, then FIN.",
          ("RFC 9293 §3.6", "C1.a"),
          Scripted("request-with-fin", summary="request segment with FIN"),
          ("cross.fin_rst", *STREAMS), fast_path=None),
    )


CASES: tuple[Case, ...] = _catalog()
"""The catalog, in run order."""


def by_name() -> dict[str, Case]:
    return {case.name: case for case in CASES}


def select(pattern: str | None) -> list[Case]:
    """Cases whose ID, name or title contains ``pattern`` (any case); ``a,b`` is either;
    None or empty: all."""
    if not pattern:
        return list(CASES)
    keys = [p.strip().lower() for p in pattern.split(",") if p.strip()]
    return [c for c in CASES if any(k in c.id.lower() or k in c.name or k in c.title.lower()
                                    for k in keys)]

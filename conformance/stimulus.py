"""What a conformance case does to the gateway under test: the stimulus, as plain data.

Two kinds, as the issue asks. :class:`RealPeer` drives real kernel TCP stacks (curl or the
Python client of :mod:`conformance.peer_client` in the client namespace, the lab's HTTP servers
behind the gateway), shaped with per-namespace sysctls, ``TCP_MAXSEG`` and the lab's seeded
impairment nodes. :class:`Scripted` names a script of :mod:`conformance.script`, where the
harness itself plays the client and/or the server on raw sockets, for segments kernels will not
produce on demand. Both are frozen data so the catalog can be listed, documented and filtered
without a lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Client = Literal["curl", "python"]


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request on a connection. ``size`` is the ``/size/N`` the lab servers answer
    with N bytes of :func:`reference.gateway.sim.response_body`; ``path`` overrides it."""

    size: int = 1024
    path: str | None = None
    method: str = "GET"
    host: str | None = None
    """Host header; None: the VIP literal."""
    body: int = 0
    """Request body bytes (Content-Length), e.g. for a POST."""
    version: str = "HTTP/1.1"
    close: bool | None = None
    """``Connection: close`` on this request; None: on the connection's last request."""

    @property
    def target(self) -> str:
        return self.path if self.path is not None else f"/size/{self.size}"

    @property
    def expects_body(self) -> bool:
        """Whether the response body is the ``/size/N`` body (checked byte for byte)."""
        return self.path is None and self.method in ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class Connection:
    """The requests of one client connection and how the client writes and ends it."""

    requests: tuple[Request, ...] = (Request(),)
    split_at: tuple[int, ...] = ()
    """Write the first request in pieces cut at these byte offsets, with a pause between
    (TCP_NODELAY, so each piece is its own segment)."""
    pipeline: bool = False
    """Write every request at once before reading any response."""
    half_close: bool = False
    """shutdown(SHUT_WR) right after the last request (FIN while the response is pending)."""
    abort_after: int | None = None
    """Read this many response bytes, then close with SO_LINGER 0 (an RST)."""


@dataclass(frozen=True, slots=True)
class Impairment:
    """Settings of one leg's impairment node (see :meth:`reference.lab.Lab.set_impairment`)."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    seed: int = 1

    def as_kwargs(self) -> dict[str, Any]:
        return {"seed": self.seed, "loss": self.loss, "duplicate": self.duplicate,
                "reorder": self.reorder, "delay_ms": self.delay_ms,
                "jitter_ms": self.jitter_ms}


@dataclass(frozen=True, slots=True)
class RealPeer:
    """Real kernel client(s) through the VIP to the lab's HTTP servers."""

    client: Client = "curl"
    connections: tuple[Connection, ...] = (Connection(),)
    parallel: bool = True
    """Run the connections at once (else one after the other)."""
    client_sysctls: tuple[tuple[str, str], ...] = ()
    """e.g. ``(("net.ipv4.tcp_sack", "0"),)``; restored after the case. The ``net.ipv4.tcp_*``
    keys apply to IPv6 TCP as well."""
    maxseg: int | None = None
    """TCP_MAXSEG on the client socket (the MSS it announces)."""
    impair: tuple[tuple[str, Impairment], ...] = ()
    """(leg, settings) for the lab's impairment nodes; reset after the case."""
    timeout: float = 60.0

    @property
    def kind(self) -> str:
        return "real peers"

    def describe(self) -> str:
        n = len(self.connections)
        reqs = sum(len(c.requests) for c in self.connections)
        bits = [f"{self.client}, {n} connection{'s' * (n != 1)}, {reqs} request"
                f"{'s' * (reqs != 1)}"]
        if self.client_sysctls:
            bits.append(", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in
                                  self.client_sysctls))
        if self.maxseg:
            bits.append(f"TCP_MAXSEG {self.maxseg}")
        for leg, imp in self.impair:
            parts = [f"{name} {value:g}{unit}" for name, value, unit in (
                ("loss", imp.loss * 100, "%"), ("dup", imp.duplicate * 100, "%"),
                ("reorder", imp.reorder * 100, "%"), ("delay", imp.delay_ms, " ms"),
                ("jitter", imp.jitter_ms, " ms")) if value]
            bits.append(f"{leg} leg: {', '.join(parts)}")
        return "; ".join(bits)


@dataclass(frozen=True, slots=True)
class Scripted:
    """A script of :mod:`conformance.script`: ``factory`` names its ready-script function,
    ``params`` are its keyword arguments."""

    factory: str
    params: tuple[tuple[str, Any], ...] = ()
    plays: tuple[str, ...] = ("client",)
    """Which peers the harness plays: ``client`` and/or ``server``."""
    summary: str = ""

    @property
    def kind(self) -> str:
        return "scripted"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def describe(self) -> str:
        who = " and ".join(self.plays)
        return f"scripted {who}: {self.summary or self.factory}"


Stimulus = RealPeer | Scripted


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the stimulus itself went, before any trace is judged: each response checked
    against what the lab server sends (status, X-Server, length, sha256), or the script's own
    expectations."""

    ok: bool
    detail: str
    responses: tuple[dict[str, Any], ...] = field(default=())
    log: tuple[str, ...] = field(default=())

"""Delayed binding: which server a session goes to, once its first request head is read.

Pure and deterministic, so that a trace replays to the same servers: the virtual service is
found by the VIP and port the client connected to; its rules, in order, pick a pool (a rule
matches when every condition it has matches), else its ``default_pool`` applies; then the
pool's method picks a server. Round robin keeps one counter per pool name (services sharing
a pool share its turn); hash uses CRC-32 of ``"address:port"`` of the client, never Python's
per-process randomized ``hash()``, so a client keeps its server across restarts.

Hosts compare as :func:`normalize_host` makes them (any case, no port, no final dot). A path
prefix is matched against the raw path of the target (no percent-decoding, no dot-segment
removal), which for an absolute-form target ("http://host/path") is the part after the
authority.

:mod:`reference.gateway.config` re-exports :class:`Selector`, :class:`Counters`,
:func:`select` and :func:`service_for`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config re-exports this module's API, so it cannot be imported back here
    from reference.gateway.config import GatewayConfig, Pool, Server, VirtualService
    from spec.eligibility import RequestHead


def normalize_host(host: str) -> str:
    """The form Host values are compared in: lower case, no port, no final dot."""
    h = host.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        h = h[: end + 1] if end >= 0 else h
    elif h.count(":") == 1:
        h = h.partition(":")[0]
    return h.removesuffix(".")


class Counters:
    """Round-robin positions, one per pool name, starting at the pool's first server."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def take(self, pool: str) -> int:
        """This pool's turn number, then advance it."""
        turn = self._next.get(pool, 0)
        self._next[pool] = turn + 1
        return turn


def service_for(config: GatewayConfig, vip: str, port: int) -> VirtualService | None:
    """The virtual service on ``vip``:``port`` (any textual form of the address), or None."""
    try:
        address = str(ipaddress.ip_address(vip))
    except ValueError:
        return None
    return next((s for s in config.services if s.vip == address and s.port == port), None)


def request_path(target: bytes) -> str:
    """The path of a request target: origin-form up to '?', absolute-form after the
    authority ('/' when it has none); '*' and authority-form keep no leading '/'."""
    text = target.decode("latin-1")
    if text[:7].lower() == "http://" or text[:8].lower() == "https://":
        rest = text.partition("//")[2]
        end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
        text = rest[end:] if rest[end:end + 1] == "/" else "/"
    return text.partition("?")[0].partition("#")[0]


def pool_for(service: VirtualService, head: RequestHead) -> str:
    """The pool of the first rule the request matches, else the service's default pool."""
    host = normalize_host(head.host.decode("latin-1"))
    path = request_path(head.target)
    for rule in service.rules:
        if rule.host is not None and rule.host != host:
            continue
        if rule.path_prefix is not None and not path.startswith(rule.path_prefix):
            continue
        return rule.pool
    return service.default_pool


def client_hash(client: tuple[str, int]) -> int:
    """A hash of the client's address and port that is the same in every process."""
    address, port = client
    with contextlib.suppress(ValueError):
        address = str(ipaddress.ip_address(address))
    return zlib.crc32(f"{address}:{port}".encode())


def server_from(pool: Pool, client: tuple[str, int], counter: Counters) -> Server:
    """One of ``pool``'s servers by its method (advances the round robin)."""
    turn = client_hash(client) if pool.method == "hash" else counter.take(pool.name)
    return pool.servers[turn % len(pool.servers)]


def select(service: VirtualService, head: RequestHead, client: tuple[str, int],
           pools: Mapping[str, Pool], *, counter: Counters) -> Server:
    """The server for a session's first request."""
    return server_from(pools[pool_for(service, head)], client, counter)


class Selector:
    """Selection for one config, owning its round-robin counters."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.counters = Counters()

    def service_for(self, vip: str, port: int) -> VirtualService | None:
        return service_for(self.config, vip, port)

    def pick(self, service: VirtualService, head: RequestHead,
             client: tuple[str, int]) -> tuple[str, Server]:
        """The pool's name and the server for a session's first request."""
        name = pool_for(service, head)
        return name, server_from(self.config.pools[name], client, self.counters)

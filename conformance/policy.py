"""The selection policy a trace is judged against: which servers a connection may go to.

The policy file *is* a gateway config (``reference.gateway.config``'s TOML: virtual services,
pools, Host/path rules, round robin or hash), so a vendor describes their routing once, in the
format the reference gateway runs, and errors name the line exactly as the gateway's do.

Offline we cannot know a round robin's position (it depends on every earlier session, perhaps
outside the capture), so round robin allows *any* server of the pool the request maps to; hash
is a pure function of the client's address and port, so it allows exactly one. A gateway
without L7 capability never reads the request, so it may pick any server of any pool of the
service it was reached on.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from reference.gateway.config import ConfigError, GatewayConfig, default_config, load, loads
from reference.gateway.selection import client_hash, pool_for, service_for
from spec.eligibility import RequestHead, parse_request_head

Endpoint = tuple[str, int]


def _canon(address: str) -> str:
    """Canonical text of an address (so "2001:DB8::1" and "2001:db8::1" compare equal)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


@dataclass(frozen=True)
class Policy:
    """A gateway config seen as the set of allowed (server address, port) per request."""

    config: GatewayConfig
    l7: bool = True
    """False: the gateway does not read requests (any server of any pool of the service)."""
    source: str = "<policy>"

    def services(self) -> list[Endpoint]:
        """Every (VIP, port) the policy serves."""
        return [(s.vip, s.port) for s in self.config.services]

    def serves(self, vip: str, vport: int) -> bool:
        return service_for(self.config, vip, vport) is not None

    def request_head(self, request: bytes) -> RequestHead | None:
        """The routable request head at the start of ``request`` (None if there is none)."""
        return parse_request_head(request)

    def allowed_servers(self, vip: str, vport: int, request_head: bytes,
                        client: Endpoint, *, l7: bool | None = None) -> set[Endpoint]:
        """Servers a connection from ``client`` to ``vip``:``vport`` whose first request
        starts with ``request_head`` may be sent to (empty: no service there).

        An unparseable head on an L7 gateway allows the service's default pool, which is
        where the reference sends what no rule can read; judges that want to say "cannot
        judge" check :meth:`request_head` themselves.
        """
        service = service_for(self.config, vip, vport)
        if service is None:
            return set()
        use_l7 = self.l7 if l7 is None else l7
        if not use_l7:
            return {(_canon(s.address), s.port) for name in service.pool_names
                    for s in self.config.pools[name].servers}
        head = parse_request_head(request_head)
        name = pool_for(service, head) if head is not None else service.default_pool
        pool = self.config.pools[name]
        if pool.method == "hash":
            server = pool.servers[client_hash((client[0], client[1])) % len(pool.servers)]
            return {(_canon(server.address), server.port)}
        return {(_canon(s.address), s.port) for s in pool.servers}

    def pool_of(self, vip: str, vport: int, request_head: bytes) -> str | None:
        """The pool name the request maps to (for messages), None without a service/head."""
        service = service_for(self.config, vip, vport)
        head = parse_request_head(request_head)
        if service is None:
            return None
        return pool_for(service, head) if head is not None else service.default_pool


def load_policy(path: str | os.PathLike[str], *, l7: bool = True) -> Policy:
    """Read a policy file (gateway config TOML); raises ``ConfigError`` naming each bad
    line, ``OSError`` if the file cannot be read."""
    return Policy(load(path), l7=l7, source=os.fspath(path))


def loads_policy(text: str, source: str = "<policy>", *, l7: bool = True) -> Policy:
    """:func:`load_policy` on text."""
    return Policy(loads(text, source), l7=l7, source=source)


def default_policy(*, l7: bool = True) -> Policy:
    """The reference gateway's embedded default config as a policy."""
    return Policy(default_config(), l7=l7, source="<default>")


__all__ = ["ConfigError", "Policy", "default_policy", "load_policy", "loads_policy"]

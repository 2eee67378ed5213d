"""Virtual services, server pools and gateway settings, read from a TOML file.

The gateway answers handshakes on a virtual service's address (VIP and port), reads the first
HTTP/1.x request, and only then picks a server (delayed binding): a service's rules, tried in
order, name the pool for a request, else its ``default_pool`` applies; the pool's ``method``
picks one of its servers (see :mod:`reference.gateway.selection`).

A full example (every key; the comments say what is optional):

.. code-block:: toml

    [gateway]                           # optional table; every key has a default
    client_address = "192.0.2.1"        # the gateway's own address on the client side (none)
    server_address = "203.0.113.1"      # IPv4 source towards servers (203.0.113.1)
    server_address6 = "2001:db8::1"     # IPv6 source; needed only for IPv6 servers
    mss = 1460                          # largest segment accepted, in the SYN/ACK (88..65495)
    window_scale = 7                    # announced window shift (0..14)
    isn_secret = "change-me"            # RFC 6528 ISN key (random per run if absent)
    idle_timeout = 300.0                # seconds without traffic before a session is dropped
    open_timeout = 3.0                  # seconds to wait for a server's SYN/ACK
    buffer_bytes = 262144               # normal path buffer, per direction

    [[service]]                         # one table per virtual service; at least one
    name = "web"                        # unique
    vip = "192.0.2.10"                  # unicast IPv4 or IPv6 address; (vip, port) unique
    port = 80                           # optional, 80
    default_pool = "static"             # pool for requests that no rule matches
    rewrite = "none"                    # or "x-forwarded-for": changes length -> normal path

      [[service.rule]]                  # optional, tried in order; first match wins
      host = "api.example"              # exact Host, any case, port and final dot ignored
      path_prefix = "/api/"             # prefix of the target's path (raw, not decoded)
      pool = "api"                      # a rule needs host and/or path_prefix, and a pool

    [pool.static]
    servers = ["203.0.113.11:80", "203.0.113.12:80"]
    method = "round_robin"              # optional; or "hash" (of client address and port)

    [pool.api]
    servers = ["203.0.113.13:80", "[2001:db8::13]:80"]

Addresses are literals, never host names (the gateway resolves nothing); TEST-NET is not
required, but every address must be unicast (not unspecified, multicast or broadcast).
They are stored in canonical form (``ipaddress``), so "2001:DB8::0:1" equals "2001:db8::1".
``server_address`` must be IPv4 and ``server_address6`` IPv6, and an IPv6 server needs the
latter (the gateway connects to each server from the source of its family). Timeouts are
finite and greater than 0; a rule's host carries no port and its path_prefix starts with
"/". A server listed twice in a pool gets two turns of its round robin. Selection
(:class:`Selector`, :func:`service_for`, :func:`select`, :class:`Counters`) is re-exported
from :mod:`reference.gateway.selection`.

Errors: :func:`loads` checks the whole file and raises one :class:`ConfigError` that lists
*every* problem found (``ConfigError.errors``, sorted by line); a TOML syntax error stops
the check at once, since nothing after it can be read. Each problem reads
``"<source>:<line>: <what is wrong>; <what to do>"``. tomllib gives no positions for values,
so :class:`_Locator` rescans the text for table headers (``[[service]]`` number N,
``[[service.rule]]`` number M of service N, ``[pool.NAME]``), keys, and array elements;
a problem with a missing key names the line of its table's header.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal, cast, get_args

# Selection lives in its own module; re-exported so the gateway needs one import.
from reference.gateway.selection import Counters as Counters
from reference.gateway.selection import Selector as Selector
from reference.gateway.selection import normalize_host
from reference.gateway.selection import select as select
from reference.gateway.selection import service_for as service_for
from spec.topology import (
    GW_SERVER_IP,
    GW_SERVER_IP6,
    SERVER_IPS,
    SERVER_IPS6,
    SERVER_PORT,
    VIP,
    VIP6,
    VPORT,
)

PoolMethod = Literal["round_robin", "hash"]
Rewrite = Literal["none", "x-forwarded-for"]
METHODS: tuple[str, ...] = get_args(PoolMethod)
REWRITES: tuple[str, ...] = get_args(Rewrite)
MSS_RANGE = (88, 65495)
"""Linux's minimum MSS up to the largest IPv4 payload on a 65535-byte MTU."""
WINDOW_SCALE_RANGE = (0, 14)
"""RFC 7323 §2.3 caps the shift at 14."""
BUFFER_RANGE = (1, 1 << 30)


# --------------------------------------------------------------------------- the model


class _BadValue(ValueError):
    """A value that cannot be used, with what is wrong and what to do, kept apart so that
    :class:`ConfigError` can join them in its own format."""

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(f"{what}; {todo}")
        self.what = what
        self.todo = todo


def _unicast_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` cannot be a service, server or gateway address, None if it can."""
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return "the limited broadcast address"
    return None


def parse_address(text: str) -> str:
    """The canonical form of a unicast IP literal; raises ValueError (why; what to do)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise _BadValue(f"{text!r} is not an IPv4 or IPv6 address",
                        'write a literal address such as "192.0.2.10" or "2001:db8::10" '
                        "(no host name, no port)") from None
    problem = _unicast_problem(ip)
    if problem:
        raise _BadValue(f"{text!r} is {problem}", "use a unicast address")
    return str(ip)


_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class Server:
    """A back-end server: canonical IP literal and TCP port."""

    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Server:
        """Parse ``"203.0.113.11:80"`` or ``"[2001:db8::1]:80"``; raises ValueError."""
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise _BadValue(f"server {text!r} has no port",
                                'write IPv6 servers as "[2001:db8::1]:80"')
        else:
            host, sep, port = text.rpartition(":")
            if ":" in host:
                raise _BadValue(f"server {text!r} is an IPv6 address without brackets",
                                'write it as "[address]:port", e.g. "[2001:db8::1]:80"')
            if not sep:
                raise _BadValue(f"server {text!r} has no port",
                                'write it as "address:port", e.g. "203.0.113.11:80"')
        if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
            raise _BadValue(f"server {text!r} has port {port!r}, not 1..65535",
                            "use a port number between 1 and 65535")
        try:
            address = parse_address(host)
        except _BadValue as exc:
            raise _BadValue(f"server {text!r}: {exc.what}", exc.todo) from None
        if text.startswith("[") and ":" not in address:
            raise _BadValue(f"server {text!r} puts an IPv4 address in brackets",
                            "brackets are for IPv6 only: write address:port")
        return cls(address, int(port))


@dataclass(frozen=True, slots=True)
class Pool:
    """Interchangeable servers, and how one is picked for a new session."""

    name: str
    servers: tuple[Server, ...]
    method: PoolMethod = "round_robin"


@dataclass(frozen=True, slots=True)
class Rule:
    """Requests matching every condition given (host, path prefix) go to ``pool``."""

    pool: str
    host: str | None = None
    """Normalized by :func:`normalize_host`."""
    path_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class VirtualService:
    """What clients connect to (``vip``:``port``) and how its requests are routed."""

    name: str
    vip: str
    port: int
    default_pool: str
    rules: tuple[Rule, ...] = ()
    rewrite: Rewrite = "none"

    @property
    def needs_length_changing_rewrite(self) -> bool:
        """Rewriting changes the request's length, so the fast path cannot splice it
        (:attr:`spec.eligibility.HandoffReason.LENGTH_CHANGING_REWRITE`)."""
        return self.rewrite != "none"

    @property
    def pool_names(self) -> tuple[str, ...]:
        """Every pool a request to this service can land in (default first, no repeats)."""
        return tuple(dict.fromkeys((self.default_pool, *(r.pool for r in self.rules))))


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs: its own settings, its services and their pools."""

    services: tuple[VirtualService, ...]
    pools: dict[str, Pool] = field(hash=False)
    client_address: str | None = None
    server_address: str = GW_SERVER_IP
    server_address6: str | None = None
    mss: int = 1460
    window_scale: int = 7
    isn_secret: str | None = field(default=None, repr=False)
    idle_timeout: float = 300.0
    open_timeout: float = 3.0
    buffer_bytes: int = 262144


# --------------------------------------------------------------------------- the default

DEFAULT_CONFIG_TOML = """\
# The embedded default: one virtual service on the TEST-NET VIP; /api/ has its own pool.
# Its IPv6 twin "web6" (documentation prefix) mirrors it with pools of its own, so IPv4
# round robin is the same whether or not IPv6 clients come.
[gateway]
server_address = "203.0.113.1"
server_address6 = "2001:db8:2::1"
mss = 1460
window_scale = 7
idle_timeout = 300.0
open_timeout = 3.0
buffer_bytes = 262144

[[service]]
name = "web"
vip = "192.0.2.10"
port = 80
default_pool = "static"
rewrite = "none"

  [[service.rule]]
  path_prefix = "/api/"
  pool = "api"

[pool.static]
servers = ["203.0.113.11:80", "203.0.113.12:80"]
method = "round_robin"

[pool.api]
servers = ["203.0.113.13:80"]
method = "round_robin"

[[service]]
name = "web6"
vip = "2001:db8::10"
port = 80
default_pool = "static6"
rewrite = "none"

  [[service.rule]]
  path_prefix = "/api/"
  pool = "api6"

[pool.static6]
servers = ["[2001:db8:2::11]:80", "[2001:db8:2::12]:80"]
method = "round_robin"

[pool.api6]
servers = ["[2001:db8:2::13]:80"]
method = "round_robin"
"""
"""What the CLI runs without a file; equal to :func:`default_config` (a test says so)."""


def default_config() -> GatewayConfig:
    """The embedded default, built from :mod:`spec.topology` so traces and config agree:
    ``web`` on the IPv4 VIP and its IPv6 twin ``web6`` on VIP6, same rules, own pools."""
    def pools(suffix: str, ips: tuple[str, ...]) -> dict[str, Pool]:
        static, api = f"static{suffix}", f"api{suffix}"
        return {static: Pool(static, tuple(Server(ip, SERVER_PORT) for ip in ips[:2])),
                api: Pool(api, tuple(Server(ip, SERVER_PORT) for ip in ips[2:]))}

    return GatewayConfig(
        services=(VirtualService(name="web", vip=VIP, port=VPORT, default_pool="static",
                                 rules=(Rule(pool="api", path_prefix="/api/"),)),
                  VirtualService(name="web6", vip=VIP6, port=VPORT, default_pool="static6",
                                 rules=(Rule(pool="api6", path_prefix="/api/"),))),
        pools={**pools("", SERVER_IPS), **pools("6", SERVER_IPS6)},
        server_address=GW_SERVER_IP,
        server_address6=GW_SERVER_IP6,
    )


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One bad entry, with the line it is on."""

    source: str
    line: int
    what: str
    todo: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.what}; {self.todo}"


class ConfigError(ValueError):
    """Every problem found in a config (one per line of the message), sorted by line."""

    def __init__(self, errors: Sequence[ConfigProblem]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(map(str, self.errors)))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.errors,)


# --------------------------------------------------------------------------- positions

_Path = tuple[str | int, ...]
_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Stop(Exception):
    """The text is not shaped as expected; keep the positions found so far."""


class _Locator:
    """Maps each table, key and array element of a (valid) TOML text to its first line.

    Paths are those of the parsed document: ``("service", 0, "rule", 1, "pool")``. Arrays of
    tables get their index from a count of their headers, resolved as TOML does: in
    ``[[service.rule]]``, ``service`` is the latest ``[[service]]``.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[_Path, int] = {}
        self._aot: dict[_Path, int] = {}

    def index(self) -> dict[_Path, int]:
        with contextlib.suppress(_Stop, tomllib.TOMLDecodeError):
            self._document()
        return self.lines

    def _peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def _advance(self, n: int = 1) -> None:
        self.line += self.s.count("\n", self.i, self.i + n)
        self.i += n

    def _spaces(self) -> None:
        while self._peek() in (" ", "\t"):
            self.i += 1

    def _blank(self) -> None:
        """Skip whitespace, newlines and comments."""
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r\n":
                self._advance()
            elif c == "#":
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end < 0 else end
            else:
                return

    def _expect(self, token: str) -> None:
        self._spaces()
        if self._peek(len(token)) != token:
            raise _Stop
        self._advance(len(token))

    def _document(self) -> None:
        table: _Path = ()
        while True:
            self._blank()
            if self.i >= len(self.s):
                return
            line = self.line
            if self._peek(2) == "[[":
                self._advance(2)
                parts = self._key()
                self._expect("]]")
                array = (*self._resolve(parts[:-1]), parts[-1])
                n = self._aot.get(array, 0)
                self._aot[array] = n + 1
                table = (*array, n)
            elif self._peek() == "[":
                self._advance()
                table = self._resolve(self._key())
                self._expect("]")
            else:
                self._keyval(table)
                continue
            for k in range(1, len(table) + 1):
                self.lines.setdefault(table[:k], line)

    def _resolve(self, parts: _Path) -> _Path:
        path: _Path = ()
        for part in parts:
            path = (*path, part)
            if path in self._aot:
                path = (*path, self._aot[path] - 1)
        return path

    def _key(self) -> _Path:
        parts: list[str] = []
        while True:
            self._spaces()
            start = self.i
            if self._peek() in ('"', "'"):
                self._string()
                parts.append(tomllib.loads(f"k = {self.s[start:self.i]}")["k"])
            else:
                while self.i < len(self.s) and self.s[self.i] in _BARE:
                    self.i += 1
                if self.i == start:
                    raise _Stop
                parts.append(self.s[start : self.i])
            self._spaces()
            if self._peek() != ".":
                return tuple(parts)
            self.i += 1

    def _keyval(self, table: _Path) -> None:
        line = self.line
        parts = self._key()
        self._expect("=")
        for k in range(1, len(parts) + 1):
            self.lines.setdefault((*table, *parts[:k]), line)
        self._spaces()
        self._value((*table, *parts))

    def _value(self, path: _Path) -> None:
        c = self._peek()
        if not c:
            raise _Stop
        if c in "[{":
            self._advance()
            close, n = ("]" if c == "[" else "}"), 0
            while True:
                self._blank()
                if self._peek() == close:
                    self._advance()
                    return
                if c == "[":
                    self.lines.setdefault((*path, n), self.line)
                    self._value((*path, n))
                    n += 1
                else:
                    self._keyval(path)
                self._blank()
                if self._peek() == ",":
                    self._advance()
        elif c in "\"'":
            self._string()
        else:
            start = self.i
            while self.i < len(self.s) and self.s[self.i] not in ",]}\n#":
                self.i += 1
            if self.i == start:
                raise _Stop

    def _string(self) -> None:
        s, q = self.s, self.s[self.i]
        triple = s.startswith(q * 3, self.i)
        j = self.i + (3 if triple else 1)
        while j < len(s):
            if q == '"' and s[j] == "\\":
                j += 2
            elif triple and s.startswith(q * 3, j):
                run = 3
                while run < 5 and s[j + run : j + run + 1] == q:
                    run += 1
                j += run
                break
            elif not triple and s[j] == q:
                j += 1
                break
            else:
                j += 1
        else:
            raise _Stop
        self._advance(j - self.i)


def _line_of(lines: dict[_Path, int], path: _Path) -> int:
    """The line of ``path``, else of its nearest enclosing table (1 for the top level)."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return 1


# --------------------------------------------------------------------------- checking

_TOP_KEYS = ("gateway", "service", "pool")
_GATEWAY_KEYS = ("client_address", "server_address", "server_address6", "mss", "window_scale",
                 "isn_secret", "idle_timeout", "open_timeout", "buffer_bytes")
_SERVICE_KEYS = ("name", "vip", "port", "default_pool", "rewrite", "rule")
_RULE_KEYS = ("host", "path_prefix", "pool")
_POOL_KEYS = ("servers", "method")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    for typ, name in ((int, "an integer"), (float, "a float"), (str, "a string"),
                      (list, "an array"), (dict, "a table")):
        if isinstance(value, typ):
            return name
    return "a date/time"


def _pool_header(name: str) -> str:
    return f"[pool.{name}]" if name and set(name) <= _BARE else f"[pool.{name!r}]"


class _Checker:
    """Turns a parsed document into a :class:`GatewayConfig`, collecting every problem."""

    def __init__(self, source: str, lines: dict[_Path, int]) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[ConfigProblem] = []

    def fail(self, path: _Path, what: str, todo: str) -> None:
        line = _line_of(self.lines, path)
        self.problems.append(ConfigProblem(self.source, line, what, todo))

    def line(self, path: _Path) -> int:
        return _line_of(self.lines, path)

    # ---- generic entries

    def table(self, value: object, path: _Path, where: str,
              known: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path, f"{where} must be a table, got {_kind(value)}",
                      f"write it as a {where} table with keys {', '.join(known)}")
            return None
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "remove it or fix its name"
                self.fail((*path, key), f"unknown key {key!r} in {where}",
                          f"{hint} (known keys: {', '.join(known)})")
        return value

    def tables(self, value: object, path: _Path, header: str) -> list[Any]:
        """An array of tables, as a list (its items are checked by the caller)."""
        if isinstance(value, list):
            return value
        self.fail(path, f"{path[-1]} must be an array of tables, got {_kind(value)}",
                  f"write each one under its own {header} header (two brackets)")
        return []

    def string(self, t: dict[str, Any], path: _Path, key: str, *,
               required: str | None = None) -> str | None:
        """The string at ``key``; ``required`` says what to do when it is missing."""
        if key not in t:
            if required:
                self.fail(path, f"missing key {key!r}", required)
            return None
        value = t[key]
        if not isinstance(value, str):
            self.fail((*path, key), f"{key} must be a string, got {_kind(value)}",
                      f'write it in quotes, e.g. {key} = "..."')
            return None
        if not value:
            self.fail((*path, key), f"{key} is empty", f"give {key} a value or remove it")
            return None
        return value

    def integer(self, t: dict[str, Any], path: _Path, key: str, bounds: tuple[int, int],
                why: str) -> int | None:
        if key not in t:
            return None
        value, (lo, hi) = t[key], bounds
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail((*path, key), f"{key} must be an integer, got {_kind(value)}",
                      f"write a whole number without quotes ({why})")
            return None
        if not lo <= value <= hi:
            self.fail((*path, key), f"{key} = {value} is out of range {lo}..{hi}",
                      f"use {lo}..{hi} ({why})")
            return None
        return value

    def seconds(self, t: dict[str, Any], path: _Path, key: str) -> float | None:
        if key not in t:
            return None
        value = t[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail((*path, key), f"{key} must be a number of seconds, got {_kind(value)}",
                      f"write a number without quotes, e.g. {key} = 3.0")
            return None
        if not math.isfinite(value) or value <= 0:
            self.fail((*path, key), f"{key} = {value} is not a positive number of seconds",
                      "use a finite duration greater than 0")
            return None
        return float(value)

    def choice(self, t: dict[str, Any], path: _Path, key: str,
               options: tuple[str, ...]) -> str | None:
        value = self.string(t, path, key)
        if value is None or value in options:
            return value
        close = difflib.get_close_matches(value, options, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.fail((*path, key), f"{key} = {value!r} is not one of {', '.join(options)}",
                  f"{hint}use one of {', '.join(map(repr, options))}")
        return None

    def address(self, t: dict[str, Any], path: _Path, key: str, *,
                required: str | None = None, version: int | None = None) -> str | None:
        text = self.string(t, path, key, required=required)
        if text is None:
            return None
        try:
            address = parse_address(text)
        except _BadValue as exc:
            self.fail((*path, key), f"{key} {exc.what}", exc.todo)
            return None
        if version is not None and ipaddress.ip_address(address).version != version:
            self.fail((*path, key), f"{key} {text!r} is not an IPv{version} address",
                      "use server_address for IPv4 and server_address6 for IPv6")
            return None
        return address

    def pool_ref(self, name: str | None, path: _Path, pools: Sequence[str]) -> None:
        if name is None or name in pools:
            return
        close = difflib.get_close_matches(name, pools, n=1)
        hint = f"did you mean {close[0]!r}? or " if close else ""
        known = ", ".join(pools) or "none"
        self.fail(path, f"unknown pool {name!r} (defined pools: {known})",
                  f"{hint}define it with a {_pool_header(name)} table")

    # ---- the document

    def config(self, raw: dict[str, Any]) -> GatewayConfig | None:
        self.table(raw, (), "the top level", _TOP_KEYS)
        raw_gateway = raw.get("gateway", {})
        settings = self.gateway(raw_gateway)
        # Only a missing key, not a bad one, makes IPv6 servers unreachable: no cascade.
        ipv6 = isinstance(raw_gateway, dict) and "server_address6" in raw_gateway
        raw_pools = raw.get("pool", {})
        pools = self.pools(raw_pools, ipv6=ipv6)
        known_pools = list(raw_pools) if isinstance(raw_pools, dict) else []
        services = self.services(raw.get("service", []), known_pools)
        if self.problems:
            return None
        return GatewayConfig(services=services, pools=pools, **settings)

    def gateway(self, raw: object) -> dict[str, Any]:
        path: _Path = ("gateway",)
        t = self.table(raw, path, "[gateway]", _GATEWAY_KEYS) or {}
        found: dict[str, Any] = {
            "client_address": self.address(t, path, "client_address"),
            "server_address": self.address(t, path, "server_address", version=4),
            "server_address6": self.address(t, path, "server_address6", version=6),
            "mss": self.integer(t, path, "mss", MSS_RANGE,
                                "88 is Linux's minimum MSS; 1460 suits Ethernet"),
            "window_scale": self.integer(t, path, "window_scale", WINDOW_SCALE_RANGE,
                                         "RFC 7323 caps the window shift at 14"),
            "isn_secret": self.string(t, path, "isn_secret"),
            "idle_timeout": self.seconds(t, path, "idle_timeout"),
            "open_timeout": self.seconds(t, path, "open_timeout"),
            "buffer_bytes": self.integer(t, path, "buffer_bytes", BUFFER_RANGE,
                                         "a byte count such as 262144"),
        }
        return {key: value for key, value in found.items() if value is not None}

    def pools(self, raw: object, *, ipv6: bool) -> dict[str, Pool]:
        if not isinstance(raw, dict):
            self.fail(("pool",), f"pool must be a table of pools, got {_kind(raw)}",
                      "write each pool as a [pool.NAME] table")
            return {}
        pools: dict[str, Pool] = {}
        for name, body in raw.items():
            path: _Path = ("pool", name)
            where = _pool_header(name)
            t = self.table(body, path, where, _POOL_KEYS)
            if t is None:
                continue
            method = cast(PoolMethod, self.choice(t, path, "method", METHODS) or "round_robin")
            pools[name] = Pool(name, self.servers(t, path, name, ipv6=ipv6), method)
        return pools

    def servers(self, t: dict[str, Any], path: _Path, name: str, *,
                ipv6: bool) -> tuple[Server, ...]:
        todo = 'list at least one, e.g. servers = ["203.0.113.11:80"]'
        if "servers" not in t:
            self.fail(path, f"pool {name!r} has no servers key", todo)
            return ()
        entries, path = t["servers"], (*path, "servers")
        if not isinstance(entries, list):
            self.fail(path, f"servers must be an array of strings, got {_kind(entries)}", todo)
            return ()
        if not entries:
            self.fail(path, f"pool {name!r} is empty", todo)
        servers: list[Server] = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, str):
                self.fail((*path, n), f"server #{n + 1} must be a string, got {_kind(entry)}",
                          'write it in quotes, e.g. "203.0.113.11:80"')
                continue
            try:
                server = Server.parse(entry)
            except _BadValue as exc:
                self.fail((*path, n), exc.what, exc.todo)
                continue
            if ":" in server.address and not ipv6:
                self.fail((*path, n), f"server {entry!r} is IPv6 but [gateway] has no "
                          "server_address6 to reach it from",
                          'add one, e.g. server_address6 = "2001:db8::1"')
            servers.append(server)
        return tuple(servers)

    def services(self, raw: object, pools: Sequence[str]) -> tuple[VirtualService, ...]:
        entries = self.tables(raw, ("service",), "[[service]]")
        if not entries and isinstance(raw, list):
            self.fail((), "no virtual service is defined",
                      "add a [[service]] table with name, vip, port and default_pool")
        services: list[VirtualService] = []
        names: dict[str, _Path] = {}
        endpoints: dict[tuple[str, int], _Path] = {}
        for n, body in enumerate(entries):
            path: _Path = ("service", n)
            service = self.service(body, path, f"[[service]] #{n + 1}", pools)
            if service is None:
                continue
            first = names.setdefault(service.name, path)
            if first != path:
                self.fail((*path, "name"), f"service name {service.name!r} is already used "
                          f"at line {self.line(first)}", "give each service a unique name")
            first = endpoints.setdefault((service.vip, service.port), path)
            if first != path:
                self.fail((*path, "vip"), f"{service.vip} port {service.port} is already "
                          f"served by the service at line {self.line(first)}",
                          "give each service its own vip and port")
            services.append(service)
        return tuple(services)

    def service(self, raw: object, path: _Path, where: str,
                pools: Sequence[str]) -> VirtualService | None:
        t = self.table(raw, path, where, _SERVICE_KEYS)
        if t is None:
            return None
        name = self.string(t, path, "name", required='add a unique name, e.g. name = "web"')
        vip = self.address(t, path, "vip", required='add the address clients connect to, '
                           'e.g. vip = "192.0.2.10"')
        port = self.integer(t, path, "port", (1, 65535), "a TCP port")
        default_pool = self.string(t, path, "default_pool",
                                   required='add the pool for requests no rule matches, '
                                   'e.g. default_pool = "static"')
        self.pool_ref(default_pool, (*path, "default_pool"), pools)
        rewrite = cast(Rewrite, self.choice(t, path, "rewrite", REWRITES) or "none")
        rules: list[Rule] = []
        for n, body in enumerate(self.tables(t.get("rule", []), (*path, "rule"),
                                             "[[service.rule]]")):
            rule = self.rule(body, (*path, "rule", n), f"[[service.rule]] #{n + 1} of {where}",
                             pools)
            if rule is not None:
                rules.append(rule)
        if name is None or vip is None or default_pool is None:
            return None
        return VirtualService(name, vip, port or 80, default_pool, tuple(rules), rewrite)

    def rule(self, raw: object, path: _Path, where: str, pools: Sequence[str]) -> Rule | None:
        t = self.table(raw, path, where, _RULE_KEYS)
        if t is None:
            return None
        host = self.string(t, path, "host")
        if host is not None:
            if any(c.isspace() or c in "/@" for c in host):
                self.fail((*path, "host"), f"host {host!r} is not a host name",
                          'write just the name, e.g. host = "api.example"')
                host = None
            elif normalize_host(host) != host.lower().removesuffix("."):
                self.fail((*path, "host"), f"host {host!r} includes a port",
                          "drop the port: Host values are compared without it")
                host = None
            else:
                host = normalize_host(host)
        prefix = self.string(t, path, "path_prefix")
        if prefix is not None and not prefix.startswith("/"):
            self.fail((*path, "path_prefix"), f"path_prefix {prefix!r} does not start with '/'",
                      f'write it as a path, e.g. path_prefix = "/{prefix}"')
            prefix = None
        pool = self.string(t, path, "pool", required='add the pool it routes to, '
                           'e.g. pool = "api"')
        self.pool_ref(pool, (*path, "pool"), pools)
        if "host" not in t and "path_prefix" not in t:
            self.fail(path, f"{where} has no condition",
                      "add host and/or path_prefix, or make its pool the default_pool")
        if pool is None:
            return None
        return Rule(pool, host, prefix)


# --------------------------------------------------------------------------- entry points

_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _syntax_problem(source: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigProblem:
    message = str(exc)
    if m := _AT.search(message):
        return ConfigProblem(source, int(m[1]),
                             f"TOML syntax error at column {m[2]}: {message[: m.start()]}",
                             "fix the syntax there (TOML 1.0: https://toml.io/en/v1.0.0)")
    last = max(1, text.count("\n") + (not text.endswith("\n")))
    return ConfigProblem(source, last,
                         f"TOML syntax error: {message.removesuffix(' (at end of document)')}",
                         "close the string, array or table still open at the end of the file")


def loads(text: str, source: str = "<string>") -> GatewayConfig:
    """Parse and check a config; raises :class:`ConfigError` listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(source, text, exc)]) from None
    checker = _Checker(source, _Locator(text).index())
    config = checker.config(raw)
    if config is None:
        raise ConfigError(sorted(checker.problems, key=attrgetter("line")))
    return config


def load(path: str | os.PathLike[str]) -> GatewayConfig:
    """:func:`loads` on a UTF-8 file, named by ``path`` in messages; OSError if unreadable."""
    data, source = Path(path).read_bytes(), os.fspath(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigProblem(source, line, f"byte 0x{data[exc.start]:02x} is not "
                                         "UTF-8", "save the file as UTF-8 (TOML requires it)")
                           ]) from None
    return loads(text, source=source)

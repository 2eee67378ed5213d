"""The property registry: every judgement the checker can make, by stable id.

Per-leg judges (``conformance.leg_checks``) and cross-leg judges (``conformance.cross_checks``)
register themselves here on import, so the checker, the case catalog and the reports all look
properties up in one place and a property id means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

VERDICTS = ("pass", "fail", "n/a", "unknown")
"""``unknown``: the trace does not let us judge (the detail says why); never a silent pass."""


@dataclass(frozen=True)
class Capabilities:
    """What the gateway under test is meant to do; a property that needs a capability the
    gateway lacks is judged "n/a" instead of failing a full proxy for not splicing."""

    l7: bool = True
    splices: bool = True
    delayed_binding: bool = True
    opens_window: bool = True
    """Its SYN-ACK offers a window, so a client may send right after the handshake. A SYN
    proxy (netfilter's SYNPROXY) offers 0 until its own server connection is up, which a
    scripted server, played step by step after the client's steps, can never bring up."""


REFERENCE = Capabilities()
"""The reference gateway: L7 selection, splicing, delayed binding."""

KINDS: dict[str, Capabilities] = {
    "reference": REFERENCE,
    "haproxy-http": Capabilities(l7=True, splices=False, delayed_binding=True),
    "nginx-http": Capabilities(l7=True, splices=False, delayed_binding=True),
    "haproxy-tcp": Capabilities(l7=False, splices=False, delayed_binding=False),
    "nginx-stream": Capabilities(l7=False, splices=False, delayed_binding=False),
    "netfilter": Capabilities(l7=False, splices=True, delayed_binding=False,
                              opens_window=False),
}
"""Capabilities of the gateway kinds the suite has adapters for."""


@dataclass(frozen=True)
class Property:
    """One judgement; ``judge`` is (Conn, Context) -> Finding for scope "leg" and
    (Pair, Context) -> Finding for scope "cross"."""

    id: str
    title: str
    scope: str
    serves: tuple[str, ...]
    judge: Callable[..., Finding]


@dataclass
class Finding:
    """The verdict of one property on one connection (or pair), with evidence frames."""

    property: str
    verdict: str
    detail: str
    packets: tuple[tuple[str, int], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"property": self.property, "verdict": self.verdict, "detail": self.detail,
                "packets": [list(p) for p in self.packets]}


@dataclass
class Context:
    """What judges may consult beyond the trace: the selection policy and the gateway kind."""

    policy: Any = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    kind: str | None = None


PROPERTIES: dict[str, Property] = {}
"""All registered properties by id, in registration order."""


def register(prop: Property) -> Property:
    """Add ``prop`` to the registry; re-registering the same id (a module reload) replaces it,
    but two different judges claiming one id is a programming error."""
    if prop.scope not in ("leg", "cross", "info"):
        raise ValueError(f"property {prop.id}: scope {prop.scope!r}, expected leg/cross/info")
    old = PROPERTIES.get(prop.id)
    if old is not None and getattr(old.judge, "__qualname__", None) != getattr(
            prop.judge, "__qualname__", None):
        raise ValueError(f"property id {prop.id!r} is already registered by "
                         f"{old.judge.__module__}.{old.judge.__qualname__}")
    PROPERTIES[prop.id] = prop
    return prop


def by_scope(scope: str) -> list[Property]:
    """Registered properties of one scope, in registration order."""
    return [p for p in PROPERTIES.values() if p.scope == scope]


__all__ = ["KINDS", "PROPERTIES", "REFERENCE", "VERDICTS", "Capabilities", "Context",
           "Finding", "Property", "by_scope", "register"]

"""Counters of the gateway core, read by the CLI, the benchmarks and the conformance checker."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Stats:
    sessions_fast: int = 0
    """Sessions that completed on the fast path (spliced, never handed off)."""
    sessions_spliced: int = 0
    sessions_handed_off: int = 0
    handoffs: Counter[str] = field(default_factory=Counter)
    """Handoffs by ``spec.eligibility.HandoffReason`` name."""
    drops: Counter[str] = field(default_factory=Counter)
    """Dropped packets by reason (malformed, no session, unknown VIP, ...)."""
    packets_in: Counter[str] = field(default_factory=Counter)
    packets_out: Counter[str] = field(default_factory=Counter)
    bytes_client_to_server: int = 0
    """Payload octets relayed or proxied from clients to servers."""
    bytes_server_to_client: int = 0
    relayed_segments: int = 0
    """Segments relayed by the fast path's splice."""
    proxied_segments: int = 0
    """Segments processed by the normal path's TCP stacks."""
    live_fast_records: int = 0
    live_normal_records: int = 0
    compacted_records: int = 0
    """Live fast-path sessions held compacted in rows (``session_rows``): idle, spliced."""
    sessions_compacted: int = 0
    sessions_restored: int = 0
    """Compactions, and restorations by a packet or timer (a session may go both ways
    many times)."""
    buffered_bytes: int = 0
    """Bytes held in normal-path buffers (plus the fast path's held request segments)."""
    held_request_bytes: int = 0
    resets_sent: int = 0
    sessions_reopened: int = 0
    """Sessions a client's newer SYN on the same 4-tuple replaced: a normal-path session in
    TIME-WAIT, or a fast-path one lingering after both FINs (RFC 6191)."""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:  # type: ignore[attr-defined]
            v = getattr(self, name)
            out[name] = dict(v) if isinstance(v, Counter) else v
        return out

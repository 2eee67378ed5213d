"""The gateway's timer heap: one live entry per session (plus the stale ones a deadline moved
earlier leaves behind, few), not one per RTO restart; and no deadline lost when a session
moves its deadline later (RTO restarts, idle timeouts pushed back by activity)."""

from __future__ import annotations

import heapq

import pytest

from reference.gateway import scenarios
from reference.gateway.config import default_config
from reference.gateway.gateway import CoreSettings, Gateway
from reference.gateway.sim import ClientPlan, Impairment, Network, ServerBehaviour
from spec.topology import SERVER_IPS, SERVER_PORT, VIP, VPORT
from tests.reference.gateway.test_gateway import handshake, isn_source

SIZE = 256 * 1024


class HeapWatch(Gateway):
    """Records the largest timer heap seen after any packet."""

    largest = 0

    def handle(self, leg, packet, *, now, checksum_verified=False):
        out = super().handle(leg, packet, now=now, checksum_verified=checksum_verified)
        self.largest = max(self.largest, len(self._timers))
        return out


def _old_schedule(self: Gateway, s) -> None:
    """The schedule this module replaced: one heap entry per call."""
    if s.deadline is not None:
        s.queued = s.deadline
        heapq.heappush(self._timers, (s.deadline, next(self._tick), s))


def _proxied_transfer(gw: Gateway) -> bytes:
    net = Network(gw, seed=5, client_leg=Impairment(loss=0.02), server_leg=Impairment(loss=0.02))
    for ip in SERVER_IPS:
        net.add_server(ip, SERVER_PORT, ServerBehaviour(response_size=lambda h: SIZE))
    plan = ClientPlan(request=scenarios.request(size=SIZE), writes=(10,))  # split: handoff
    net.start_client(VIP, VPORT, plan)
    net.run(until=600.0)
    return bytes(net.results[plan.port].received)


def test_a_proxied_transfer_keeps_one_heap_entry_per_session() -> None:
    gw = HeapWatch(default_config(), core=CoreSettings(rto_min=0.2, linger=0.5))
    got = _proxied_transfer(gw)
    assert len(got) >= SIZE and gw.stats.sessions_handed_off == 1
    # One session (its normal-path record; the handed-off fast record has no timer): one live
    # entry, plus stale ones left by deadlines moved earlier. One per ACK would be ~30 here.
    assert gw.largest <= 4, gw.largest


def test_the_heap_bound_check_catches_one_entry_per_rto_restart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Gateway, "schedule", _old_schedule)
    gw = HeapWatch(default_config(), core=CoreSettings(rto_min=0.2, linger=0.5))
    _proxied_transfer(gw)
    assert gw.largest > 4


def test_a_deadline_moved_later_still_fires_at_its_new_time() -> None:
    gw = Gateway(default_config(), isn_source=isn_source)
    handshake(gw)
    s = next(iter(gw.client_sessions.values()))
    first = gw.next_deadline()
    assert first is not None and s.queued == first
    s.last_active = 100.0  # activity since: the idle timeout moves 100 s later
    assert gw.handle_timer(now=first) == []  # not idle yet: queued anew, nothing sent
    second = gw.next_deadline()
    assert second == pytest.approx(first + 100.0) and gw.client_sessions
    out = gw.handle_timer(now=second)
    assert out and not gw.client_sessions  # reset at the new time, records retired

"""Stateful model check of client + gateway model + server over a lossy, duplicating,
reordering network (Hypothesis RuleBasedStateMachine), with ISNs near the 2^32 wrap.

After every step: stream integrity (each side received a prefix of what the other sent),
ACK safety (nobody is acknowledged a byte it did not send; on the fast path the client is not
acknowledged a byte the server has not acknowledged), the fast path holds no payload except
the one request segment while the server side opens, and continuity across the handoff (one
ISN, no second SYN/ACK with another ISN, no RST, ownership only FP -> NP). At the end the
network is made reliable and both byte streams must arrive whole (byte-exact).
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from spec.eligibility import HandoffReason
from spec.records import Owner
from spec.states import FastPathState
from tests.spec.harness import System

NEAR_WRAP = st.one_of(st.integers(2**32 - 3000, 2**32 - 1), st.integers(0, 2**32 - 1))
PATHS = st.text(alphabet="abcdefghij/", min_size=1, max_size=30)


class GatewaySystem(RuleBasedStateMachine):
    """The rules are the network's and the clock's moves; the peers and the gateway react."""

    sys: System

    @initialize(client_iss=NEAR_WRAP, server_iss=NEAR_WRAP, gw_c=NEAR_WRAP, gw_s=NEAR_WRAP,
                client_mss=st.sampled_from([8, 24, 100, 536, 1460]), path=PATHS,
                response_len=st.integers(0, 12_000))
    def start(self, client_iss: int, server_iss: int, gw_c: int, gw_s: int, client_mss: int,
              path: str, response_len: int) -> None:
        request = f"GET /{path} HTTP/1.1\r\nHost: vip.example\r\n\r\n".encode()
        response = bytes((i * 7 + 3) & 0xFF for i in range(response_len))
        self.sys = System.start(client_iss=client_iss, server_iss=server_iss,
                                gw_isn_client=gw_c, gw_isn_server=gw_s,
                                client_mss=client_mss, request=request, response=response)

    def _pick(self, k: int) -> tuple[str, int]:
        flight = self.sys.in_flight()
        return flight[k % len(flight)]

    def _any_in_flight(self) -> bool:
        return bool(self.sys.in_flight())

    @precondition(_any_in_flight)
    @rule(k=st.integers(0, 10_000))
    def deliver(self, k: int) -> None:
        self.sys.deliver(*self._pick(k))

    @precondition(_any_in_flight)
    @rule(k=st.integers(0, 10_000))
    def duplicate(self, k: int) -> None:
        self.sys.deliver(*self._pick(k), keep=True)

    @precondition(_any_in_flight)
    @rule(k=st.integers(0, 10_000))
    def drop(self, k: int) -> None:
        self.sys.drop(*self._pick(k))

    @precondition(lambda self: bool(self.sys.links["c2g"]))
    @rule(k=st.integers(0, 10_000))
    def deliver_as_ip_fragment(self, k: int) -> None:
        link = self.sys.links["c2g"]
        self.sys.deliver("c2g", k % len(link), fragment=True)

    @precondition(lambda self: self.sys.next_deadline() is not None)
    @rule()
    def timer(self) -> None:
        self.sys.tick()

    @rule(n=st.integers(1, 40))
    def reliable_burst(self, n: int) -> None:
        """Deliver the next ``n`` segments in order (or fire a timer when idle): progress."""
        for _ in range(n):
            flight = self.sys.in_flight()
            if flight:
                self.sys.deliver(*flight[0])
            elif self.sys.next_deadline() is not None:
                self.sys.tick()

    # ---- invariants, checked after every step
    @invariant()
    def streams_are_prefixes(self) -> None:
        s = self.sys
        assert bytes(s.server.received) == s.request[:len(s.server.received)]
        assert bytes(s.client.received) == s.response[:len(s.client.received)]

    @invariant()
    def ack_safety(self) -> None:
        s = self.sys
        assert not s.client.acked_beyond_sent, "client was ACKed a byte it never sent"
        assert not s.server.acked_beyond_sent, "server was ACKed a byte it never sent"
        if s.gw.owner is Owner.FAST_PATH:
            assert s.gw.client_acked_to_client <= len(s.server.received), (
                "fast path ACKed client bytes the server has not received")

    @invariant()
    def fast_path_holds_no_payload(self) -> None:
        gw = self.sys.gw
        if gw.state is not FastPathState.SERVER_OPENING:
            assert gw.holds_payload() == 0
        assert gw.holds_payload() <= self.sys.client.mss

    @invariant()
    def continuity_across_handoff(self) -> None:
        s = self.sys
        assert all(seq == s.gw.isn_c for seq in s.synacks_to_client), "a second ISN"
        assert s.rsts_to_client == 0
        ranks = [int(o) for o in s.owners]
        assert ranks == sorted(ranks), "ownership moved back to the fast path"
        if s.gw.normal is not None:
            rec = s.gw.normal.result.client
            assert rec.rcv_isn == s.client.iss and rec.snd_isn == s.gw.isn_c
            assert s.gw.handoff_reason is not HandoffReason.NONE

    def teardown(self) -> None:
        if not hasattr(self, "sys"):
            return
        self.sys.run_until_quiet()
        event(f"ended {self.sys.gw.state.name}, reason {self.sys.gw.handoff_reason.name}")
        assert self.sys.done(), (
            f"not byte-exact after a reliable drain: server got {len(self.sys.server.received)}"
            f"/{len(self.sys.request)}, client got {len(self.sys.client.received)}"
            f"/{len(self.sys.response)}; gateway state {self.sys.gw.state.name}")


# The loaded profile (tests/conftest.py: "ci" derandomized, or "long"), with more examples than
# Hypothesis's default since each one is a whole session.
GatewaySystem.TestCase.settings = settings(settings.default,
                                           max_examples=settings.default.max_examples * 3,
                                           stateful_step_count=60)
TestGatewaySystem = GatewaySystem.TestCase

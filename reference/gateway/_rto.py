"""The retransmission timer's value: RFC 6298 (SRTT, RTTVAR, RTO) with Karn's backoff.

Kept apart from the connection so that the formula can be checked number by number against
the RFC (tests feed it a crafted sequence of samples). It never reads a clock: callers pass
measured round-trip times in seconds.
"""

from __future__ import annotations

K = 4
"""RFC 6298 §2: RTO = SRTT + max(G, K*RTTVAR)."""
G = 0.001
"""RFC 6298 §2: clock granularity, seconds (our TCP timestamp clock ticks once per ms)."""
ALPHA = 1 / 8
"""RFC 6298 §2.3: SRTT gain."""
BETA = 1 / 4
"""RFC 6298 §2.3: RTTVAR gain."""
RTO_INITIAL = 1.0
"""RFC 6298 §2.1: RTO before the first sample."""
RTO_MIN = 1.0
"""RFC 6298 §2.4: the RTO is rounded up to at least 1 s (configurable: tests use less)."""
RTO_MAX = 60.0
"""RFC 6298 §2.5: a maximum may be placed on the RTO, provided it is at least 60 s."""
RTO_AFTER_SYN_LOSS = 3.0
"""RFC 6298 §5.7: after a SYN timed out, the data phase starts from an RTO of 3 s."""


class RtoEstimator:
    """SRTT/RTTVAR/RTO state of one connection (RFC 6298 §2, §5)."""

    __slots__ = ("rto", "rto_max", "rto_min", "rttvar", "srtt")

    def __init__(self, *, rto_min: float = RTO_MIN, rto_max: float = RTO_MAX) -> None:
        if not 0 < rto_min <= rto_max:
            raise ValueError(f"need 0 < rto_min <= rto_max, got {rto_min}, {rto_max}")
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.rto = self._clamp(RTO_INITIAL)

    def _clamp(self, rto: float) -> float:
        """RFC 6298 §2.4 (lower bound) and §2.5 (upper bound)."""
        return min(max(rto, self.rto_min), self.rto_max)

    def sample(self, r: float) -> None:
        """Take one RTT measurement R (seconds), per RFC 6298 §2.2 / §2.3.

        The caller applies Karn's algorithm (§3): no sample from a retransmitted segment
        unless timestamps disambiguate it. A new sample also ends any backoff, since the
        RTO is recomputed from SRTT/RTTVAR.
        """
        r = max(r, 0.0)
        if self.srtt is None or self.rttvar is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            # §2.3: RTTVAR first, with the SRTT from before this sample.
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r
        self.rto = self._clamp(self.srtt + max(G, K * self.rttvar))

    def backoff(self) -> None:
        """RFC 6298 §5.5: double the RTO on a timeout (bounded by the maximum)."""
        self.rto = self._clamp(self.rto * 2)

    def after_syn_timeout(self) -> None:
        """RFC 6298 §5.7: the SYN was retransmitted and gave no sample: data starts at 3 s
        (this also ends the SYN's backoff)."""
        if self.srtt is None:
            self.rto = self._clamp(RTO_AFTER_SYN_LOSS)

"""Congestion control for the normal path: RFC 5681 Reno with RFC 6582 NewReno recovery.

Separate from the connection so that the window arithmetic reads like the RFCs' equations.
The connection tells it what happened (new ACK, duplicate ACK, timeout) and asks it whether
to retransmit; it never touches segments or the send buffer itself.
"""

from __future__ import annotations

from spec.seq import seq_le, seq_lt

DUPACK_THRESHOLD = 3
"""RFC 5681 §3.2: the third duplicate ACK triggers fast retransmit."""
INITIAL_SSTHRESH = 1 << 30
"""RFC 5681 §3.1: ssthresh "may be arbitrarily high" at first."""


def initial_window(smss: int) -> int:
    """RFC 5681 §3.1, equation (1): IW from SMSS."""
    if smss > 2190:
        return 2 * smss
    if smss > 1095:
        return 3 * smss
    return 4 * smss


class Reno:
    """cwnd/ssthresh and the fast-recovery state of one connection (bytes throughout)."""

    __slots__ = ("cwnd", "dupacks", "in_recovery", "recover", "smss", "ssthresh")

    def __init__(self, smss: int) -> None:
        self.smss = smss
        self.cwnd = initial_window(smss)
        self.ssthresh = INITIAL_SSTHRESH
        self.dupacks = 0
        self.in_recovery = False
        self.recover: int | None = None
        """RFC 6582 "recover": SND.NXT when the last loss episode began (None when passed)."""

    def _halve(self, flight: int) -> None:
        """RFC 5681 §3.1 equation (4): ssthresh = max(FlightSize / 2, 2*SMSS)."""
        self.ssthresh = max(flight // 2, 2 * self.smss)

    def on_new_ack(self, acked: int, ack: int, flight_after: int) -> bool:
        """An ACK that advanced SND.UNA by ``acked`` bytes; True = retransmit SND.UNA now
        (a NewReno partial ACK, RFC 6582 §3.2 step 5)."""
        self.dupacks = 0
        reached = self.recover is not None and seq_le(self.recover, ack)
        if self.in_recovery:
            if not reached:
                # Partial ACK: deflate by the amount acked, add back one SMSS.
                self.cwnd = max(self.cwnd - acked + self.smss, self.smss)
                return True
            # Full ACK (step 3, option 1): leave recovery at ssthresh, never bursting.
            self.cwnd = min(self.ssthresh, max(flight_after, self.smss) + self.smss)
            self.in_recovery = False
        elif self.cwnd < self.ssthresh:
            self.cwnd += min(acked, self.smss)  # §3.1 equation (2), slow start
        else:
            self.cwnd += max(1, self.smss * self.smss // self.cwnd)  # equation (3)
        if reached:
            self.recover = None
        return False

    def on_dupack(self, ack: int, flight: int, snd_nxt: int) -> bool:
        """A duplicate ACK (RFC 5681 §2 definition); True = fast retransmit SND.UNA now."""
        self.dupacks += 1
        if self.in_recovery:
            self.cwnd += self.smss  # §3.2 step 4: inflate for each segment that left
            return False
        if self.dupacks != DUPACK_THRESHOLD:
            return False
        if self.recover is not None and not seq_lt(self.recover, ack):
            return False  # RFC 6582 §3.2 step 2: still inside the last episode
        self._halve(flight)
        self.recover = snd_nxt
        self.cwnd = self.ssthresh + DUPACK_THRESHOLD * self.smss  # §3.2 step 3
        self.in_recovery = True
        return True

    def on_timeout(self, flight: int, snd_nxt: int, *, first: bool) -> None:
        """RFC 5681 §3.1: a retransmission timeout sets cwnd to the loss window (1 SMSS);
        ssthresh is halved only the first time a segment times out (``first``)."""
        if first:
            self._halve(flight)
        self.cwnd = self.smss
        self.in_recovery = False
        self.dupacks = 0
        self.recover = snd_nxt  # RFC 6582 §3.2 step 1 / §4 (no fast retransmit after RTO)

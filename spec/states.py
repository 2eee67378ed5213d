"""State machines of both paths, as tables everyone reads.

Rule 1: every fast-path transition lives in :data:`FAST_PATH_TABLE`; the reference gateway
dispatches on it, the Z3 proofs encode it, the docs draw it. Rule 2: the table is total: every
(state, event) pair has an entry, and :func:`fast_path_step` names both when asked for a pair
that is not there (it would be a bug in this file).

The normal path uses the RFC 9293 states; :data:`TCP_TABLE` holds the transitions the gateway
needs, including the one RFC 9293 does not have: ``HANDOFF``, where a TCB is *born*
ESTABLISHED from the fast path's records (claim 1) instead of through a handshake.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from spec.records import Owner


class FastPathState(enum.IntEnum):
    NO_SESSION = 0
    """No record: the 4-tuple is unknown."""
    SYN_RCVD = 1
    """The gateway answered the client's SYN itself; records created, no buffers."""
    ESTABLISHED = 2
    """Client handshake complete; waiting for the first request segment."""
    SERVER_OPENING = 3
    """Request held (not acknowledged), server selected, SYN sent to the server."""
    SPLICED = 4
    """Both legs established; segments relayed with translation."""
    CLIENT_FIN = 5
    """Client's FIN relayed; server may still send."""
    SERVER_FIN = 6
    """Server's FIN relayed; client may still send."""
    CLOSING = 7
    """Both FINs relayed; lingering to relay the last ACKs. A newer client SYN on the
    4-tuple (RFC 6191: later timestamp, else later sequence number) ends the record before
    the table is consulted, so it starts a new session from NO_SESSION."""
    HANDED_OFF = 8
    """The normal path owns the session; the fast path only steers segments to it."""
    CLOSED = 9
    """Records retired."""


class FastPathEvent(enum.IntEnum):
    CLIENT_SYN = 0
    CLIENT_ACK = 1
    """A segment from the client with no payload, no SYN/FIN/RST."""
    CLIENT_REQUEST_OK = 2
    """First payload, eligible for the fast path (spec.eligibility)."""
    CLIENT_REQUEST_HANDOFF = 3
    """First payload the fast path cannot process (spec.eligibility names the reason)."""
    CLIENT_DATA = 4
    """Client payload after the first request."""
    CLIENT_FIN = 5
    CLIENT_RST = 6
    SERVER_SYNACK = 7
    SERVER_SEGMENT = 8
    """A server segment with no SYN/FIN/RST (data and/or ACK)."""
    SERVER_FIN = 9
    SERVER_RST = 10
    OPEN_TIMEOUT = 11
    """The server did not answer the gateway's SYN in time."""
    IDLE_TIMEOUT = 12
    LINGER_TIMEOUT = 13
    """CLOSING lingered long enough for the last ACKs."""
    OPEN_RETRY = 14
    """The gateway's SYN to the server went unanswered for one RTO: send it again."""


class Effect(enum.Enum):
    """What the fast path does on a transition (the gateway implements one handler each)."""

    ANSWER_SYN = "answer_syn"
    RESEND_SYNACK = "resend_synack"
    RESEND_SERVER_SYN = "resend_server_syn"
    RESET_UNACCEPTABLE_ACK = "reset_unacceptable_ack"
    """SYN-SENT on the server leg, an ACK that does not acknowledge our SYN: answer
    <SEQ=SEG.ACK><CTL=RST> and keep waiting (RFC 9293 §3.10.7.3). It is how a half-open
    connection the server still holds on this 4-tuple (from an earlier gateway run, say)
    is cleared, so that the SYN's retransmission opens (RFC 9293 §3.5.1); dropped, the
    server answers every SYN with the same ACK and the open times out."""
    COMPLETE_HANDSHAKE = "complete_handshake"
    HOLD_AND_OPEN_SERVER = "hold_request_and_open_server"
    HANDOFF = "handoff_to_normal_path"
    SPLICE = "splice_and_release_request"
    RELAY_TO_SERVER = "relay_to_server"
    RELAY_TO_CLIENT = "relay_to_client"
    RESET_BOTH = "reset_both_and_retire"
    RESET_CLIENT = "reset_client_and_retire"
    RELAY_RST_TO_SERVER = "relay_rst_to_server_and_retire"
    RELAY_RST_TO_CLIENT = "relay_rst_to_client_and_retire"
    RETIRE = "retire_records"
    STEER_TO_NORMAL_PATH = "steer_to_normal_path"
    DROP = "drop"
    """Counted and dropped; the sender's retransmission recovers (nothing is acknowledged)."""


S, E, X = FastPathState, FastPathEvent, Effect


@dataclass(frozen=True, slots=True)
class Transition:
    effect: Effect
    next: FastPathState


def _row(default: tuple[Effect, FastPathState], **moves: tuple[Effect, FastPathState]
         ) -> dict[FastPathEvent, Transition]:
    """One state's row: explicit moves, every other event gets the default."""
    row = {ev: Transition(*default) for ev in FastPathEvent}
    for name, (eff, nxt) in moves.items():
        row[FastPathEvent[name]] = Transition(eff, nxt)
    return row


FAST_PATH_TABLE: dict[FastPathState, dict[FastPathEvent, Transition]] = {
    S.NO_SESSION: _row((X.DROP, S.NO_SESSION),
                       CLIENT_SYN=(X.ANSWER_SYN, S.SYN_RCVD)),
    S.SYN_RCVD: _row((X.DROP, S.SYN_RCVD),
                     CLIENT_SYN=(X.RESEND_SYNACK, S.SYN_RCVD),
                     CLIENT_ACK=(X.COMPLETE_HANDSHAKE, S.ESTABLISHED),
                     CLIENT_REQUEST_OK=(X.HOLD_AND_OPEN_SERVER, S.SERVER_OPENING),
                     CLIENT_REQUEST_HANDOFF=(X.HANDOFF, S.HANDED_OFF),
                     CLIENT_FIN=(X.HANDOFF, S.HANDED_OFF),
                     CLIENT_RST=(X.RETIRE, S.CLOSED),
                     IDLE_TIMEOUT=(X.RETIRE, S.CLOSED)),
    S.ESTABLISHED: _row((X.DROP, S.ESTABLISHED),
                        CLIENT_REQUEST_OK=(X.HOLD_AND_OPEN_SERVER, S.SERVER_OPENING),
                        CLIENT_REQUEST_HANDOFF=(X.HANDOFF, S.HANDED_OFF),
                        CLIENT_FIN=(X.HANDOFF, S.HANDED_OFF),
                        CLIENT_RST=(X.RETIRE, S.CLOSED),
                        IDLE_TIMEOUT=(X.RESET_CLIENT, S.CLOSED)),
    S.SERVER_OPENING: _row((X.DROP, S.SERVER_OPENING),
                           CLIENT_RST=(X.RESET_BOTH, S.CLOSED),
                           SERVER_SYNACK=(X.SPLICE, S.SPLICED),
                           OPEN_RETRY=(X.RESEND_SERVER_SYN, S.SERVER_OPENING),
                           SERVER_SEGMENT=(X.RESET_UNACCEPTABLE_ACK, S.SERVER_OPENING),
                           SERVER_FIN=(X.RESET_UNACCEPTABLE_ACK, S.SERVER_OPENING),
                           SERVER_RST=(X.RESET_CLIENT, S.CLOSED),
                           OPEN_TIMEOUT=(X.RESET_BOTH, S.CLOSED),
                           IDLE_TIMEOUT=(X.RESET_BOTH, S.CLOSED)),
    S.SPLICED: _row((X.DROP, S.SPLICED),
                    CLIENT_ACK=(X.RELAY_TO_SERVER, S.SPLICED),
                    CLIENT_DATA=(X.RELAY_TO_SERVER, S.SPLICED),
                    CLIENT_REQUEST_OK=(X.RELAY_TO_SERVER, S.SPLICED),
                    CLIENT_REQUEST_HANDOFF=(X.RELAY_TO_SERVER, S.SPLICED),
                    CLIENT_FIN=(X.RELAY_TO_SERVER, S.CLIENT_FIN),
                    CLIENT_RST=(X.RELAY_RST_TO_SERVER, S.CLOSED),
                    SERVER_SYNACK=(X.RELAY_TO_CLIENT, S.SPLICED),
                    SERVER_SEGMENT=(X.RELAY_TO_CLIENT, S.SPLICED),
                    SERVER_FIN=(X.RELAY_TO_CLIENT, S.SERVER_FIN),
                    SERVER_RST=(X.RELAY_RST_TO_CLIENT, S.CLOSED),
                    IDLE_TIMEOUT=(X.RESET_BOTH, S.CLOSED)),
    S.CLIENT_FIN: _row((X.DROP, S.CLIENT_FIN),
                       CLIENT_ACK=(X.RELAY_TO_SERVER, S.CLIENT_FIN),
                       CLIENT_DATA=(X.RELAY_TO_SERVER, S.CLIENT_FIN),
                       CLIENT_FIN=(X.RELAY_TO_SERVER, S.CLIENT_FIN),
                       CLIENT_RST=(X.RELAY_RST_TO_SERVER, S.CLOSED),
                       SERVER_SEGMENT=(X.RELAY_TO_CLIENT, S.CLIENT_FIN),
                       SERVER_FIN=(X.RELAY_TO_CLIENT, S.CLOSING),
                       SERVER_RST=(X.RELAY_RST_TO_CLIENT, S.CLOSED),
                       IDLE_TIMEOUT=(X.RESET_BOTH, S.CLOSED)),
    S.SERVER_FIN: _row((X.DROP, S.SERVER_FIN),
                       CLIENT_ACK=(X.RELAY_TO_SERVER, S.SERVER_FIN),
                       CLIENT_DATA=(X.RELAY_TO_SERVER, S.SERVER_FIN),
                       CLIENT_FIN=(X.RELAY_TO_SERVER, S.CLOSING),
                       CLIENT_RST=(X.RELAY_RST_TO_SERVER, S.CLOSED),
                       SERVER_SEGMENT=(X.RELAY_TO_CLIENT, S.SERVER_FIN),
                       SERVER_FIN=(X.RELAY_TO_CLIENT, S.SERVER_FIN),
                       SERVER_RST=(X.RELAY_RST_TO_CLIENT, S.CLOSED),
                       IDLE_TIMEOUT=(X.RESET_BOTH, S.CLOSED)),
    S.CLOSING: _row((X.DROP, S.CLOSING),
                    CLIENT_ACK=(X.RELAY_TO_SERVER, S.CLOSING),
                    CLIENT_DATA=(X.RELAY_TO_SERVER, S.CLOSING),
                    CLIENT_FIN=(X.RELAY_TO_SERVER, S.CLOSING),
                    CLIENT_RST=(X.RELAY_RST_TO_SERVER, S.CLOSED),
                    SERVER_SEGMENT=(X.RELAY_TO_CLIENT, S.CLOSING),
                    SERVER_FIN=(X.RELAY_TO_CLIENT, S.CLOSING),
                    SERVER_RST=(X.RELAY_RST_TO_CLIENT, S.CLOSED),
                    LINGER_TIMEOUT=(X.RETIRE, S.CLOSED),
                    IDLE_TIMEOUT=(X.RETIRE, S.CLOSED)),
    S.HANDED_OFF: _row((X.STEER_TO_NORMAL_PATH, S.HANDED_OFF)),
    S.CLOSED: _row((X.DROP, S.CLOSED)),
}


class TableError(LookupError):
    """A (state, event) pair missing from a table: a bug in spec/states.py, never input."""


def fast_path_step(state: FastPathState, event: FastPathEvent,
                   table: dict[FastPathState, dict[FastPathEvent, Transition]] | None = None
                   ) -> Transition:
    """Look up the transition for (state, event); a missing pair names both."""
    t = FAST_PATH_TABLE if table is None else table
    try:
        return t[state][event]
    except KeyError:
        raise TableError(f"no fast-path transition for state {state.name} on event "
                         f"{event.name}") from None


def owner_of(state: FastPathState) -> Owner:
    """The module that processes segments of a session in ``state``."""
    return Owner.NORMAL_PATH if state is FastPathState.HANDED_OFF else Owner.FAST_PATH


HOLDS_PAYLOAD = frozenset({FastPathState.SERVER_OPENING})
"""The only fast-path state allowed to hold payload (the one request segment)."""


# --- normal path: RFC 9293 states -------------------------------------------------------


class TcpState(enum.IntEnum):
    LISTEN = 0
    SYN_SENT = 1
    SYN_RECEIVED = 2
    ESTABLISHED = 3
    FIN_WAIT_1 = 4
    FIN_WAIT_2 = 5
    CLOSE_WAIT = 6
    CLOSING = 7
    LAST_ACK = 8
    TIME_WAIT = 9
    CLOSED = 10


class TcpEvent(enum.IntEnum):
    HANDOFF = 0
    """Claim 1: the TCB is created from the fast path's client session record."""
    CONNECT = 1
    RCV_SYNACK = 2
    CLOSE = 3
    """The proxy has no more to send on this leg (the other leg's FIN was received)."""
    RCV_FIN = 4
    RCV_ACK_OF_FIN = 5
    RCV_RST = 6
    TIMEOUT_2MSL = 7
    RETRANSMIT_LIMIT = 8


T, TE = TcpState, TcpEvent

TCP_TABLE: dict[tuple[TcpState, TcpEvent], TcpState] = {
    (T.CLOSED, TE.HANDOFF): T.ESTABLISHED,
    (T.CLOSED, TE.CONNECT): T.SYN_SENT,
    (T.SYN_SENT, TE.RCV_SYNACK): T.ESTABLISHED,
    (T.SYN_SENT, TE.RCV_RST): T.CLOSED,
    (T.SYN_SENT, TE.RETRANSMIT_LIMIT): T.CLOSED,
    (T.ESTABLISHED, TE.CLOSE): T.FIN_WAIT_1,
    (T.ESTABLISHED, TE.RCV_FIN): T.CLOSE_WAIT,
    (T.FIN_WAIT_1, TE.RCV_ACK_OF_FIN): T.FIN_WAIT_2,
    (T.FIN_WAIT_1, TE.RCV_FIN): T.CLOSING,
    (T.FIN_WAIT_2, TE.RCV_FIN): T.TIME_WAIT,
    (T.CLOSING, TE.RCV_ACK_OF_FIN): T.TIME_WAIT,
    (T.CLOSE_WAIT, TE.CLOSE): T.LAST_ACK,
    (T.LAST_ACK, TE.RCV_ACK_OF_FIN): T.CLOSED,
    (T.TIME_WAIT, TE.TIMEOUT_2MSL): T.CLOSED,
}
"""RFC 9293 §3.3.2 transitions the normal path uses; RST and the retransmission limit close
every synchronized state (added below)."""

for _st in (T.ESTABLISHED, T.FIN_WAIT_1, T.FIN_WAIT_2, T.CLOSE_WAIT, T.CLOSING, T.LAST_ACK):
    TCP_TABLE[(_st, TE.RCV_RST)] = T.CLOSED
    TCP_TABLE[(_st, TE.RETRANSMIT_LIMIT)] = T.CLOSED


def tcp_step(state: TcpState, event: TcpEvent) -> TcpState:
    """Normal-path TCP transition; an event a state does not take leaves it unchanged."""
    return TCP_TABLE.get((state, event), state)

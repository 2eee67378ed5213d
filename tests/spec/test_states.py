"""The fast-path table is total and keeps its promises (ownership, handoff, the one state that
holds payload); the normal path's TCP table follows RFC 9293 §3.3.2 and adds HANDOFF."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spec.handoff import HANDOFF_FROM
from spec.records import Owner
from spec.states import (
    FAST_PATH_TABLE,
    HOLDS_PAYLOAD,
    TCP_TABLE,
    Effect,
    FastPathEvent,
    FastPathState,
    TableError,
    TcpEvent,
    TcpState,
    Transition,
    fast_path_step,
    owner_of,
    tcp_step,
)

S, E, X = FastPathState, FastPathEvent, Effect
T, TE = TcpState, TcpEvent

ALL_MOVES = [(s, e, fast_path_step(s, e)) for s in S for e in E]


# --- fast path ------------------------------------------------------------------------------


def test_fast_path_table_is_total() -> None:
    assert set(FAST_PATH_TABLE) == set(S)
    for s in S:
        row = FAST_PATH_TABLE[s]
        missing = set(E) - set(row)
        assert not missing, f"{s.name} has no transition for {sorted(m.name for m in missing)}"
        for e in E:
            assert isinstance(row[e], Transition)


@given(st.sampled_from(S), st.sampled_from(E))
def test_fast_path_step_returns_a_transition_for_any_state_and_event(
        state: FastPathState, event: FastPathEvent) -> None:
    t = fast_path_step(state, event)
    assert isinstance(t, Transition)
    assert isinstance(t.next, FastPathState)
    assert isinstance(t.effect, Effect)
    assert t is FAST_PATH_TABLE[state][event]


@given(st.sampled_from(S), st.sampled_from(E))
def test_missing_pair_raises_table_error_naming_state_and_event(
        state: FastPathState, event: FastPathEvent) -> None:
    table = {s: dict(row) for s, row in FAST_PATH_TABLE.items()}
    del table[state][event]
    with pytest.raises(TableError) as info:
        fast_path_step(state, event, table)
    assert state.name in str(info.value)
    assert event.name in str(info.value)
    # Every other pair of the custom table still resolves.
    other = next(e for e in E if e is not event)
    assert fast_path_step(state, other, table) is FAST_PATH_TABLE[state][other]


def test_missing_state_row_raises_table_error() -> None:
    table = {s: row for s, row in FAST_PATH_TABLE.items() if s is not S.SPLICED}
    with pytest.raises(TableError, match=r"SPLICED.*CLIENT_DATA"):
        fast_path_step(S.SPLICED, E.CLIENT_DATA, table)


def test_table_error_is_a_lookup_error() -> None:
    assert issubclass(TableError, LookupError)


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
def test_owner_is_normal_path_only_when_handed_off(state: FastPathState) -> None:
    expected = Owner.NORMAL_PATH if state is S.HANDED_OFF else Owner.FAST_PATH
    assert owner_of(state) is expected


@pytest.mark.parametrize("event", list(E), ids=lambda e: e.name)
def test_handed_off_steers_every_event_to_normal_path(event: FastPathEvent) -> None:
    t = fast_path_step(S.HANDED_OFF, event)
    assert t.effect is X.STEER_TO_NORMAL_PATH
    assert t.next is S.HANDED_OFF


def test_ownership_never_returns_to_the_fast_path() -> None:
    for s, e, t in ALL_MOVES:
        assert owner_of(t.next) >= owner_of(s), f"{s.name} --{e.name}--> {t.next.name}"


def test_only_handoff_effect_enters_handed_off() -> None:
    entering = [(s, e, t) for s, e, t in ALL_MOVES if t.next is S.HANDED_OFF and s is not t.next]
    assert entering, "no transition hands a session off"
    for s, e, t in entering:
        assert t.effect is X.HANDOFF, f"{s.name} --{e.name}--> HANDED_OFF by {t.effect}"
    for s, e, t in ALL_MOVES:
        if t.effect is X.HANDOFF:
            assert t.next is S.HANDED_OFF, f"{s.name} --{e.name}--> {t.next.name}"


def test_handoff_effect_only_from_states_the_handoff_accepts() -> None:
    sources = {s for s, _, t in ALL_MOVES if t.effect is X.HANDOFF}
    assert sources == set(HANDOFF_FROM)


def test_steering_happens_only_in_handed_off() -> None:
    for s, e, t in ALL_MOVES:
        if t.effect is X.STEER_TO_NORMAL_PATH:
            assert s is S.HANDED_OFF, f"{s.name} --{e.name}--> steers"


def test_server_opening_is_the_only_state_holding_payload() -> None:
    assert frozenset({S.SERVER_OPENING}) == HOLDS_PAYLOAD


def test_server_opening_is_entered_only_by_hold_and_open_server() -> None:
    entering = [(s, e, t) for s, e, t in ALL_MOVES
                if t.next is S.SERVER_OPENING and s is not S.SERVER_OPENING]
    assert entering
    for s, e, t in entering:
        assert t.effect is X.HOLD_AND_OPEN_SERVER, f"{s.name} --{e.name}--> by {t.effect}"
    for s, e, t in ALL_MOVES:
        if t.effect is X.HOLD_AND_OPEN_SERVER:
            assert t.next is S.SERVER_OPENING, f"{s.name} --{e.name}--> {t.next.name}"


def test_spliced_is_entered_from_server_opening_only_by_splice() -> None:
    for s, e, t in ALL_MOVES:
        if t.next is S.SPLICED and s is not S.SPLICED:
            assert (s, e, t.effect) == (S.SERVER_OPENING, E.SERVER_SYNACK, X.SPLICE)


def test_closed_and_no_session_are_absorbing_except_for_a_new_syn() -> None:
    for e in E:
        assert fast_path_step(S.CLOSED, e).next is S.CLOSED
        expected = S.SYN_RCVD if e is E.CLIENT_SYN else S.NO_SESSION
        assert fast_path_step(S.NO_SESSION, e).next is expected


def test_first_request_path_through_the_table() -> None:
    state = S.NO_SESSION
    for event, effect in [(E.CLIENT_SYN, X.ANSWER_SYN), (E.CLIENT_ACK, X.COMPLETE_HANDSHAKE),
                          (E.CLIENT_REQUEST_OK, X.HOLD_AND_OPEN_SERVER),
                          (E.SERVER_SYNACK, X.SPLICE), (E.CLIENT_FIN, X.RELAY_TO_SERVER),
                          (E.SERVER_FIN, X.RELAY_TO_CLIENT), (E.LINGER_TIMEOUT, X.RETIRE)]:
        t = fast_path_step(state, event)
        assert t.effect is effect, (state.name, event.name)
        state = t.next
    assert state is S.CLOSED


# --- normal path: RFC 9293 ---------------------------------------------------------------


def run(state: TcpState, *events: TcpEvent) -> list[TcpState]:
    path = [state]
    for ev in events:
        path.append(tcp_step(path[-1], ev))
    return path


def test_active_close_follows_rfc9293() -> None:
    assert run(T.ESTABLISHED, TE.CLOSE, TE.RCV_ACK_OF_FIN, TE.RCV_FIN, TE.TIMEOUT_2MSL) == [
        T.ESTABLISHED, T.FIN_WAIT_1, T.FIN_WAIT_2, T.TIME_WAIT, T.CLOSED]


def test_passive_close_follows_rfc9293() -> None:
    assert run(T.ESTABLISHED, TE.RCV_FIN, TE.CLOSE, TE.RCV_ACK_OF_FIN) == [
        T.ESTABLISHED, T.CLOSE_WAIT, T.LAST_ACK, T.CLOSED]


def test_simultaneous_close_follows_rfc9293() -> None:
    assert run(T.ESTABLISHED, TE.CLOSE, TE.RCV_FIN, TE.RCV_ACK_OF_FIN, TE.TIMEOUT_2MSL) == [
        T.ESTABLISHED, T.FIN_WAIT_1, T.CLOSING, T.TIME_WAIT, T.CLOSED]


def test_handoff_creates_an_established_tcb_from_closed() -> None:
    assert tcp_step(T.CLOSED, TE.HANDOFF) is T.ESTABLISHED


def test_active_open_reaches_established() -> None:
    assert run(T.CLOSED, TE.CONNECT, TE.RCV_SYNACK) == [T.CLOSED, T.SYN_SENT, T.ESTABLISHED]


@pytest.mark.parametrize("state", [T.ESTABLISHED, T.FIN_WAIT_1, T.FIN_WAIT_2, T.CLOSE_WAIT,
                                   T.CLOSING, T.LAST_ACK, T.SYN_SENT], ids=lambda s: s.name)
def test_rst_and_retransmit_limit_close_the_connection(state: TcpState) -> None:
    assert tcp_step(state, TE.RCV_RST) is T.CLOSED
    assert tcp_step(state, TE.RETRANSMIT_LIMIT) is T.CLOSED


@given(st.sampled_from(T), st.sampled_from(TE))
def test_tcp_step_leaves_state_unchanged_for_events_it_does_not_take(
        state: TcpState, event: TcpEvent) -> None:
    nxt = tcp_step(state, event)
    assert isinstance(nxt, TcpState)
    if (state, event) not in TCP_TABLE:
        assert nxt is state
    else:
        assert nxt is TCP_TABLE[(state, event)]


def test_only_handoff_and_connect_leave_closed() -> None:
    leaving = {ev for ev in TE if tcp_step(T.CLOSED, ev) is not T.CLOSED}
    assert leaving == {TE.HANDOFF, TE.CONNECT}


def test_time_wait_ends_only_by_2msl_timeout() -> None:
    leaving = {ev for ev in TE if tcp_step(T.TIME_WAIT, ev) is not T.TIME_WAIT}
    assert leaving == {TE.TIMEOUT_2MSL}

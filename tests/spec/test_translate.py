"""The splice's rewrites: seq/ack and SACK translation invert each other across the wrap,
timestamps round-trip, windows are never inflated, the MSS is clamped, and the Z3 evaluation
of every rewrite equals the Python one."""

from __future__ import annotations

import pytest
import z3
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spec.records import ServerSessionRecord
from spec.seq import seq_diff
from spec.translate import (
    MAX_WINDOW_FIELD,
    Splice,
    ack_to_client,
    ack_to_server,
    make_splice,
    mss_clamp,
    piece_ok,
    rescale_window,
    sack_to_client,
    sack_to_server,
    seq_to_client,
    seq_to_server,
    split_point,
    tsecr_to_client,
    tsecr_to_server,
    tsval_to_client,
    tsval_to_server,
    window_to_client,
    window_to_server,
)
from tests.spec.strategies import (
    MOD,
    SERVER_TUPLE,
    client_records,
    distance,
    mss,
    seq32,
    server_records,
    window_field,
    wscale,
)


@st.composite
def splices(draw: st.DrawFn) -> Splice:
    """A splice fixed by make_splice from random records with timestamps on both legs."""
    client = draw(client_records(timestamps=True))
    server = draw(server_records(timestamps=True))
    return make_splice(client, server, client_tsval_now=draw(seq32),
                       server_tsval_now=draw(seq32))


def bv(x: int) -> z3.BitVecRef:
    return z3.BitVecVal(x, 32)


def z3_value(expr: object) -> int:
    s = z3.simplify(expr)
    assert z3.is_bv_value(s), f"did not simplify to a value: {s}"
    return s.as_long()


def reference_rescale(field: int, from_shift: int, to_shift: int) -> int:
    """Written from RFC 7323 §2.3: real window = field * 2^from; the new field is the real
    window divided by 2^to, rounded down, and at most 0xFFFF."""
    real = field * 2**from_shift
    return min(real // 2**to_shift, 0xFFFF)


# --- make_splice --------------------------------------------------------------------------


@given(client_records(timestamps=True), server_records(timestamps=True), seq32, seq32)
def test_make_splice_maps_isns_and_first_tsvals_onto_each_leg(client, server, c_ts, s_ts) -> None:
    sp = make_splice(client, server, client_tsval_now=c_ts, server_tsval_now=s_ts)
    # The client's ISN lands on the gateway's ISN towards the server, and vice versa.
    assert seq_to_server(sp, client.rcv_isn) == server.snd_isn
    assert seq_to_client(sp, server.rcv_isn) == client.snd_isn
    # The first relayed TSval continues what the gateway itself sent on each leg (PAWS).
    assert sp.timestamps
    assert tsval_to_server(sp, c_ts) == server.ts_sent
    assert tsval_to_client(sp, s_ts) == client.ts_sent
    # Shifts and MSS come from the right side.
    assert sp.client_snd_wscale == client.negotiated.snd_wscale
    assert sp.client_rcv_wscale == client.negotiated.rcv_wscale
    assert sp.server_snd_wscale == server.negotiated.snd_wscale
    assert sp.server_rcv_wscale == server.negotiated.rcv_wscale
    assert sp.client_mss == client.negotiated.peer_mss
    assert sp.server_mss == server.negotiated.peer_mss
    assert sp.sack == (client.negotiated.sack and server.negotiated.sack)


@given(client_records(), server_records(timestamps=False))
def test_make_splice_without_timestamps_on_one_leg_has_zero_ts_offsets(client, server) -> None:
    sp = make_splice(client, server)
    assert not sp.timestamps
    assert sp.c2s_ts == 0
    assert sp.s2c_ts == 0


@given(client_records())
def test_make_splice_before_server_synack_raises_value_error(client) -> None:
    server = ServerSessionRecord(tuple=SERVER_TUPLE, snd_isn=12345)
    with pytest.raises(ValueError, match="SYN/ACK"):
        make_splice(client, server)


# --- sequence space -----------------------------------------------------------------------


@given(splices(), seq32)
@example(Splice(c2s_seq=1, s2c_seq=MOD - 1), MOD - 1)
def test_ack_inverts_seq_in_both_directions(sp: Splice, x: int) -> None:
    assert ack_to_client(sp, seq_to_server(sp, x)) == x
    assert ack_to_server(sp, seq_to_client(sp, x)) == x
    for y in (seq_to_server(sp, x), seq_to_client(sp, x), ack_to_server(sp, x),
              ack_to_client(sp, x)):
        assert 0 <= y < MOD


@given(splices(), seq32, distance)
def test_translation_preserves_distances_so_preserves_order(sp: Splice, x: int, d: int) -> None:
    y = (x + d) % MOD
    assert seq_diff(seq_to_server(sp, y), seq_to_server(sp, x)) == d
    assert seq_diff(seq_to_client(sp, y), seq_to_client(sp, x)) == d
    assert seq_diff(ack_to_server(sp, y), ack_to_server(sp, x)) == d
    assert seq_diff(ack_to_client(sp, y), ack_to_client(sp, x)) == d


@given(splices(), st.lists(st.tuples(seq32, st.integers(1, 1 << 16)), max_size=4))
def test_sack_blocks_translate_like_acks(sp: Splice, raw: list[tuple[int, int]]) -> None:
    blocks = [(left, (left + n) % MOD) for left, n in raw]
    assert sack_to_server(sp, blocks) == [(ack_to_server(sp, a), ack_to_server(sp, b))
                                          for a, b in blocks]
    assert sack_to_client(sp, blocks) == [(ack_to_client(sp, a), ack_to_client(sp, b))
                                          for a, b in blocks]
    # A client SACK of server data it saw on its leg names the server's own sequence numbers.
    seen_by_client = [(seq_to_client(sp, a), seq_to_client(sp, b)) for a, b in blocks]
    assert sack_to_server(sp, seen_by_client) == blocks
    seen_by_server = [(seq_to_server(sp, a), seq_to_server(sp, b)) for a, b in blocks]
    assert sack_to_client(sp, seen_by_server) == blocks
    # Block lengths survive the translation.
    for (a, b), (a2, b2) in zip(blocks, sack_to_server(sp, blocks), strict=True):
        assert seq_diff(b2, a2) == seq_diff(b, a)


# --- timestamps ---------------------------------------------------------------------------


@given(splices(), seq32)
def test_tsecr_undoes_tsval_translation_both_ways(sp: Splice, x: int) -> None:
    assert tsecr_to_client(sp, tsval_to_server(sp, x)) == x
    assert tsecr_to_server(sp, tsval_to_client(sp, x)) == x


@given(splices(), seq32, st.integers(0, (1 << 31) - 1))
def test_tsval_translation_preserves_progress(sp: Splice, x: int, dt: int) -> None:
    later = (x + dt) % MOD
    assert seq_diff(tsval_to_server(sp, later), tsval_to_server(sp, x)) == dt
    assert seq_diff(tsval_to_client(sp, later), tsval_to_client(sp, x)) == dt


# --- windows and MSS -----------------------------------------------------------------------


@given(window_field, wscale, wscale)
@example(0xFFFF, 14, 0)
@example(0xFFFF, 0, 14)
@example(1, 0, 1)
def test_rescale_window_matches_reference_and_never_exceeds_real_window(
        field: int, from_shift: int, to_shift: int) -> None:
    out = rescale_window(field, from_shift, to_shift)
    assert out == reference_rescale(field, from_shift, to_shift)
    assert 0 <= out <= MAX_WINDOW_FIELD
    assert out << to_shift <= field << from_shift


@given(window_field, wscale, wscale)
def test_rescale_window_saturates_at_0xffff_only_when_real_window_is_larger(
        field: int, from_shift: int, to_shift: int) -> None:
    real = field << from_shift
    out = rescale_window(field, from_shift, to_shift)
    if real >> to_shift > 0xFFFF:
        assert out == 0xFFFF
    else:
        # Not saturated: rounding down loses less than one unit of the receiver's scale.
        assert real - (out << to_shift) < (1 << to_shift)


@given(splices(), window_field)
def test_window_rewrites_use_sender_shift_then_receiver_shift(sp: Splice, field: int) -> None:
    assert window_to_server(sp, field) == reference_rescale(
        field, sp.client_snd_wscale, sp.server_rcv_wscale)
    assert window_to_client(sp, field) == reference_rescale(
        field, sp.server_snd_wscale, sp.client_rcv_wscale)


@given(mss, mss)
def test_mss_clamp_never_exceeds_either_mss(client_mss: int, local_mss: int) -> None:
    m = mss_clamp(client_mss, local_mss)
    assert m == min(client_mss, local_mss)
    assert m <= client_mss
    assert m <= local_mss


@given(st.integers(0, 1 << 16), mss)
def test_split_point_yields_pieces_that_fit_the_mss(length: int, m: int) -> None:
    first = split_point(length, m)
    assert piece_ok(first, m)
    assert first == min(length, m)
    assert not piece_ok(m + 1, m)


# --- Python and Z3 evaluations agree -----------------------------------------------------


@given(window_field, wscale, wscale)
@example(0xFFFF, 14, 0)
@example(0x8000, 14, 0)
@example(0xFFFF, 0, 14)
@settings(max_examples=60)
def test_z3_and_python_rescale_window_agree(field: int, from_shift: int, to_shift: int) -> None:
    symbolic = rescale_window(bv(field), bv(from_shift), bv(to_shift))
    assert z3_value(symbolic) == rescale_window(field, from_shift, to_shift)


@given(st.integers(0, MOD - 1), st.integers(0, 31), st.integers(0, 31))
@example(0xFFFF, 17, 0)
@example(1, 31, 31)
@example(0xFFFFFFFF, 0, 1)
@settings(max_examples=60)
def test_z3_and_python_rescale_window_agree_on_any_32_bit_field_and_shift(
        field: int, from_shift: int, to_shift: int) -> None:
    # Beyond RFC 7323's domain the shifted value can have bit 31 set: only a logical shift
    # keeps the two evaluations equal there.
    symbolic = rescale_window(bv(field), bv(from_shift), bv(to_shift))
    assert z3_value(symbolic) == rescale_window(field, from_shift, to_shift)


@given(splices(), seq32, window_field)
@settings(max_examples=40)
def test_z3_and_python_splice_rewrites_agree(sp: Splice, x: int, field: int) -> None:
    sym = Splice(**{name: (bv(getattr(sp, name)) if type(getattr(sp, name)) is int
                           and name not in ("sack", "timestamps") else getattr(sp, name))
                    for name in Splice.__slots__})
    for fn in (seq_to_server, seq_to_client, ack_to_server, ack_to_client, tsval_to_server,
               tsval_to_client, tsecr_to_server, tsecr_to_client):
        assert z3_value(fn(sym, bv(x))) == fn(sp, x), fn.__name__
    assert z3_value(window_to_server(sym, bv(field))) == window_to_server(sp, field)
    assert z3_value(window_to_client(sym, bv(field))) == window_to_client(sp, field)


@given(mss, mss)
@settings(max_examples=30)
def test_z3_and_python_mss_clamp_agree(a: int, b: int) -> None:
    assert z3_value(mss_clamp(bv(a), bv(b))) == mss_clamp(a, b)

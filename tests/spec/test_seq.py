"""Sequence arithmetic against references written here from RFC 1982 §3.2 and RFC 9293
§3.10.7.4, on the values where modular comparison goes wrong; and the Python and Z3
evaluations of the same definitions agree."""

from __future__ import annotations

import pytest
import z3
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spec.seq import (
    segment_acceptable,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_in_window,
    seq_le,
    seq_lt,
    seq_lt_rfc9293,
    seq_max,
    seq_sub,
    seq_undefined,
    syn_opens_new_incarnation,
)
from tests.spec.strategies import HALF, MOD, seq32, seq_pairs

# --- independent references ---------------------------------------------------------------


def rfc1982_lt(i1: int, i2: int) -> bool:
    """RFC 1982 §3.2 with SERIAL_BITS = 32: i1 < i2 iff
    (i1 < i2 and i2 - i1 < 2^31) or (i1 > i2 and i1 - i2 > 2^31)."""
    return (i1 < i2 and i2 - i1 < 2**31) or (i1 > i2 and i1 - i2 > 2**31)


def rfc1982_le(i1: int, i2: int) -> bool:
    return i1 == i2 or rfc1982_lt(i1, i2)


def signed32(x: int) -> int:
    x %= MOD
    return x - MOD if x >= HALF else x


def rfc9293_acceptable(seg_seq: int, seg_len: int, rcv_nxt: int, rcv_wnd: int) -> bool:
    """RFC 9293 §3.10.7.4's table, comparisons read as RFC 1982 serial order."""
    right = (rcv_nxt + rcv_wnd) % MOD

    def in_window(x: int) -> bool:
        return rfc1982_le(rcv_nxt, x) and rfc1982_lt(x, right)

    if seg_len == 0 and rcv_wnd == 0:
        return seg_seq == rcv_nxt
    if seg_len == 0:
        return in_window(seg_seq)
    if rcv_wnd == 0:
        return False
    return in_window(seg_seq) or in_window((seg_seq + seg_len - 1) % MOD)


def bv(x: int) -> z3.BitVecRef:
    return z3.BitVecVal(x, 32)


def z3_truth(expr: object) -> bool:
    s = z3.simplify(expr)
    assert z3.is_true(s) or z3.is_false(s), f"did not simplify to a constant: {s}"
    return z3.is_true(s)


seg_lens = st.one_of(st.integers(0, 3), st.integers(0, 1 << 17))
windows = st.one_of(st.just(0), st.integers(1, 64), st.integers(0, 1 << 30))


# --- order --------------------------------------------------------------------------------


@given(seq_pairs())
@example((0, HALF - 1))
@example((0, HALF + 1))
@example((MOD - 1, 0))
@example((5, 5))
def test_seq_lt_matches_rfc1982_definition(pair: tuple[int, int]) -> None:
    a, b = pair
    assert seq_lt(a, b) == rfc1982_lt(a, b)
    assert seq_lt(b, a) == rfc1982_lt(b, a)


@given(seq_pairs())
def test_le_gt_ge_are_consistent_with_lt(pair: tuple[int, int]) -> None:
    a, b = pair
    assert seq_le(a, b) == (seq_lt(a, b) or a == b)
    assert seq_gt(a, b) == seq_lt(b, a)
    assert seq_ge(a, b) == seq_le(b, a)
    # Trichotomy, except for the undefined pair where none holds.
    holds = [seq_lt(a, b), a == b, seq_gt(a, b)]
    assert sum(holds) == (0 if seq_undefined(a, b) else 1)


@given(seq32)
def test_pair_2_pow_31_apart_is_undefined_in_rfc1982_and_lt_both_ways_in_rfc9293(a: int) -> None:
    b = (a + HALF) % MOD
    assert not seq_lt(a, b)
    assert not seq_lt(b, a)
    assert not seq_le(a, b)
    assert not seq_le(b, a)
    assert seq_undefined(a, b)
    assert seq_undefined(b, a)
    assert seq_lt_rfc9293(a, b)
    assert seq_lt_rfc9293(b, a)
    assert seq_max(a, b) == a


@given(seq_pairs())
def test_rfc9293_reading_is_signed_difference_and_differs_only_on_undefined_pair(
        pair: tuple[int, int]) -> None:
    a, b = pair
    assert seq_lt_rfc9293(a, b) == (signed32(a - b) < 0)
    if seq_undefined(a, b):
        assert seq_lt_rfc9293(a, b) != seq_lt(a, b)
    else:
        assert seq_lt_rfc9293(a, b) == seq_lt(a, b)


@given(seq_pairs())
def test_seq_undefined_exactly_at_distance_2_pow_31(pair: tuple[int, int]) -> None:
    a, b = pair
    assert seq_undefined(a, b) == ((b - a) % MOD == HALF)


@given(seq_pairs())
def test_seq_max_returns_the_later_of_two(pair: tuple[int, int]) -> None:
    a, b = pair
    m = seq_max(a, b)
    assert m in (a, b)
    assert seq_le(a, m) or seq_undefined(a, b)
    assert seq_le(b, m) or seq_undefined(a, b)


# --- add / sub / window -------------------------------------------------------------------


@given(seq32, st.integers(0, MOD - 1))
def test_seq_add_and_seq_sub_are_inverse_and_stay_in_32_bits(a: int, n: int) -> None:
    s = seq_add(a, n)
    assert 0 <= s < MOD
    assert s == (a + n) % MOD
    assert seq_sub(s, n) == a
    assert seq_add(seq_sub(a, n), n) == a
    assert seq_diff(s, a) == n


@given(seq32, st.integers(1, HALF - 1))
def test_adding_less_than_2_pow_31_moves_forward(a: int, n: int) -> None:
    assert seq_lt(a, seq_add(a, n))
    assert seq_gt(a, seq_sub(a, n))


@given(seq32, seq32, st.one_of(st.integers(0, 64), st.integers(0, HALF - 1)))
def test_seq_in_window_matches_serial_order_reading(x: int, left: int, size: int) -> None:
    right = (left + size) % MOD
    expected = rfc1982_le(left, x) and rfc1982_lt(x, right)
    assert seq_in_window(x, left, size) == expected


@given(seq32, st.integers(0, 40), st.integers(0, 40))
def test_seq_in_window_is_membership_in_enumerated_window(left: int, k: int, size: int) -> None:
    x = (left + k) % MOD
    members = {(left + i) % MOD for i in range(size)}
    assert seq_in_window(x, left, size) == (x in members)
    before = (left - 1 - k) % MOD
    assert seq_in_window(before, left, size) == (before in members)


# --- segment acceptability ----------------------------------------------------------------


@given(seq32, seg_lens, seq32, windows)
@example(100, 0, 100, 0)
@example(101, 0, 100, 0)
@example(100, 1, 100, 0)
@example(MOD - 1, 2, 0, 10)
@example(HALF, 1, 0, 1 << 30)
@settings(max_examples=300)
def test_segment_acceptable_matches_rfc9293_four_case_table(
        seg_seq: int, seg_len: int, rcv_nxt: int, rcv_wnd: int) -> None:
    assert segment_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd) == \
        rfc9293_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd)


@given(seq32, st.integers(1, 1 << 16), st.integers(1, 1 << 16), st.integers(1, 1 << 16))
def test_segment_straddling_left_edge_is_acceptable_by_its_tail(
        rcv_nxt: int, back: int, extra: int, rcv_wnd: int) -> None:
    # Starts `back` octets before RCV.NXT, ends inside the window: case 4's second clause.
    seg_seq = (rcv_nxt - back) % MOD
    seg_len = back + min(extra, rcv_wnd)
    assert not seq_in_window(seg_seq, rcv_nxt, rcv_wnd)
    assert segment_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd)


@pytest.mark.parametrize(("seg_seq", "seg_len", "rcv_nxt", "rcv_wnd", "ok"), [
    (1000, 0, 1000, 0, True),       # case 1: exactly RCV.NXT
    (1001, 0, 1000, 0, False),
    (1000, 10, 1000, 0, False),     # case 3: zero window, data never acceptable
    (1500, 0, 1000, 500, False),    # case 2: one past the right edge
    (1499, 0, 1000, 500, True),
    (999, 1, 1000, 500, False),     # case 4: old octet only
    (999, 2, 1000, 500, True),      # case 4: tail inside
    (MOD - 5, 10, 0, 100, True),    # wrap: tail past 0
])
def test_segment_acceptable_table_examples(seg_seq: int, seg_len: int, rcv_nxt: int,
                                           rcv_wnd: int, ok: bool) -> None:
    assert segment_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd) is ok


# --- Python and Z3 evaluations agree -----------------------------------------------------


@given(seq_pairs())
@settings(max_examples=60)
def test_z3_and_python_seq_order_agree(pair: tuple[int, int]) -> None:
    a, b = pair
    assert z3_truth(seq_lt(bv(a), bv(b))) == seq_lt(a, b)
    assert z3_truth(seq_le(bv(a), bv(b))) == seq_le(a, b)
    assert z3_truth(seq_undefined(bv(a), bv(b))) == seq_undefined(a, b)
    assert z3_truth(seq_lt_rfc9293(bv(a), bv(b))) == seq_lt_rfc9293(a, b)


@given(seq32, seg_lens, seq32, windows)
@example(100, 0, 100, 0)
@example(HALF, 1, 0, 1 << 30)
@settings(max_examples=60)
def test_z3_and_python_segment_acceptable_agree(
        seg_seq: int, seg_len: int, rcv_nxt: int, rcv_wnd: int) -> None:
    symbolic = segment_acceptable(bv(seg_seq), bv(seg_len), bv(rcv_nxt), bv(rcv_wnd))
    assert z3_truth(symbolic) == segment_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd)


@given(seq32, st.integers(0, MOD - 1))
@settings(max_examples=40)
def test_z3_and_python_seq_add_sub_agree(a: int, n: int) -> None:
    assert z3.simplify(seq_add(bv(a), bv(n))).as_long() == seq_add(a, n)
    assert z3.simplify(seq_sub(bv(a), bv(n))).as_long() == seq_sub(a, n)


@given(seq32, seq32, seq32, seq32)
def test_a_new_incarnation_is_judged_by_timestamp_when_both_have_one(
        ts_recent: int, tsval: int, rcv_nxt: int, seq: int) -> None:
    # RFC 6191 §2: the timestamps decide, whatever the sequence numbers say
    assert syn_opens_new_incarnation(True, ts_recent, tsval, rcv_nxt, seq) == \
        seq_lt(ts_recent, tsval)
    # RFC 1122 §4.2.2.13: without them (on either side), the sequence number decides
    for ts_on, recent, val in ((False, ts_recent, tsval), (True, None, tsval),
                               (True, ts_recent, None)):
        assert syn_opens_new_incarnation(ts_on, recent, val, rcv_nxt, seq) == \
            seq_lt(rcv_nxt, seq)


def test_an_old_or_equal_syn_is_no_new_incarnation() -> None:
    assert not syn_opens_new_incarnation(True, 1000, 1000, 5, 10)
    assert not syn_opens_new_incarnation(True, 1000, 999, 5, 10)
    assert syn_opens_new_incarnation(True, 2**32 - 1, 3, 5, 1)  # across the wrap
    assert not syn_opens_new_incarnation(False, None, None, 10, 10)

"""The eligibility predicate names one reason per handoff condition, in priority order, and
the HTTP/1.x head parser accepts routable heads and nothing else."""

from __future__ import annotations

from dataclasses import replace

import pytest
import z3
from hypothesis import given, settings
from hypothesis import strategies as st

from spec.eligibility import (
    HandoffReason,
    Path,
    SegmentFacts,
    classify,
    parse_request_head,
    path_of,
    request_head_complete,
)
from tests.spec.strategies import HALF, MOD, seq32, seq_pairs

RCV_NXT = 0xFFFFFFF0

CLEAN = SegmentFacts(is_fragment=False, unsupported_flags=False, unsupported_option=False,
                     seq=RCV_NXT, rcv_nxt=RCV_NXT, payload_len=100, fin=False,
                     request_complete=True, request_parseable=True,
                     length_changing_rewrite=False)
"""A first request segment the fast path can process."""

R = HandoffReason


def test_clean_first_request_stays_on_fast_path() -> None:
    assert classify(CLEAN) == R.NONE
    assert path_of(classify(CLEAN)) == Path.FAST


REASON_EXAMPLES = [
    ({"is_fragment": True}, R.IP_FRAGMENT),
    ({"unsupported_flags": True}, R.UNSUPPORTED_FLAGS),
    ({"unsupported_option": True}, R.UNSUPPORTED_OPTION),
    ({"seq": (RCV_NXT + 100) % MOD}, R.OUT_OF_ORDER_FIRST_DATA),
    ({"seq": (RCV_NXT + HALF) % MOD}, R.OUT_OF_ORDER_FIRST_DATA),
    ({"seq": RCV_NXT - 1}, R.OVERLAPPING_FIRST_DATA),
    ({"fin": True}, R.EARLY_FIN),
    ({"request_complete": False}, R.PARTIAL_REQUEST),
    ({"request_parseable": False}, R.UNPARSEABLE_REQUEST),
    ({"length_changing_rewrite": True}, R.LENGTH_CHANGING_REWRITE),
]
"""One concrete first segment per reason: CLEAN with a single condition switched on."""


@pytest.mark.parametrize(("change", "reason"), REASON_EXAMPLES,
                         ids=lambda v: v.name if isinstance(v, HandoffReason) else None)
def test_each_condition_alone_yields_its_reason(change: dict, reason: HandoffReason) -> None:
    got = classify(replace(CLEAN, **change))
    assert got == reason
    assert path_of(got) == Path.NORMAL


def test_every_reason_has_an_example_above() -> None:
    # Guards the parametrization: a new reason must get its own example.
    assert {reason for _, reason in REASON_EXAMPLES} == set(R) - {R.NONE}


def test_fragment_that_is_also_out_of_order_is_ip_fragment() -> None:
    f = replace(CLEAN, is_fragment=True, seq=(RCV_NXT + 1000) % MOD)
    assert classify(f) == R.IP_FRAGMENT


def test_overlapping_with_fin_and_partial_request_is_overlapping() -> None:
    f = replace(CLEAN, seq=(RCV_NXT - 1) % MOD, fin=True, request_complete=False)
    assert classify(f) == R.OVERLAPPING_FIRST_DATA


# --- properties ---------------------------------------------------------------------------


@st.composite
def facts(draw: st.DrawFn) -> SegmentFacts:
    rcv_nxt, seq = draw(st.one_of(
        seq_pairs(), seq32.map(lambda x: (x, x)), seq32.map(lambda x: (x, x))))
    return SegmentFacts(
        is_fragment=draw(st.booleans()), unsupported_flags=draw(st.booleans()),
        unsupported_option=draw(st.booleans()), seq=seq, rcv_nxt=rcv_nxt,
        payload_len=draw(st.integers(1, 1460)), fin=draw(st.booleans()),
        request_complete=draw(st.booleans()), request_parseable=draw(st.booleans()),
        length_changing_rewrite=draw(st.booleans()))


def conditions(f: SegmentFacts) -> list[tuple[HandoffReason, bool]]:
    """Each reason's condition, written from the reason docs, in priority order."""
    before = (f.rcv_nxt - f.seq) % MOD   # octets by which seq precedes rcv_nxt
    overlapping = 0 < before < HALF
    return [
        (R.IP_FRAGMENT, f.is_fragment),
        (R.UNSUPPORTED_FLAGS, f.unsupported_flags),
        (R.UNSUPPORTED_OPTION, f.unsupported_option),
        (R.OUT_OF_ORDER_FIRST_DATA, f.seq != f.rcv_nxt and not overlapping),
        (R.OVERLAPPING_FIRST_DATA, overlapping),
        (R.EARLY_FIN, f.fin),
        (R.PARTIAL_REQUEST, not f.request_complete),
        (R.UNPARSEABLE_REQUEST, not f.request_parseable),
        (R.LENGTH_CHANGING_REWRITE, f.length_changing_rewrite),
    ]


@given(facts())
@settings(max_examples=300)
def test_classify_is_none_iff_no_condition_holds(f: SegmentFacts) -> None:
    conds = conditions(f)
    assert (classify(f) == R.NONE) == (not any(held for _, held in conds))


@given(facts())
@settings(max_examples=300)
def test_classify_names_the_first_condition_that_holds(f: SegmentFacts) -> None:
    reason = classify(f)
    held = [r for r, h in conditions(f) if h]
    if held:
        assert reason == held[0]
        assert path_of(reason) == Path.NORMAL
    else:
        assert reason == R.NONE
        assert path_of(reason) == Path.FAST


@given(facts())
@settings(max_examples=40)
def test_z3_and_python_classify_agree(f: SegmentFacts) -> None:
    sym = replace(f, seq=z3.BitVecVal(f.seq, 32), rcv_nxt=z3.BitVecVal(f.rcv_nxt, 32),
                  **{k: z3.BoolVal(getattr(f, k)) for k in (
                      "is_fragment", "unsupported_flags", "unsupported_option", "fin",
                      "request_complete", "request_parseable", "length_changing_rewrite")})
    got = z3.simplify(classify(sym))
    assert z3.is_bv_value(got)
    assert got.as_long() == classify(f)


# --- HTTP/1.x request heads ----------------------------------------------------------------


def test_parse_get_head() -> None:
    head = b"GET /index.html?q=1 HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n\r\n"
    h = parse_request_head(head + b"ignored body")
    assert h is not None
    assert h.method == b"GET"
    assert h.target == b"/index.html?q=1"
    assert h.version == b"HTTP/1.1"
    assert h.host == b"www.example.com"
    assert h.head_len == len(head)


def test_parse_post_head_with_lowercase_host_and_body() -> None:
    head = (b"POST /api/v1/items HTTP/1.0\r\nContent-Length: 7\r\nhost:  api.example.org \r\n"
            b"\r\n")
    h = parse_request_head(head + b"payload")
    assert h is not None
    assert (h.method, h.target, h.version) == (b"POST", b"/api/v1/items", b"HTTP/1.0")
    assert h.host == b"api.example.org"
    assert h.head_len == len(head)


def test_parse_head_without_host_has_empty_host() -> None:
    h = parse_request_head(b"GET / HTTP/1.0\r\n\r\n")
    assert h is not None
    assert h.host == b""
    assert h.head_len == 18


@pytest.mark.parametrize("payload", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n", id="no-blank-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a", id="truncated-header"),
    pytest.param(b"GET /HTTP/1.1\r\nHost: a\r\n\r\n", id="request-line-two-parts"),
    pytest.param(b"GET / extra HTTP/1.1\r\nHost: a\r\n\r\n", id="request-line-four-parts"),
    pytest.param(b"GET  HTTP/1.1\r\nHost: a\r\n\r\n", id="empty-target"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", id="not-http-1"),
    pytest.param(b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", id="unknown-method"),
    pytest.param(b"get / HTTP/1.1\r\nHost: a\r\n\r\n", id="lowercase-method"),
    pytest.param(b"GET / HTTP/1.1\r\nHost a\r\n\r\n", id="header-without-colon"),
    pytest.param(b"GET / HTTP/1.1\r\n: a\r\n\r\n", id="header-empty-name"),
    pytest.param(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", id="space-before-colon"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-client-hello"),
])
def test_parse_request_head_rejects(payload: bytes) -> None:
    assert parse_request_head(payload) is None


HEADS = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
]


@pytest.mark.parametrize("head", HEADS)
def test_request_head_complete_false_for_every_proper_prefix(head: bytes) -> None:
    assert request_head_complete(head)
    assert parse_request_head(head) is not None
    for i in range(len(head)):
        assert not request_head_complete(head[:i]), i
        assert parse_request_head(head[:i]) is None, i


@pytest.mark.parametrize("head", HEADS)
def test_request_head_complete_true_once_blank_line_is_in_with_any_body(head: bytes) -> None:
    body = b"abc\r\n\r\nxyz"
    for i in range(len(body) + 1):
        assert request_head_complete(head + body[:i])
        h = parse_request_head(head + body[:i])
        assert h is not None
        assert h.head_len == len(head)


@given(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"]),
       st.from_regex(rb"\A/[a-zA-Z0-9/_.?=&-]{0,40}\Z"),
       st.from_regex(rb"\A[a-z0-9]([a-z0-9-]{0,20}\.){1,3}[a-z]{2,6}\Z"),
       st.data())
@settings(max_examples=50)
def test_generated_head_parses_and_is_incomplete_at_every_split(method, target, host,
                                                                 data) -> None:
    head = method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nAccept: */*\r\n\r\n"
    h = parse_request_head(head)
    assert h is not None
    assert (h.method, h.target, h.host, h.head_len) == (method, target, host, len(head))
    cut = data.draw(st.integers(0, len(head) - 1))
    assert not request_head_complete(head[:cut])
    assert not request_head_complete(head[cut:-1])
    assert request_head_complete(head)


def test_parse_request_head_rejects_duplicate_host() -> None:
    # This used to route by the last Host (RFC 9112 §3.2 requires rejecting the request).
    head = b"GET / HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n"
    assert parse_request_head(head) is None


def test_parse_request_head_rejects_bare_lf_in_a_header() -> None:
    assert parse_request_head(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n") is None


def test_parse_request_head_takes_the_host_from_an_absolute_form_target() -> None:
    h = parse_request_head(b"GET http://real.example/x HTTP/1.1\r\nHost: other\r\n\r\n")
    assert h is not None and h.host == b"real.example"


def test_make_splice_with_timestamps_needs_both_first_tsvals() -> None:
    from spec.records import (
        ClientSessionRecord,
        FourTuple,
        Negotiated,
        ServerSessionRecord,
        SynOptions,
    )
    from spec.translate import make_splice

    neg = Negotiated(peer_mss=1460, local_mss=1460, timestamps=True)
    c = ClientSessionRecord(FourTuple("a", 1, "b", 2), 1, 2, SynOptions(), neg, ts_sent=5)
    s = ServerSessionRecord(FourTuple("c", 3, "d", 4), 7, rcv_isn=9, negotiated=neg, ts_sent=6)
    with pytest.raises(ValueError, match="client_tsval_now"):
        make_splice(c, s)

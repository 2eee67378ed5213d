"""The model the proofs check, and deliberately broken variants of it.

A :class:`Model` bundles the definitions the proofs are about. ``REAL`` is the project's own
(the functions the reference gateway imports). Each :class:`Variant` replaces one definition
with a classic gateway bug (an off-by-one translation, SACK blocks left untranslated, ISNs not
copied at the handoff, a window rounded up, ...). Every invariant names the variants that must
break it, and a test checks that each does: a proof that cannot fail proves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from spec import eligibility, handoff, models, seq, states, translate
from spec.bv import MASK32, ite, lshr, ult
from spec.records import TCB, ClientSessionRecord
from spec.states import FastPathEvent, FastPathState, Transition


@dataclass(frozen=True)
class Model:
    seq_lt: Callable[[Any, Any], Any] = seq.seq_lt
    seq_to_server: Callable[..., Any] = translate.seq_to_server
    seq_to_client: Callable[..., Any] = translate.seq_to_client
    ack_to_server: Callable[..., Any] = translate.ack_to_server
    ack_to_client: Callable[..., Any] = translate.ack_to_client
    sack_to_server: Callable[..., Any] = translate.sack_to_server
    sack_to_client: Callable[..., Any] = translate.sack_to_client
    tsval_to_server: Callable[..., Any] = translate.tsval_to_server
    tsval_to_client: Callable[..., Any] = translate.tsval_to_client
    make_splice: Callable[..., Any] = translate.make_splice
    rescale_window: Callable[..., Any] = translate.rescale_window
    mss_clamp: Callable[..., Any] = translate.mss_clamp
    split_point: Callable[..., Any] = translate.split_point
    classify: Callable[..., Any] = eligibility.classify
    fast_path_table: dict[FastPathState, dict[FastPathEvent, Transition]] = field(
        default_factory=lambda: states.FAST_PATH_TABLE)
    handoff: Callable[..., Any] = handoff.handoff
    fp_ack_to_client: Callable[..., Any] = models.fp_ack_to_client


REAL = Model()


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    model: Model
    breaks: tuple[str, ...]


def _bad_make_splice_no_ts(client: Any, server: Any, client_tsval_now: Any = None,
                           server_tsval_now: Any = None) -> translate.Splice:
    sp = translate.make_splice(client, server, client_tsval_now, server_tsval_now)
    return replace(sp, c2s_ts=0, s2c_ts=0)


def _window_round_up(field_: Any, from_shift: Any, to_shift: Any) -> Any:
    real = (field_ << from_shift) & MASK32
    out = lshr(real + (1 << to_shift) - 1, to_shift)  # the bug: ceil instead of floor
    return ite(ult(translate.MAX_WINDOW_FIELD, out), translate.MAX_WINDOW_FIELD, out)


def _fresh_isns(client: ClientSessionRecord) -> tuple[Any, Any]:
    # The bug: the normal path picks its own ISS instead of copying the fast path's.
    return client.rcv_isn, (client.snd_isn + 0x1000) & MASK32


def _tcb_forgets_syn(client: ClientSessionRecord, rcv_isn: Any, snd_isn: Any,
                     handshake_done: Any, rcv_wnd: Any) -> TCB:
    tcb = handoff.create_tcb(client, rcv_isn, snd_isn, handshake_done, rcv_wnd)
    tcb.rcv_nxt = rcv_isn  # the bug: RCV.NXT not advanced past the SYN
    return tcb


def _owner_reverts() -> dict[FastPathState, dict[FastPathEvent, Transition]]:
    table = {s: dict(row) for s, row in states.FAST_PATH_TABLE.items()}
    table[FastPathState.HANDED_OFF][FastPathEvent.SERVER_SYNACK] = Transition(
        states.Effect.SPLICE, FastPathState.SPLICED)
    return table


def _classify_ignores_fragments(f: eligibility.SegmentFacts) -> Any:
    return eligibility.classify(replace(f, is_fragment=False))


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("unsigned_compare",
            "compares sequence numbers as plain unsigned ints, ignoring the 2^32 wrap",
            replace(REAL, seq_lt=lambda a, b: ult(a, b)),
            ("seq_order_total", "translation_preserves_order")),
    Variant("truncated_31bit",
            "translates in 31-bit arithmetic (drops the top bit of the sequence number)",
            replace(REAL, seq_to_server=lambda sp, s: (s + sp.c2s_seq) & 0x7FFFFFFF),
            ("translation_bijection", "translation_preserves_order", "ack_inverts_seq")),
    Variant("off_by_one_seq",
            "client-to-server sequence translation is one octet short",
            replace(REAL, seq_to_server=lambda sp, s: (s + sp.c2s_seq - 1) & MASK32),
            ("ack_inverts_seq", "splice_bounded_model_check")),
    Variant("ack_wrong_offset",
            "client ACKs are shifted by the client-to-server offset instead of the "
            "server-to-client one",
            replace(REAL, ack_to_server=lambda sp, a: (a - sp.c2s_seq) & MASK32),
            ("ack_inverts_seq",)),
    Variant("sack_untranslated",
            "SACK blocks are relayed without translation (the seq/ack are translated)",
            replace(REAL, sack_to_server=lambda sp, blocks: list(blocks)),
            ("sack_blocks_valid",)),
    Variant("ts_not_offset",
            "TSval/TSecr relayed raw: the server's TS.Recent (the gateway's SYN TSval) can be "
            "ahead of the client's clock",
            replace(REAL, make_splice=_bad_make_splice_no_ts),
            ("paws_monotonic",)),
    Variant("window_round_up",
            "window rescaling rounds up instead of down",
            replace(REAL, rescale_window=_window_round_up),
            ("window_never_inflated",)),
    Variant("mss_unclamped",
            "the server-side SYN advertises the gateway's own MSS, not the client's",
            replace(REAL, mss_clamp=lambda client_mss, local_mss: local_mss),
            ("mss_respected",)),
    Variant("isn_not_copied",
            "the normal path picks a fresh ISS instead of the client session sending ISN",
            replace(REAL, handoff=partial(handoff.handoff, obtain=_fresh_isns)),
            ("handoff_continuity",)),
    Variant("rcv_nxt_forgets_syn",
            "the handoff's TCB sets RCV.NXT to the client's ISN, not ISN + 1",
            replace(REAL, handoff=partial(handoff.handoff, make_tcb=_tcb_forgets_syn)),
            ("handoff_continuity",)),
    Variant("ack_before_server",
            "the fast path ACKs the held request to the client before the server has",
            replace(REAL, fp_ack_to_client=partial(models.fp_ack_to_client,
                                                   ack_held_early=True)),
            ("ack_safety",)),
    Variant("owner_reverts",
            "a late server SYN/ACK moves a handed-off session back to the fast path",
            replace(REAL, fast_path_table=_owner_reverts()),
            ("path_exclusivity",)),
    Variant("fragment_on_fast_path",
            "the eligibility predicate lets an IP-fragmented request stay on the fast path",
            replace(REAL, classify=_classify_ignores_fragments),
            ("eligibility_sound",)),
)}

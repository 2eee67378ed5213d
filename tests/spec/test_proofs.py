"""Every invariant is proved on the real model, and every broken variant is caught by the
proofs it claims to break, with a counterexample trace that renders and writes as a pcap."""

from __future__ import annotations

import dpkt
import pytest

from spec.invariants import REGISTRY, Status, all_invariants, run
from spec.variants import REAL, VARIANTS

INVARIANTS = {inv.name: inv for inv in all_invariants()}
BROKEN = [(v.name, inv) for v in VARIANTS.values() for inv in v.breaks]


@pytest.mark.parametrize("name", sorted(INVARIANTS))
def test_invariant_is_proved_on_the_real_model(name: str) -> None:
    res = run(INVARIANTS[name], REAL)
    assert res.status is Status.PROVED, f"{name}: {res.status.value}: {res.detail}"


@pytest.mark.parametrize(("variant", "name"), BROKEN)
def test_broken_variant_yields_a_counterexample_trace_and_pcap(variant: str, name: str,
                                                               tmp_path) -> None:
    res = run(INVARIANTS[name], VARIANTS[variant].model)
    assert res.status is Status.COUNTEREXAMPLE, f"{variant} not caught by {name}: {res.detail}"
    assert res.detail
    assert res.trace is not None and res.trace.packets
    text = res.trace.render()
    assert name in text
    path = res.trace.write_pcap(tmp_path / f"{name}.pcap")
    with path.open("rb") as f:
        frames = list(dpkt.pcap.Reader(f))
    assert len(frames) == len(res.trace.packets)


def test_every_invariant_names_variants_that_really_claim_to_break_it() -> None:
    for inv in INVARIANTS.values():
        assert inv.broken_by, f"{inv.name} has no broken variant: a proof that cannot fail"
        for v in inv.broken_by:
            assert inv.name in VARIANTS[v].breaks, f"{v} does not list {inv.name}"
    for v in VARIANTS.values():
        for name in v.breaks:
            assert v.name in INVARIANTS[name].broken_by, f"{name} does not list {v.name}"


def test_every_invariant_serves_a_claim_element_or_an_rfc() -> None:
    from spec.claim import CLAIM1_IDS

    for inv in INVARIANTS.values():
        assert inv.serves
        for s in inv.serves:
            assert s in CLAIM1_IDS or s.startswith("RFC "), f"{inv.name}: unknown {s!r}"


def test_registry_holds_the_invariants_the_issue_requires() -> None:
    required = {"translation_bijection", "ack_inverts_seq", "translation_preserves_order",
                "sack_blocks_valid", "paws_monotonic", "window_never_inflated",
                "mss_respected", "handoff_continuity", "ack_safety", "path_exclusivity",
                "splice_bounded_model_check"}
    assert required <= set(REGISTRY)

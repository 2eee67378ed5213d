"""The Z3 proofs; importing this package registers every invariant (spec.invariants)."""

from spec.proofs import arithmetic, bmc, continuity, options, safety

__all__ = ["arithmetic", "bmc", "continuity", "options", "safety"]

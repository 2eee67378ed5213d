"""The registry of named invariants and what a proof attempt returns.

Each invariant is one Z3 proof obligation about the definitions in ``spec/``. Its ``check``
takes a :class:`~spec.variants.Model` (the real definitions by default, or a deliberately
broken variant from ``spec.variants``) so that a test can show the proof *does* find a
counterexample when the definition is wrong.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spec.trace import Trace
    from spec.variants import Model


class Status(enum.Enum):
    PROVED = "proved"
    COUNTEREXAMPLE = "counterexample"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class ProofResult:
    name: str
    status: Status
    seconds: float
    detail: str = ""
    """For a counterexample: the solver's assignment, readable."""
    trace: Trace | None = None
    """For a counterexample: a two-leg packet trace that exhibits it."""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status.value,
                               "seconds": round(self.seconds, 4)}
        if self.detail:
            out["detail"] = self.detail
        if self.trace is not None:
            out["trace"] = self.trace.render()
        return out


@dataclass(frozen=True, slots=True)
class Invariant:
    name: str
    guarantees: str
    """One line: what holding this invariant guarantees a gateway user."""
    serves: tuple[str, ...]
    """Claim-1 element IDs (spec.claim) and RFC requirements ("RFC 9293 §3.4") it serves."""
    check: Callable[[Model], ProofResult] = field(repr=False)
    broken_by: tuple[str, ...] = ()
    """Names of variants in spec.variants that must make this proof fail."""


REGISTRY: dict[str, Invariant] = {}


def invariant(name: str, guarantees: str, serves: tuple[str, ...],
              broken_by: tuple[str, ...]) -> Callable[[Callable[[Model], ProofResult]],
                                                      Callable[[Model], ProofResult]]:
    """Register a proof function under ``name``."""
    def deco(fn: Callable[[Model], ProofResult]) -> Callable[[Model], ProofResult]:
        if name in REGISTRY:
            raise ValueError(f"invariant {name!r} registered twice")
        REGISTRY[name] = Invariant(name, guarantees, serves, fn, broken_by)
        return fn
    return deco


def all_invariants() -> list[Invariant]:
    """Every registered invariant, in registration order (importing the proof modules)."""
    import spec.proofs  # noqa: F401  (registers the proofs)

    return list(REGISTRY.values())


def run(inv: Invariant, model: Model | None = None) -> ProofResult:
    """Check one invariant against ``model`` (the real definitions when None), timed."""
    from spec.variants import REAL

    t0 = time.perf_counter()
    res = inv.check(model or REAL)
    res.seconds = time.perf_counter() - t0
    return res

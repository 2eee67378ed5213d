"""Shared machinery of the proofs: symbolic records, the prove-or-counterexample loop.

A proof states a claim ``P`` over bit-vector variables and asks Z3 for a model of ``not P``:
``unsat`` means proved for every 32-bit value; ``sat`` yields a counterexample, which the
proof turns into a concrete two-leg packet trace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import z3

from spec.invariants import ProofResult, Status
from spec.records import ClientSessionRecord, FourTuple, Negotiated, ServerSessionRecord, SynOptions
from spec.topology import (
    CLIENT_IP,
    CLIENT_PORT,
    GW_SERVER_IP,
    GW_SERVER_PORT,
    SERVER_IPS,
    SERVER_PORT,
    VIP,
    VPORT,
)
from spec.trace import Trace

TIMEOUT_MS = 60_000

CLIENT_TUPLE = FourTuple(CLIENT_IP, CLIENT_PORT, VIP, VPORT)
SERVER_TUPLE = FourTuple(GW_SERVER_IP, GW_SERVER_PORT, SERVER_IPS[0], SERVER_PORT)


def bv(name: str, width: int = 32) -> z3.BitVecRef:
    return z3.BitVec(name, width)


def bvs(names: str, width: int = 32) -> list[z3.BitVecRef]:
    return [z3.BitVec(n, width) for n in names.split()]


def symbolic_client(prefix: str = "c", *, wscale: Any = 0, rcv_wscale: Any = 0,
                    timestamps: bool = False, sack: bool = False,
                    peer_mss: Any = 1460, local_mss: Any = 1460) -> ClientSessionRecord:
    """A client session record whose ISNs (and TS state) are free variables."""
    return ClientSessionRecord(
        tuple=CLIENT_TUPLE, rcv_isn=bv(f"{prefix}_isn_client"),
        snd_isn=bv(f"{prefix}_isn_gw_to_client"),
        syn_options=SynOptions(mss=1460, wscale=None, sack_permitted=sack),
        negotiated=Negotiated(peer_mss=peer_mss, local_mss=local_mss, snd_wscale=wscale,
                              rcv_wscale=rcv_wscale, sack=sack, timestamps=timestamps),
        ts_sent=bv(f"{prefix}_ts_gw_to_client") if timestamps else None,
        ts_recent=bv(f"{prefix}_ts_recent_client") if timestamps else None,
        rcv_wnd_field=0)


def symbolic_server(prefix: str = "s", *, wscale: Any = 0, rcv_wscale: Any = 0,
                    timestamps: bool = False, sack: bool = False,
                    peer_mss: Any = 1460, local_mss: Any = 1460) -> ServerSessionRecord:
    return ServerSessionRecord(
        tuple=SERVER_TUPLE, snd_isn=bv(f"{prefix}_isn_gw_to_server"),
        rcv_isn=bv(f"{prefix}_isn_server"),
        negotiated=Negotiated(peer_mss=peer_mss, local_mss=local_mss, snd_wscale=wscale,
                              rcv_wscale=rcv_wscale, sack=sack, timestamps=timestamps),
        ts_sent=bv(f"{prefix}_ts_gw_to_server") if timestamps else None)


def val(m: z3.ModelRef, x: Any) -> int:
    """The concrete value of ``x`` in model ``m`` (ints pass through)."""
    if isinstance(x, int):
        return x
    v = m.eval(x, model_completion=True)
    if z3.is_true(v):
        return 1
    if z3.is_false(v):
        return 0
    return v.as_long()


def describe(m: z3.ModelRef, only: str | None = None) -> str:
    """The solver's assignment, one ``name = value (0xhex)`` per variable, sorted; with
    ``only``, just the variables whose name contains it."""
    parts = []
    for d in sorted(m.decls(), key=lambda d: d.name()):
        if only is not None and only not in d.name():
            continue
        v = m[d]
        if z3.is_bv_value(v):
            parts.append(f"{d.name()} = {v.as_long()} (0x{v.as_long():08x})")
        else:
            parts.append(f"{d.name()} = {v}")
    return "; ".join(parts) or "every assignment is a counterexample (e.g. all variables 0)"


def prove(name: str, claim: Any, to_trace: Callable[[z3.ModelRef], Trace],
          assumptions: tuple[Any, ...] = (), detail_only: str | None = None) -> ProofResult:
    """Prove ``assumptions -> claim`` for all values, or return a counterexample with a trace."""
    s = z3.Solver()
    s.set("timeout", TIMEOUT_MS)
    s.add(*assumptions)
    s.add(z3.Not(claim))
    r = s.check()
    if r == z3.unsat:
        return ProofResult(name, Status.PROVED, 0.0)
    if r == z3.sat:
        m = s.model()
        return ProofResult(name, Status.COUNTEREXAMPLE, 0.0, detail=describe(m, detail_only),
                           trace=to_trace(m))
    return ProofResult(name, Status.UNKNOWN, 0.0, detail=f"solver said {r}: {s.reason_unknown()}")


def combine(name: str, results: list[ProofResult]) -> ProofResult:
    """One result for a proof made of several obligations: the first failure, else proved."""
    for r in results:
        if r.status is not Status.PROVED:
            r.name = name
            return r
    return ProofResult(name, Status.PROVED, 0.0)

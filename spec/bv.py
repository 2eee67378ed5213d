"""Dual-domain primitives: one expression, evaluated on Python ints or encoded as Z3 bit-vectors.

Why this module exists: the Z3 proofs must be about the very definitions the reference gateway
imports. Every model function in ``spec/`` is written with ``+ - & | ^ <<`` (which ints and
``z3.BitVecRef`` share) and with the helpers below (for the operators whose meaning differs:
Z3's ``<``, ``>>`` and ``/`` are *signed*). Called with ints, a model function computes a value
(the gateway's hot path); called with bit-vectors, it builds the formula a proof checks.

The int branch is tested first, with ``type(x) is int`` inline for the comparisons the fast
path makes several times per segment, so the gateway pays next to nothing for the dual use.
Z3 is imported only when a symbolic value actually shows up.
"""

from __future__ import annotations

from typing import Any

MASK32 = 0xFFFFFFFF
WIDTH = 32

_z3: Any = None


def z3mod() -> Any:
    """The z3 module, imported on first symbolic use (the gateway never pays for it)."""
    global _z3
    if _z3 is None:
        import z3

        _z3 = z3
    return _z3


def is_concrete(*xs: object) -> bool:
    """True when every argument is a plain int/bool (the evaluated domain)."""
    for x in xs:
        t = type(x)
        if t is not int and t is not bool:
            return False
    return True


def _bv(x: Any, width: int = WIDTH) -> Any:
    """Lift an int to a bit-vector value; leave symbolic terms alone."""
    if type(x) is int:
        return z3mod().BitVecVal(x & ((1 << width) - 1), width)
    return x


def ult(a: Any, b: Any) -> Any:
    """Unsigned a < b."""
    if (type(a) is int and type(b) is int) or is_concrete(a, b):
        return a < b
    return z3mod().ULT(_bv(a), _bv(b))


def ule(a: Any, b: Any) -> Any:
    """Unsigned a <= b."""
    if (type(a) is int and type(b) is int) or is_concrete(a, b):
        return a <= b
    return z3mod().ULE(_bv(a), _bv(b))


def lshr(a: Any, n: Any) -> Any:
    """Logical right shift (Z3's ``>>`` is arithmetic)."""
    if (type(a) is int and type(n) is int) or is_concrete(a, n):
        return a >> n
    return z3mod().LShR(_bv(a), _bv(n))


def udiv(a: Any, b: Any) -> Any:
    """Unsigned division (Z3's ``/`` is signed)."""
    if is_concrete(a, b):
        return a // b
    return z3mod().UDiv(_bv(a), _bv(b))


def ite(c: Any, a: Any, b: Any) -> Any:
    """``a if c else b`` in both domains (both branches are evaluated)."""
    if type(c) is bool:
        return a if c else b
    z3 = z3mod()
    if type(a) is bool and type(b) is bool:
        return z3.If(c, z3.BoolVal(a), z3.BoolVal(b))
    if type(a) is int:
        a = _bv(a, b.size() if hasattr(b, "size") else WIDTH)
    if type(b) is int:
        b = _bv(b, a.size() if hasattr(a, "size") else WIDTH)
    return z3.If(c, a, b)


def and_(*cs: Any) -> Any:
    """Logical conjunction in both domains."""
    for c in cs:
        if type(c) is not bool:
            return z3mod().And(*cs)
    return all(cs)


def or_(*cs: Any) -> Any:
    """Logical disjunction in both domains."""
    for c in cs:
        if type(c) is not bool:
            return z3mod().Or(*cs)
    return any(cs)


def not_(c: Any) -> Any:
    """Logical negation in both domains."""
    if type(c) is bool:
        return not c
    return z3mod().Not(c)


def implies(a: Any, b: Any) -> Any:
    """Logical implication in both domains."""
    if type(a) is bool and type(b) is bool:
        return (not a) or b
    return z3mod().Implies(a, b)


def umin(a: Any, b: Any) -> Any:
    """Unsigned minimum."""
    if is_concrete(a, b):
        return a if a < b else b
    return ite(ult(a, b), a, b)


def umax(a: Any, b: Any) -> Any:
    """Unsigned maximum."""
    if is_concrete(a, b):
        return a if a > b else b
    return ite(ult(a, b), b, a)


def eq(a: Any, b: Any) -> Any:
    """Equality that also works between an int and a bit-vector of another width."""
    if is_concrete(a, b):
        return a == b
    return _bv(a) == _bv(b)

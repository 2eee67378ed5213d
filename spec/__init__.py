"""Formal specification of a fast-path/normal-path TCP service gateway (US 9,386,088 claim 1).

Definitions here run on Python ints (the reference gateway imports them) and encode into Z3
bit-vectors (the proofs in ``spec.proofs`` check them); see ``spec.bv``.
"""

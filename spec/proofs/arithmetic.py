"""Proofs about the 32-bit sequence space and the splice's seq/ack translation."""

from __future__ import annotations

import z3

from spec.invariants import ProofResult, invariant
from spec.proofs._common import bv, combine, prove, symbolic_client, symbolic_server, val
from spec.segment import ACK, PSH, Segment
from spec.seq import HALF, seq_diff, seq_lt_rfc9293
from spec.trace import Trace
from spec.variants import Model


@invariant(
    "seq_order_total",
    "Sequence comparison is a strict order on any window under 2^31: irreflexive, asymmetric, "
    "total except for pairs exactly 2^31 apart, where RFC 9293's signed test is ambiguous.",
    ("RFC 9293 §3.4", "RFC 1982 §3.2"),
    ("unsigned_compare",))
def seq_order_total(model: Model) -> ProofResult:
    a, b = bv("a"), bv("b")
    lt = model.seq_lt
    far = seq_diff(a, b) == HALF

    def trace(m: z3.ModelRef) -> Trace:
        va, vb = val(m, a), val(m, b)
        t = Trace("seq_order_total: the comparison misorders two client segments")
        t.add("client", False, Segment(seq=va, flags=ACK | PSH, payload=b"x"),
              note=f"seq a={va}")
        t.add("client", False, Segment(seq=vb, flags=ACK | PSH, payload=b"y"),
              note=f"seq b={vb}; forward distance b-a = {(vb - va) % 2**32}; "
                   f"model says a<b is {bool(val(m, lt(a, b)))}, b<a is {bool(val(m, lt(b, a)))}")
        return t

    name = "seq_order_total"
    return combine(name, [
        prove(name, z3.Not(lt(a, a)), trace),
        prove(name, z3.Not(z3.And(lt(a, b), lt(b, a))), trace),
        prove(name, z3.Implies(z3.And(a != b, z3.Not(far)), z3.Or(lt(a, b), lt(b, a))), trace),
        # agrees with RFC 9293's signed-difference test everywhere but the 2^31 pair
        prove(name, z3.Implies(z3.Not(far), lt(a, b) == seq_lt_rfc9293(a, b)), trace),
        prove(name, z3.Implies(far, z3.And(z3.Not(lt(a, b)), seq_lt_rfc9293(a, b),
                                           seq_lt_rfc9293(b, a))), trace),
    ])


def _splice(model: Model):
    c, s = symbolic_client(), symbolic_server()
    return c, s, model.make_splice(c, s)


def _relay_trace(title: str, m: z3.ModelRef, c, s, sp, model: Model,
                 seqs: list[z3.BitVecRef]) -> Trace:
    t = Trace(title)
    for x in seqs:
        vx = val(m, x)
        vs = val(m, model.seq_to_server(sp, x))
        t.add("client", False, Segment(seq=vx, ack=val(m, c.snd_isn) + 1 & 0xFFFFFFFF,
                                       flags=ACK | PSH, payload=b"r"),
              note=f"client byte at offset {(vx - val(m, c.rcv_isn) - 1) % 2**32}")
        t.add("server", True, Segment(seq=vs, ack=val(m, s.rcv_isn) + 1 & 0xFFFFFFFF,
                                      flags=ACK | PSH, payload=b"r"),
              note=f"relayed at server offset {(vs - val(m, s.snd_isn) - 1) % 2**32}")
    return t


@invariant(
    "translation_bijection",
    "Seq translation maps the 2^32 sequence numbers one-to-one in each direction, so no two "
    "client bytes ever land on the same server sequence number.",
    ("C1.fp", "RFC 9293 §3.4"),
    ("truncated_31bit",))
def translation_bijection(model: Model) -> ProofResult:
    c, s, sp = _splice(model)
    x, y = bv("x"), bv("y")
    name = "translation_bijection"

    def trace(m: z3.ModelRef) -> Trace:
        return _relay_trace("translation_bijection: two client bytes collide on the server leg",
                            m, c, s, sp, model, [x, y])

    return combine(name, [
        prove(name, z3.Implies(x != y, model.seq_to_server(sp, x) != model.seq_to_server(sp, y)),
              trace),
        prove(name, z3.Implies(x != y, model.seq_to_client(sp, x) != model.seq_to_client(sp, y)),
              trace),
    ])


@invariant(
    "ack_inverts_seq",
    "An ACK translated back to one leg acknowledges exactly the bytes the other leg's seq "
    "translation delivered: ack_to_client(seq_to_server(x)) = x and vice versa.",
    ("C1.fp", "RFC 9293 §3.4"),
    ("off_by_one_seq", "ack_wrong_offset", "truncated_31bit"))
def ack_inverts_seq(model: Model) -> ProofResult:
    c, s, sp = _splice(model)
    x = bv("x")
    name = "ack_inverts_seq"

    def trace_c2s(m: z3.ModelRef) -> Trace:
        vx = val(m, x)
        vs = val(m, model.seq_to_server(sp, x))
        back = val(m, model.ack_to_client(sp, model.seq_to_server(sp, x)))
        t = Trace("ack_inverts_seq: the server's ACK of a relayed byte is not the client's byte")
        t.add("client", False, Segment(seq=(vx - 1) & 0xFFFFFFFF, flags=ACK | PSH,
                                       payload=b"q"), note=f"client sends up to {vx}")
        t.add("server", True, Segment(seq=(vs - 1) & 0xFFFFFFFF, flags=ACK | PSH,
                                      payload=b"q"), note="relayed")
        t.add("server", False, Segment(seq=val(m, s.rcv_isn) + 1 & 0xFFFFFFFF, ack=vs,
                                       flags=ACK), note=f"server ACKs {vs}")
        t.add("client", True, Segment(seq=val(m, c.snd_isn) + 1 & 0xFFFFFFFF, ack=back,
                                      flags=ACK), note=f"client sees ACK {back}, expected {vx}")
        return t

    def trace_s2c(m: z3.ModelRef) -> Trace:
        vx = val(m, x)
        vc = val(m, model.seq_to_client(sp, x))
        back = val(m, model.ack_to_server(sp, model.seq_to_client(sp, x)))
        t = Trace("ack_inverts_seq: the client's ACK of a relayed byte is not the server's byte")
        t.add("server", False, Segment(seq=(vx - 1) & 0xFFFFFFFF, flags=ACK | PSH,
                                       payload=b"q"), note=f"server sends up to {vx}")
        t.add("client", True, Segment(seq=(vc - 1) & 0xFFFFFFFF, flags=ACK | PSH,
                                      payload=b"q"), note="relayed")
        t.add("client", False, Segment(seq=val(m, c.rcv_isn) + 1 & 0xFFFFFFFF, ack=vc,
                                       flags=ACK), note=f"client ACKs {vc}")
        t.add("server", True, Segment(seq=val(m, s.snd_isn) + 1 & 0xFFFFFFFF, ack=back,
                                      flags=ACK), note=f"server sees ACK {back}, expected {vx}")
        return t

    return combine(name, [
        prove(name, model.ack_to_client(sp, model.seq_to_server(sp, x)) == x, trace_c2s),
        prove(name, model.ack_to_server(sp, model.seq_to_client(sp, x)) == x, trace_s2c),
    ])


@invariant(
    "translation_preserves_order",
    "Any two sequence numbers less than 2^31 apart keep their order after translation, so "
    "in-window, duplicate and old segments are judged the same on both legs.",
    ("RFC 9293 §3.4", "RFC 9293 §3.10.7.4"),
    ("truncated_31bit", "unsigned_compare"))
def translation_preserves_order(model: Model) -> ProofResult:
    c, s, sp = _splice(model)
    a, b = bv("a"), bv("b")
    near = z3.ULT(seq_diff(b, a), HALF)
    lt = model.seq_lt
    name = "translation_preserves_order"

    def trace(m: z3.ModelRef) -> Trace:
        return _relay_trace("translation_preserves_order: two client segments swap order on "
                            "the server leg", m, c, s, sp, model, [a, b])

    return combine(name, [
        prove(name, z3.Implies(near, lt(a, b) == lt(model.seq_to_server(sp, a),
                                                    model.seq_to_server(sp, b))), trace),
        prove(name, z3.Implies(near, lt(a, b) == lt(model.seq_to_client(sp, a),
                                                    model.seq_to_client(sp, b))), trace),
    ])

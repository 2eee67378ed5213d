"""Safety of the fast path: ACK safety, path exclusivity, and the eligibility predicate."""

from __future__ import annotations

import z3

from spec.eligibility import HandoffReason, SegmentFacts
from spec.invariants import ProofResult, invariant
from spec.proofs._common import bv, combine, prove, symbolic_client, symbolic_server, val
from spec.segment import ACK, PSH, SYN, Segment
from spec.seq import HALF, seq_add, seq_diff
from spec.states import Effect, FastPathEvent, FastPathState
from spec.trace import Trace
from spec.variants import Model

# --- ACK safety ---------------------------------------------------------------------------------

PRE_SPLICE = (Effect.ANSWER_SYN, Effect.RESEND_SYNACK, Effect.COMPLETE_HANDSHAKE,
              Effect.HOLD_AND_OPEN_SERVER, Effect.SPLICE)
"""Effects that happen before the server has acknowledged any client byte."""


@invariant(
    "ack_safety",
    "On the fast path the gateway never acknowledges to the client a byte the server has not "
    "acknowledged (it has no buffer to retransmit from): before the splice it ACKs only the "
    "SYN, after it only relays the server's ACKs, translated.",
    ("C1.fp", "RFC 9293 §3.8.4"),
    ("ack_before_server",))
def ack_safety(model: Model) -> ProofResult:
    name = "ack_safety"
    c, s = symbolic_client(), symbolic_server()
    sp = model.make_splice(c, s)
    server_ack, held = bv("server_ack"), bv("held_len")
    origin_c, origin_s = seq_add(c.rcv_isn, 1), seq_add(s.snd_isn, 1)
    obligations = []
    for effect in Effect:
        ack = model.fp_ack_to_client(effect, c, sp, server_ack, held)
        if ack is None:
            continue
        acked_by_gw = seq_diff(ack, origin_c)
        if effect in PRE_SPLICE:
            acked_by_server = z3.BitVecVal(0, 32)
            pre = (z3.UGE(held, 1), z3.ULE(held, 1460))
        else:
            acked_by_server = seq_diff(server_ack, origin_s)
            pre = (z3.ULT(acked_by_server, HALF),)
        claim = z3.ULE(acked_by_gw, acked_by_server)

        def trace(m: z3.ModelRef, effect=effect, ack=ack,
                  acked_by_server=acked_by_server) -> Trace:
            ci, gi = val(m, c.rcv_isn), val(m, c.snd_isn)
            n = val(m, held)
            t = Trace(f"ack_safety: on {effect.value} the gateway ACKs client bytes the server "
                      "has not")
            t.add("client", False, Segment(seq=ci, flags=SYN, mss=1460), note="client SYN")
            t.add("client", True, Segment(seq=gi, ack=(ci + 1) % 2**32, flags=SYN | ACK,
                                          mss=1460))
            t.add("client", False, Segment(seq=(ci + 1) % 2**32, ack=(gi + 1) % 2**32,
                                           flags=ACK | PSH, payload=None, length=max(n, 1)),
                  note="request")
            t.add("client", True, Segment(seq=(gi + 1) % 2**32, ack=val(m, ack), flags=ACK),
                  note=f"gateway ACKs {(val(m, ack) - ci - 1) % 2**32} client octets; the "
                       f"server has ACKed {val(m, acked_by_server)}")
            return t

        obligations.append(prove(name, claim, trace, pre))
    return combine(name, obligations)


# --- path exclusivity ---------------------------------------------------------------------------


def _encode_table(model: Model, s: z3.BitVecRef, e: z3.BitVecRef
                  ) -> tuple[z3.BitVecRef, z3.BitVecRef]:
    """The fast-path table as two Z3 terms: next state and effect code of (s, e)."""
    effects = list(Effect)
    nxt: z3.BitVecRef = z3.BitVecVal(0xFF, 8)
    eff: z3.BitVecRef = z3.BitVecVal(0xFF, 8)
    for st, row in model.fast_path_table.items():
        for ev, tr in row.items():
            hit = z3.And(s == int(st), e == int(ev))
            nxt = z3.If(hit, z3.BitVecVal(int(tr.next), 8), nxt)
            eff = z3.If(hit, z3.BitVecVal(effects.index(tr.effect), 8), eff)
    return nxt, eff


@invariant(
    "path_exclusivity",
    "Every segment is processed by exactly one path: the fast path until a handoff, the normal "
    "path from the trigger on; a session's owner moves only from fast path to normal path, and "
    "only through a handoff.",
    ("C1.b", "C1.c", "C1.fp"),
    ("owner_reverts",))
def path_exclusivity(model: Model) -> ProofResult:
    name = "path_exclusivity"
    s, e = z3.BitVec("state", 8), z3.BitVec("event", 8)
    nxt, eff = _encode_table(model, s, e)
    effects = list(Effect)
    handed = int(FastPathState.HANDED_OFF)
    steer, hand = effects.index(Effect.STEER_TO_NORMAL_PATH), effects.index(Effect.HANDOFF)
    valid = z3.And(z3.ULT(s, len(FastPathState)), z3.ULT(e, len(FastPathEvent)))
    np_owns = s == handed
    np_processes = z3.Or(eff == steer, eff == hand)
    claim = z3.And(
        nxt != 0xFF,                                          # the table is total
        z3.Implies(np_owns, nxt == handed),                   # owner never moves back
        np_processes == z3.Or(np_owns, nxt == handed),        # NP processes exactly these
        z3.Implies(z3.And(z3.Not(np_owns), nxt == handed), eff == hand),  # only via handoff
    )

    def trace(m: z3.ModelRef) -> Trace:
        st = FastPathState(val(m, s)) if val(m, s) < len(FastPathState) else val(m, s)
        ev = FastPathEvent(val(m, e)) if val(m, e) < len(FastPathEvent) else val(m, e)
        n = val(m, nxt)
        nn = FastPathState(n).name if n < len(FastPathState) else "missing"
        t = Trace(f"path_exclusivity: in {getattr(st, 'name', st)} on {getattr(ev, 'name', ev)}"
                  f" the table moves to {nn} with effect "
                  f"{effects[val(m, eff)].value if val(m, eff) < len(effects) else 'missing'}")
        t.add("client", False, Segment(seq=1000, flags=SYN, mss=1460), note="client SYN")
        t.add("client", True, Segment(seq=5000, ack=1001, flags=SYN | ACK, mss=1460))
        t.add("client", False, Segment(seq=1001, ack=5001, flags=ACK | PSH,
                                       payload=b"GET /partial"), note="partial request: handoff")
        if ev is FastPathEvent.SERVER_SYNACK:
            t.add("server", False, Segment(seq=9000, ack=7001, flags=SYN | ACK, mss=1460),
                  note=f"a late server SYN/ACK: the fast path takes the session back ({nn})")
        return t

    return prove(name, claim, trace, (valid,))


# --- eligibility --------------------------------------------------------------------------------


@invariant(
    "eligibility_sound",
    "The fast path keeps a first request segment only if none of the handoff conditions holds "
    "(fragment, flags, options, order, FIN, incomplete or unparseable request, length-changing "
    "rewrite); otherwise the normal path gets it with the first applicable named reason.",
    ("C1.a", "C1.b", "C1.c"),
    ("fragment_on_fast_path",))
def eligibility_sound(model: Model) -> ProofResult:
    name = "eligibility_sound"
    b = {n: z3.Bool(n) for n in ("is_fragment", "unsupported_flags", "unsupported_option", "fin",
                                 "request_complete", "request_parseable",
                                 "length_changing_rewrite")}
    seq, rcv_nxt, plen = bv("seq"), bv("rcv_nxt"), bv("payload_len")
    f = SegmentFacts(is_fragment=b["is_fragment"], unsupported_flags=b["unsupported_flags"],
                     unsupported_option=b["unsupported_option"], seq=seq, rcv_nxt=rcv_nxt,
                     payload_len=plen, fin=b["fin"], request_complete=b["request_complete"],
                     request_parseable=b["request_parseable"],
                     length_changing_rewrite=b["length_changing_rewrite"])
    r = model.classify(f)
    in_order = seq == rcv_nxt
    conditions = [  # in priority order, each with the reason it must produce
        (b["is_fragment"], HandoffReason.IP_FRAGMENT),
        (b["unsupported_flags"], HandoffReason.UNSUPPORTED_FLAGS),
        (b["unsupported_option"], HandoffReason.UNSUPPORTED_OPTION),
        (z3.And(z3.Not(in_order), z3.Not(z3.ULT(seq_diff(rcv_nxt, seq), HALF))),
         HandoffReason.OUT_OF_ORDER_FIRST_DATA),
        (z3.And(z3.Not(in_order), z3.ULT(seq_diff(rcv_nxt, seq), HALF)),
         HandoffReason.OVERLAPPING_FIRST_DATA),
        (b["fin"], HandoffReason.EARLY_FIN),
        (z3.Not(b["request_complete"]), HandoffReason.PARTIAL_REQUEST),
        (z3.Not(b["request_parseable"]), HandoffReason.UNPARSEABLE_REQUEST),
        (b["length_changing_rewrite"], HandoffReason.LENGTH_CHANGING_REWRITE),
    ]
    clauses = [(r == 0) == z3.Not(z3.Or(*[c for c, _ in conditions]))]
    for i, (cond, reason) in enumerate(conditions):
        higher = [c for c, _ in conditions[:i]]
        clauses.append(z3.Implies(z3.And(cond, z3.Not(z3.Or(*higher)) if higher else True),
                                  r == int(reason)))

    def trace(m: z3.ModelRef) -> Trace:
        got = val(m, r)
        truth = {k: bool(val(m, v)) for k, v in b.items()}
        t = Trace(f"eligibility_sound: facts {truth} classified as "
                  f"{HandoffReason(got).name if got < len(HandoffReason) else got}")
        t.add("client", False, Segment(seq=val(m, seq), ack=1, flags=ACK | PSH,
                                       payload=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
              note=("IP fragment " if truth["is_fragment"] else "") +
                   f"first request; RCV.NXT {val(m, rcv_nxt)}; kept on the fast path"
                   if got == 0 else "handed off")
        return t

    return combine(name, [prove(name, z3.And(*clauses), trace)])

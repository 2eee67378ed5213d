"""Handoff continuity: the normal path continues the client's sequence space exactly (claim 1)."""

from __future__ import annotations

import z3

from spec.invariants import ProofResult, invariant
from spec.proofs._common import bv, combine, prove, symbolic_client, val
from spec.records import ProxySessionRecord
from spec.segment import ACK, PSH, RST, SYN, Segment
from spec.seq import seq_add, seq_diff
from spec.states import FastPathState
from spec.trace import Trace
from spec.variants import Model

RCV_WND = 65535


@invariant(
    "handoff_continuity",
    "From every fast-path state a handoff can happen in, the new TCB has IRS/ISS equal to the "
    "fast path's ISNs, RCV.NXT and SND.UNA/SND.NXT exactly at the bytes already exchanged, "
    "accepts the trigger, and the client sees no gap, no second SYN/ACK and no RST.",
    ("C1.d", "C1.e", "C1.f", "C1.g", "C1.h", "C1.i", "C1.j", "RFC 9293 §3.10.7.4"),
    ("isn_not_copied", "rcv_nxt_forgets_syn"))
def handoff_continuity(model: Model) -> ProofResult:
    name = "handoff_continuity"
    obligations = []
    for state in (FastPathState.SYN_RCVD, FastPathState.ESTABLISHED):
        c = symbolic_client(f"h{state.value}")
        first = ProxySessionRecord(client=c, service="vs", state=state)
        t_seq, t_len = bv("trigger_seq"), bv("trigger_len")
        trigger = Segment(seq=t_seq, ack=seq_add(c.snd_isn, 1), flags=ACK | PSH, payload=None,
                          length=t_len)
        res = model.handoff(first, trigger, rcv_wnd=RCV_WND, with_buffers=False)
        tcb, client2, reply = res.client.tcb, res.client, res.reply
        origin = seq_add(c.rcv_isn, 1)
        ahead = seq_diff(t_seq, origin)
        in_order = t_seq == origin
        in_window = z3.ULT(ahead, RCV_WND)
        pre = (z3.UGE(t_len, 1), z3.ULE(t_len, 1460), in_window)
        claim = z3.And(
            # C1.g / C1.i: both ISNs copied into the second client session record and the TCB
            client2.rcv_isn == c.rcv_isn, client2.snd_isn == c.snd_isn,
            tcb.irs == c.rcv_isn, tcb.iss == c.snd_isn,
            # the fast path sent the client no data: SND.UNA = SND.NXT = ISS + 1
            tcb.snd_una == seq_add(c.snd_isn, 1), tcb.snd_nxt == seq_add(c.snd_isn, 1),
            # C1.j: the trigger is accepted; RCV.NXT moves past it iff it is in order
            res.accepted == True,  # noqa: E712 - a Z3 Bool, not a Python bool
            res.completes_handshake == True,  # noqa: E712
            tcb.rcv_nxt == z3.If(in_order, seq_add(origin, t_len), origin),
            # what the client sees: an ACK continuing its sequence space, no SYN, no RST
            reply.seq == seq_add(c.snd_isn, 1), reply.ack == tcb.rcv_nxt,
            z3.BoolVal(not (reply.flags & (SYN | RST))),
            # C1.f: the records are associated both ways
            z3.BoolVal(res.proxy.client is client2 and client2.proxy is res.proxy),
            z3.BoolVal(res.steps == ["C1.d", "C1.e", "C1.f", "C1.g", "C1.h", "C1.i", "C1.j"]),
        )

        def trace(m: z3.ModelRef, c=c, state=state, res=res, t_seq=t_seq,
                  t_len=t_len) -> Trace:
            ci, gi = val(m, c.rcv_isn), val(m, c.snd_isn)
            t = Trace(f"handoff_continuity: handoff from {state.name} breaks the client's "
                      "sequence space")
            t.add("client", False, Segment(seq=ci, flags=SYN, mss=1460), note="client SYN")
            t.add("client", True, Segment(seq=gi, ack=(ci + 1) % 2**32, flags=SYN | ACK,
                                          mss=1460), note="fast path answers (ISNs recorded)")
            if state is FastPathState.ESTABLISHED:
                t.add("client", False, Segment(seq=(ci + 1) % 2**32, ack=(gi + 1) % 2**32,
                                               flags=ACK), note="handshake complete")
            ts, tl = val(m, t_seq), val(m, t_len)
            t.add("client", False, Segment(seq=ts, ack=(gi + 1) % 2**32, flags=ACK | PSH,
                                           payload=None, length=tl),
                  note="trigger: fast path hands it to the normal path")
            r = res.reply
            t.add("client", True, Segment(seq=val(m, r.seq), ack=val(m, r.ack), flags=r.flags),
                  note=f"normal path replies; expected seq {(gi + 1) % 2**32}, TCB ISS "
                       f"{val(m, res.client.tcb.iss)}, RCV.NXT {val(m, res.client.tcb.rcv_nxt)}")
            return t

        obligations.append(prove(name, claim, trace, pre))
    return combine(name, obligations)

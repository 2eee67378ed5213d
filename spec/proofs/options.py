"""Proofs about the translated options: SACK blocks, timestamps, window scaling and MSS."""

from __future__ import annotations

import z3

from spec.invariants import ProofResult, invariant
from spec.proofs._common import bv, combine, prove, symbolic_client, symbolic_server, val
from spec.segment import ACK, PSH, SYN, Segment
from spec.seq import HALF, seq_diff, seq_le, seq_lt
from spec.trace import Trace
from spec.variants import Model

M32 = 0xFFFFFFFF


@invariant(
    "sack_blocks_valid",
    "Every translated SACK block keeps left < right and lies inside the data sender's "
    "outstanding window [SND.UNA, SND.NXT], in both directions.",
    ("RFC 2018 §3", "C1.fp"),
    ("sack_untranslated",))
def sack_blocks_valid(model: Model) -> ProofResult:
    c, s = symbolic_client(sack=True), symbolic_server(sack=True)
    sp = model.make_splice(c, s)
    una, nxt, left, right = bv("snd_una"), bv("snd_nxt"), bv("sack_left"), bv("sack_right")
    name = "sack_blocks_valid"

    def obligation(to_peer, to_sender, label: str):
        # The data sender has [una, nxt) outstanding; the receiver saw it translated by to_peer
        # and SACKs a block of what it received; to_sender translates the block back.
        pre = (z3.ULT(seq_diff(nxt, una), HALF), seq_le(to_peer(sp, una), left),
               seq_lt(left, right), seq_le(right, to_peer(sp, nxt)))
        (l2, r2), = to_sender(sp, [(left, right)])
        claim = z3.And(seq_le(una, l2), seq_lt(l2, r2), seq_le(r2, nxt))

        def trace(m: z3.ModelRef) -> Trace:
            sender = "server" if label == "s2c" else "client"
            receiver = "client" if sender == "server" else "server"
            t = Trace(f"sack_blocks_valid: a SACK block from the {receiver} leaves the "
                      f"{sender}'s window after translation")
            vu, vn = val(m, una), val(m, nxt)
            t.add(sender, False,
                  Segment(seq=vu, flags=ACK | PSH, payload=None,
                          length=min((vn - vu) % 2**32, 1400)),
                  note=f"{sender} has [{vu}, {vn}) outstanding")
            t.add(receiver, False,
                  Segment(seq=0, ack=val(m, to_peer(sp, una)), flags=ACK,
                          sack=((val(m, left), val(m, right)),)),
                  note=f"{receiver} SACKs [{val(m, left)}, {val(m, right)})")
            t.add(sender, True,
                  Segment(seq=0, ack=vu, flags=ACK, sack=((val(m, l2), val(m, r2)),)),
                  note=f"relayed block [{val(m, l2)}, {val(m, r2)}) vs window [{vu}, {vn}]")
            return t

        return prove(name, claim, trace, pre)

    return combine(name, [
        obligation(model.seq_to_client, model.sack_to_server, "s2c"),
        obligation(model.seq_to_server, model.sack_to_client, "c2s"),
    ])


@invariant(
    "paws_monotonic",
    "Relayed TSvals never fall behind what each receiver holds as TS.Recent and stay "
    "monotonic, so PAWS never drops a relayed segment.",
    ("RFC 7323 §5", "C1.fp"),
    ("ts_not_offset",))
def paws_monotonic(model: Model) -> ProofResult:
    c, s = symbolic_client(timestamps=True), symbolic_server(timestamps=True)
    t0, u0 = bv("client_tsval_first_relayed"), bv("server_tsval_synack")
    sp = model.make_splice(c, s, client_tsval_now=t0, server_tsval_now=u0)
    t1, t2 = bv("tsval_1"), bv("tsval_2")
    name = "paws_monotonic"

    def obligation(first, recent, to_peer, direction: str):
        # The sender's clock only moves forward from `first`, by less than 2^31 (RFC 7323 §5.5).
        pre = (seq_le(first, t1), seq_le(t1, t2), z3.ULT(seq_diff(t2, first), HALF))
        o1, o2 = to_peer(sp, t1), to_peer(sp, t2)
        claim = z3.And(seq_le(recent, o1), seq_le(o1, o2))

        def trace(m: z3.ModelRef) -> Trace:
            src, dst = ("client", "server") if direction == "c2s" else ("server", "client")
            t = Trace(f"paws_monotonic: the {dst} would drop a relayed segment (PAWS)")
            t.add(dst, True, Segment(seq=0, flags=SYN | (ACK if dst == "client" else 0),
                                     tsval=val(m, recent), tsecr=0),
                  note=f"gateway's own SYN(/ACK) TSval {val(m, recent)} = {dst}'s TS.Recent")
            t.add(src, False, Segment(seq=1, flags=ACK | PSH, payload=b"d",
                                      tsval=val(m, t1), tsecr=0),
                  note=f"{src} TSval {val(m, t1)}")
            t.add(dst, True, Segment(seq=1, flags=ACK | PSH, payload=b"d",
                                     tsval=val(m, o1), tsecr=0),
                  note=f"relayed TSval {val(m, o1)} < TS.Recent {val(m, recent)}: PAWS drop")
            return t

        return prove(name, claim, trace, pre)

    return combine(name, [
        obligation(t0, s.ts_sent, model.tsval_to_server, "c2s"),
        obligation(u0, c.ts_sent, model.tsval_to_client, "s2c"),
    ])


@invariant(
    "window_never_inflated",
    "For every pair of window shift counts 0..14, a rescaled window never advertises more "
    "than the other leg's real window, and never less by a whole scaling unit unless capped.",
    ("RFC 7323 §2.3", "RFC 9293 §3.8.6"),
    ("window_round_up",))
def window_never_inflated(model: Model) -> ProofResult:
    field, frm, to = bv("window_field"), bv("from_shift"), bv("to_shift")
    pre = (z3.ULE(field, 0xFFFF), z3.ULE(frm, 14), z3.ULE(to, 14))
    out = model.rescale_window(field, frm, to)
    real = field << frm
    seen = out << to
    claim = z3.And(z3.ULE(out, 0xFFFF), z3.ULE(seen, real),
                   z3.Or(out == 0xFFFF, z3.ULT(real - seen, 1 << to)))
    name = "window_never_inflated"

    def trace(m: z3.ModelRef) -> Trace:
        f, a, b, o = val(m, field), val(m, frm), val(m, to), val(m, out)
        t = Trace("window_never_inflated: the relayed window promises more than the server has")
        t.add("server", False, Segment(seq=1, flags=ACK, window=f),
              note=f"server window field {f} << {a} = {f << a} octets")
        t.add("client", True, Segment(seq=1, flags=ACK, window=o),
              note=f"relayed field {o} << {b} = {o << b} octets")
        return t

    return prove(name, claim, trace, pre)


@invariant(
    "mss_respected",
    "No relayed segment exceeds the receiving peer's MSS: the server-side SYN's MSS is "
    "clamped to the client's, and client segments are cut to the server's MSS.",
    ("RFC 9293 §3.7.1", "RFC 879"),
    ("mss_unclamped",))
def mss_respected(model: Model) -> ProofResult:
    client_mss, local_mss = bv("client_mss"), bv("gateway_mss")
    server_mss, length = bv("server_mss"), bv("segment_len")
    to_server = model.mss_clamp(client_mss, local_mss)
    name = "mss_respected"
    pre_common = (z3.ULE(client_mss, 0xFFFF), z3.ULE(local_mss, 0xFFFF),
                  z3.UGE(client_mss, 88), z3.UGE(local_mss, 88))

    def trace_s2c(m: z3.ModelRef) -> Trace:
        cm, lm, n = val(m, client_mss), val(m, local_mss), val(m, length)
        ts = val(m, to_server)
        t = Trace("mss_respected: a server segment relayed to the client exceeds its MSS")
        t.add("client", False, Segment(seq=100, flags=SYN, mss=cm), note=f"client MSS {cm}")
        t.add("server", True, Segment(seq=200, flags=SYN, mss=ts),
              note=f"gateway's SYN to the server announces MSS {ts} (own limit {lm})")
        t.add("server", False, Segment(seq=301, ack=201, flags=ACK | PSH, payload=None, length=n),
              note=f"server sends {n} octets (within the MSS it was given)")
        t.add("client", True, Segment(seq=1001, ack=101, flags=ACK | PSH, payload=None, length=n),
              note=f"relayed: {n} > client MSS {cm}")
        return t

    def trace_c2s(m: z3.ModelRef) -> Trace:
        sm, n = val(m, server_mss), val(m, length)
        piece = val(m, model.split_point(length, server_mss))
        t = Trace("mss_respected: a relayed piece exceeds the server's MSS")
        t.add("client", False, Segment(seq=101, flags=ACK | PSH, payload=None, length=n),
              note=f"client segment of {n} octets")
        t.add("server", True, Segment(seq=201, flags=ACK | PSH, payload=None, length=piece),
              note=f"first piece {piece} octets, server MSS {sm}")
        return t

    piece = model.split_point(length, server_mss)
    return combine(name, [
        prove(name, z3.ULE(length, client_mss), trace_s2c,
              (*pre_common, z3.ULE(length, to_server), z3.ULE(length, 65000))),
        prove(name, z3.And(z3.ULE(piece, server_mss), z3.UGT(piece, 0), z3.ULE(piece, length)),
              trace_c2s,
              (z3.UGE(server_mss, 1), z3.ULE(server_mss, 0xFFFF), z3.UGT(length, 0),
               z3.ULE(length, 65000))),
    ])

"""Per-leg judges: what one capture of one TCP connection shows about its two endpoints.

All ten leg properties are judged in a single pass over a connection's segments
(``analyse``), cached on the connection, and each registered judge picks its own finding:
a million-packet capture is walked once, not ten times.

The judgements are made from a capture point somewhere between the two endpoints, so they
only fail on what no endpoint may do whatever was lost or reordered around that point:
windows are judged against the furthest right edge advertised so far (RFC 9293 lets a
sender use an edge the receiver later shrank), timestamps only on segments that are new
in sequence or acknowledgement (reordered old segments legitimately carry older TSvals),
and jumps forward in sequence space are capture gaps, not violations.
"""

from __future__ import annotations

from conformance.flows import ACK, FIN, MTU, RST, SYN, Conn
from conformance.properties import Context, Finding, Property, register

M32 = 0xFFFFFFFF
HALF = 1 << 31
MAX_EVIDENCE = 8
DEFAULT_MSS = {4: 536, 6: 1220}
"""RFC 9293 §3.7.1: the send MSS when the peer's SYN carried no MSS option."""

LEG_IDS = ("leg.handshake", "leg.seq", "leg.ack_unseen", "leg.window", "leg.mss",
           "leg.options", "leg.ts_monotonic", "leg.checksum", "leg.rst_window", "leg.fin")


def _gt(a: int, b: int) -> bool:
    """a > b in 32-bit sequence space."""
    return 0 < ((a - b) & M32) < HALF


class _Evidence:
    """Failures of one property: the first few frames and messages, and a count."""

    __slots__ = ("count", "frames", "msgs")

    def __init__(self) -> None:
        self.count = 0
        self.frames: list[int] = []
        self.msgs: list[str] = []

    def add(self, frame: int, msg: str) -> None:
        self.count += 1
        if len(self.frames) < MAX_EVIDENCE:
            self.frames.append(frame)
            if len(self.msgs) < 3:
                self.msgs.append(msg)


def _side(d: int) -> str:
    return "client" if d else "server"


def analyse(c: Conn, fast: bool = True) -> dict[str, Finding]:
    """Judge every leg property on ``c`` in one pass; cached in ``c.judged``.

    Segments with ACK and none of SYN, FIN, RST (nearly all of them) take a fast path: the
    general body with those flag tests decided, so every finding is the same as without it
    (``fast=False``, which the tests compare against)."""
    if c.judged is not None:
        return c.judged
    segs, dirs = c.segs, c.from_client
    neg = c.negotiated
    leg = c.leg
    bad = {pid: _Evidence() for pid in LEG_IDS}
    unjudged = dict.fromkeys(LEG_IDS, 0)
    ws_known = neg.get("wscale") is not None
    ws = [neg.get("ws_s") or 0, neg.get("ws_c") or 0]  # shift applied to windows sent by d
    sack_ok = neg.get("sack")
    ts_ok = neg.get("ts")
    version = 6 if ":" in c.client[0] else 4
    syn_seen = [False, False]
    peer_mss: list[int | None] = [None, None]  # limit for data sent by d
    if c.isn_c is not None:
        mss_c = neg.get("mss_c")
        peer_mss[0] = mss_c if mss_c is not None else DEFAULT_MSS[version]
    if c.isn_s is not None:
        mss_s = neg.get("mss_s")
        peer_mss[1] = mss_s if mss_s is not None else DEFAULT_MSS[version]
    hi: list[int | None] = [None, None]  # highest seq end sent by d
    right: list[int | None] = [None, None]  # furthest right edge the peer offered d
    ackmax: list[int | None] = [None, None]  # highest ack sent by d
    lastwin: list[int | None] = [None, None]  # last window d advertised (scaled)
    tsmax: list[int | None] = [None, None]
    fin_seq: list[int | None] = [None, None]
    fin_acked = [False, False]
    synack_isns: set[int] = set()
    client_acked_synack = False
    synack_seen = False
    checks = {"partial": 0, "unverified": 0, "ok": 0, "bad": 0, "bad-ip": 0}
    oow_rsts: list[tuple[int, int, int]] = []  # (position, frame, sender d)
    disorder = [False, False]  # data seen out of order (retransmitted or reordered)
    ts_seen = False
    unknown_opts: set[int] = set()
    hs = bad["leg.handshake"]
    isn_c, isn_s = c.isn_c, c.isn_s
    hs_captured = c.handshake_captured
    ev_ack, ev_win, ev_mss = bad["leg.ack_unseen"], bad["leg.window"], bad["leg.mss"]
    ev_fin, ev_opt, ev_ts = bad["leg.fin"], bad["leg.options"], bad["leg.ts_monotonic"]
    # unjudged counts of the fast path, added to ``unjudged`` at the end
    u_ack = u_win = u_mss = u_opt = u_ts = 0
    plain = 0x17 if fast else 0  # ACK | SYN | FIN | RST; 0 never matches ACK
    for i, s in enumerate(segs):
        d = dirs[i]
        p = 1 - d
        f = s.flags
        seq, ack, idx = s.seq, s.ack, s.index
        n = len(s.payload)
        cs = s.checksum
        if cs != "ok":  # the "ok" count is not reported
            checks[cs] += 1
        if f & plain == ACK:
            # ---- the general body below, for ACK without SYN, FIN, RST -----------------
            if d and not client_acked_synack and synack_seen and isn_s is not None:
                client_acked_synack = True
                if 0 < ((isn_s + 1 - ack) & M32) < HALF:
                    hs.add(idx, f"the client's first segment after the SYN-ACK acknowledges "
                                f"{ack}, expected {(isn_s + 1) & M32}")
            if n and hs_captured:
                if d and not synack_seen:
                    hs.add(idx, "client data before any SYN-ACK")
                elif not d and not client_acked_synack:
                    hs.add(idx, "server data before the client completed the handshake")
            h = hi[p]
            if h is None:
                u_ack += 1
            elif 0 < ((ack - h) & M32) < HALF:
                ev_ack.add(idx, f"{_side(d)} acknowledges {ack}, the {_side(p)} sent only "
                                f"up to {h}")
            fs = fin_seq[p]
            if fs is not None and ack == (fs + 1) & M32:
                fin_acked[p] = True
            end = (seq + n) & M32
            if n:
                r = right[d]
                if r is None or not ws_known:
                    u_win += 1
                elif 0 < ((end - r) & M32) < HALF and not (n == 1 and end == (r + 1) & M32):
                    ev_win.add(idx, f"{_side(d)} data up to {end} beyond the right edge {r} "
                                    f"the {_side(p)} advertised")
                lim = peer_mss[d]
                if lim is None:
                    u_mss += 1
                elif n > lim and (s.ip_len <= MTU or s.fragment):
                    ev_mss.add(idx, f"{_side(d)} sent {n} bytes, the {_side(p)}'s MSS is "
                                    f"{lim} (IP length {s.ip_len})")
                fs = fin_seq[d]
                if fs is not None and 0 < ((end - fs) & M32) < HALF:
                    ev_fin.add(idx, f"{_side(d)} data up to {end} after its FIN at {fs}")
            if s.mss is not None or s.wscale is not None or s.sack_perm:
                ev_opt.add(idx, f"{_side(d)} sent MSS/window scale/SACK-permitted on a "
                                "non-SYN segment")
            if s.sack:
                if sack_ok is None:
                    u_opt += 1
                elif not sack_ok:
                    ev_opt.add(idx, f"{_side(d)} sent SACK blocks without SACK having been "
                                    "negotiated")
            tsv = s.ts
            if s.unknown_options:
                unknown_opts.update(s.unknown_options)
            if ts_ok is None:
                if tsv is not None:
                    u_opt += 1
            elif ts_ok:
                if tsv is None:
                    ev_opt.add(idx, f"{_side(d)} segment without timestamps after "
                                    "negotiating them (RFC 7323 §3.2)")
            elif tsv is not None:
                ev_opt.add(idx, f"{_side(d)} sent timestamps that were not negotiated")
            a = ackmax[d]
            if tsv is not None:
                ts_seen = True
                v = tsv[0]
                m = tsmax[d]
                if m is None or 0 < ((v - m) & M32) < HALF:
                    tsmax[d] = v
                elif v != m:
                    h = hi[d]
                    new_data = h is not None and 0 < ((end - h) & M32) < HALF
                    new_ack = a is not None and 0 < ((ack - a) & M32) < HALF
                    ack_not_older = a is None or ((ack - a) & M32) < HALF
                    data_not_older = h is None or ((end - h) & M32) < HALF
                    newer = (new_data and ack_not_older) or (new_ack and data_not_older)
                    if newer and disorder[d]:
                        u_ts += 1
                    elif newer:
                        ev_ts.add(idx, f"{_side(d)} TSval {v} after {m} on a segment with "
                                       "new data or a new ACK")
            if a is None or 0 < ((ack - a) & M32) < HALF:
                ackmax[d] = ack
            w = s.window << ws[d]
            lastwin[d] = w
            edge = (ack + w) & M32
            r = right[p]
            if r is None or 0 < ((edge - r) & M32) < HALF:
                right[p] = edge
            h = hi[d]
            if h is None or 0 < ((end - h) & M32) < HALF:
                hi[d] = end
            elif n:
                disorder[d] = True
            continue
        # ---- handshake ------------------------------------------------------------------
        if f & SYN:
            syn_seen[d] = True
            if not d and f & ACK:
                synack_seen = True
                synack_isns.add(seq)
                if isn_c is not None and ack != (isn_c + 1) & M32:
                    hs.add(idx, f"SYN-ACK acknowledges {ack}, the client's ISN+1 is "
                                f"{(isn_c + 1) & M32}")
                if len(synack_isns) == 2:
                    hs.add(idx, "SYN-ACK retransmitted with another ISN")
                if s.wscale is not None and isn_c is not None and neg.get("wscale") is False:
                    bad["leg.options"].add(idx, "window scale in a SYN-ACK answering a SYN "
                                                "without it")
                if s.ts is not None and isn_c is not None and ts_ok is False:
                    bad["leg.options"].add(idx, "timestamps in a SYN-ACK answering a SYN "
                                                "without them")
        elif d and not client_acked_synack and synack_seen and isn_s is not None \
                and not f & RST:
            client_acked_synack = True
            if not f & ACK or 0 < ((isn_s + 1 - ack) & M32) < HALF:
                hs.add(idx, f"the client's first segment after the SYN-ACK acknowledges "
                            f"{ack if f & ACK else '(no ACK flag)'}, expected "
                            f"{(isn_s + 1) & M32}")
        if n and not f & SYN and c.handshake_captured:
            if d and not synack_seen:
                hs.add(idx, "client data before any SYN-ACK")
            elif not d and not client_acked_synack:
                hs.add(idx, "server data before the client completed the handshake")
        # ---- seq: ACK flag in synchronized states ---------------------------------------
        if not f & (ACK | SYN | RST):
            bad["leg.seq"].add(idx, f"{_side(d)} segment without the ACK flag")
        # ---- ack of unseen data -----------------------------------------------------------
        if f & ACK:
            h = hi[p]
            if h is None:
                unjudged["leg.ack_unseen"] += 1
            elif 0 < ((ack - h) & M32) < HALF:
                bad["leg.ack_unseen"].add(idx, f"{_side(d)} acknowledges {ack}, the "
                                               f"{_side(p)} sent only up to {h}")
            if fin_seq[p] is not None and ack == (fin_seq[p] + 1) & M32:
                fin_acked[p] = True
        # ---- data checks: window, MSS, FIN ----------------------------------------------
        start = (seq + 1) & M32 if f & SYN else seq
        end = (start + n) & M32
        if n and not f & RST:
            r = right[d]
            if r is None or not (ws_known or f & SYN):
                unjudged["leg.window"] += 1
            elif 0 < ((end - r) & M32) < HALF and not (n == 1 and end == (r + 1) & M32):
                bad["leg.window"].add(idx, f"{_side(d)} data up to {end} beyond the right "
                                           f"edge {r} the {_side(p)} advertised")
            lim = peer_mss[d]
            if lim is None:
                unjudged["leg.mss"] += 1
            elif n > lim and (s.ip_len <= MTU or s.fragment):
                bad["leg.mss"].add(idx, f"{_side(d)} sent {n} bytes, the {_side(p)}'s MSS "
                                        f"is {lim} (IP length {s.ip_len})")
            fs = fin_seq[d]
            if fs is not None and 0 < ((end - fs) & M32) < HALF:
                bad["leg.fin"].add(idx, f"{_side(d)} data up to {end} after its FIN at {fs}")
        if f & FIN:
            fs = fin_seq[d]
            if fs is None:
                fin_seq[d] = end
            elif fs != end:
                bad["leg.fin"].add(idx, f"{_side(d)} FIN at {end}, its first FIN was at {fs}")
        # ---- options ----------------------------------------------------------------------
        if not f & SYN and (s.mss is not None or s.wscale is not None or s.sack_perm):
            bad["leg.options"].add(idx, f"{_side(d)} sent MSS/window scale/SACK-permitted on "
                                        "a non-SYN segment")
        if s.sack:
            if sack_ok is None:
                unjudged["leg.options"] += 1
            elif not sack_ok:
                bad["leg.options"].add(idx, f"{_side(d)} sent SACK blocks without SACK "
                                            "having been negotiated")
        tsv = s.ts
        if s.unknown_options:
            unknown_opts.update(s.unknown_options)
        if not f & SYN:
            if ts_ok is None:
                if tsv is not None:
                    unjudged["leg.options"] += 1
            elif ts_ok:
                if tsv is None and not f & RST:
                    bad["leg.options"].add(idx, f"{_side(d)} segment without timestamps "
                                                "after negotiating them (RFC 7323 §3.2)")
            elif tsv is not None:
                bad["leg.options"].add(idx, f"{_side(d)} sent timestamps that were not "
                                            "negotiated")
        # ---- timestamps monotonic --------------------------------------------------------
        if tsv is not None and not f & RST:
            ts_seen = True
            v = tsv[0]
            m = tsmax[d]
            if m is None or 0 < ((v - m) & M32) < HALF:
                tsmax[d] = v
            elif v != m:
                h = hi[d]
                a = ackmax[d]
                # Provably sent later, even across a reordering network: new data with an
                # ACK no older than the newest seen, or a new ACK with data no older than
                # the newest seen. (A relayed segment that a network reordered upstream of
                # the capture is new in one of the two and older in the other.)
                new_data = h is not None and 0 < ((end - h) & M32) < HALF
                new_ack = bool(f & ACK) and a is not None and 0 < ((ack - a) & M32) < HALF
                ack_not_older = not f & ACK or a is None or ((ack - a) & M32) < HALF
                data_not_older = h is None or ((end - h) & M32) < HALF
                newer = (new_data and ack_not_older) or (new_ack and data_not_older)
                if newer and disorder[d]:
                    # Data went out of order in this direction before (a retransmission or
                    # a reordering path): the segment with the higher TSval may have been a
                    # retransmission sent after this one, delayed on its way. Can't judge.
                    unjudged["leg.ts_monotonic"] += 1
                elif newer:
                    bad["leg.ts_monotonic"].add(idx, f"{_side(d)} TSval {v} after {m} on a "
                                                     "segment with new data or a new ACK")
        # ---- RST ------------------------------------------------------------------------
        if f & RST:
            verdict = _rst_acceptable(s, d, ackmax[p], lastwin[p], ws_known, isn_c,
                                      syn_seen, synack_seen)
            if verdict is None:
                unjudged["leg.rst_window"] += 1
            elif not verdict:
                oow_rsts.append((i, idx, d))
        # ---- state updates --------------------------------------------------------------
        if f & ACK:
            a = ackmax[d]
            if a is None or 0 < ((ack - a) & M32) < HALF:
                ackmax[d] = ack
            w = s.window if f & SYN else s.window << ws[d]
            lastwin[d] = w
            edge = (ack + w) & M32
            r = right[p]
            if r is None or 0 < ((edge - r) & M32) < HALF:
                right[p] = edge
        if not f & RST:
            e = (end + 1) & M32 if f & FIN else end
            h = hi[d]
            if h is None or 0 < ((e - h) & M32) < HALF:
                hi[d] = e
            elif n:
                disorder[d] = True
    unjudged["leg.ack_unseen"] += u_ack
    unjudged["leg.window"] += u_win
    unjudged["leg.mss"] += u_mss
    unjudged["leg.options"] += u_opt
    unjudged["leg.ts_monotonic"] += u_ts
    c.judged = out = _findings(c, bad, unjudged, checks, oow_rsts, fin_seq, fin_acked,
                               ts_seen, unknown_opts, synack_seen)
    for pid, fnd in out.items():
        if fnd.packets:
            fnd.packets = tuple((leg, i) for _, i in fnd.packets)
        out[pid] = fnd
    return out


def _rst_acceptable(s: object, d: int, peer_rcv_nxt: int | None, peer_wnd: int | None,
                    ws_known: bool, isn_c: int | None, syn_seen: list[bool],
                    synack_seen: bool) -> bool | None:
    """RFC 5961 §3 / RFC 9293 §3.10.7: is this RST one its receiver may act on?

    None when the capture cannot tell (the receiver's window was never seen)."""
    seq, ack, f = s.seq, s.ack, s.flags  # type: ignore[attr-defined]
    if not d and not synack_seen and isn_c is not None:
        # answer to a SYN (SYN-SENT): acceptable iff it acknowledges the SYN
        return bool(f & ACK) and ack == (isn_c + 1) & M32
    if peer_rcv_nxt is None or peer_wnd is None or not ws_known:
        return None
    off = (seq - peer_rcv_nxt) & M32
    return off == 0 or off < max(peer_wnd, 1)


def _findings(c: Conn, bad: dict[str, _Evidence], unjudged: dict[str, int],
              checks: dict[str, int], oow_rsts: list[tuple[int, int, int]],
              fin_seq: list[int | None], fin_acked: list[bool], ts_seen: bool,
              unknown_opts: set[int], synack_seen: bool) -> dict[str, Finding]:
    out: dict[str, Finding] = {}
    hs_ok = c.handshake_captured
    one_way = not all(c.directions())

    def fail(pid: str, extra: str = "") -> Finding:
        ev = bad[pid]
        more = f" (+{ev.count - len(ev.msgs)} more)" if ev.count > len(ev.msgs) else ""
        detail = "; ".join(f"frame {fr}: {m}" for fr, m in zip(ev.frames, ev.msgs,
                                                                strict=False)) + more + extra
        return Finding(pid, "fail", detail, tuple(("", fr) for fr in ev.frames))

    def verdict(pid: str, ok_text: str, unknown_if: str | None = None) -> Finding:
        if bad[pid].count:
            return fail(pid)
        if unknown_if:
            return Finding(pid, "unknown", unknown_if)
        if unjudged[pid]:
            return Finding(pid, "pass", f"{ok_text}; {unjudged[pid]} segment(s) could not be "
                                        "judged (handshake or peer direction not captured)")
        return Finding(pid, "pass", ok_text)

    # handshake
    if bad["leg.handshake"].count:
        out["leg.handshake"] = fail("leg.handshake")
    elif c.isn_c is None and c.isn_s is None:
        out["leg.handshake"] = Finding("leg.handshake", "unknown",
                                       "handshake not captured (no SYN, no SYN-ACK)")
    elif not synack_seen:
        refused = any(not c.from_client[c.segs.index(r)] and r.flags & ACK for r in c.rst)
        out["leg.handshake"] = Finding(
            "leg.handshake", "pass" if refused and not bad["leg.rst_window"].count
            else "unknown", "refused with a RST" if refused else "no SYN-ACK captured")
    elif c.isn_c is None:
        out["leg.handshake"] = Finding("leg.handshake", "unknown",
                                       "the client's SYN was not captured; SYN-ACK seen")
    else:
        out["leg.handshake"] = Finding("leg.handshake", "pass",
                                       "SYN, SYN-ACK and ACK consistent")
    # seq
    seq_ev = bad["leg.seq"]
    for name, off, frame in c.conflicts:
        seq_ev.add(frame, f"retransmitted {name} bytes at stream offset {off} differ from "
                          "the bytes first sent")
    out["leg.seq"] = verdict("leg.seq", "sequence space consistent, retransmissions "
                                        "carry the same bytes")
    out["leg.ack_unseen"] = verdict(
        "leg.ack_unseen", "no ACK beyond data sent",
        "the peer direction was not captured" if one_way and not bad["leg.ack_unseen"].count
        else None)
    out["leg.window"] = verdict(
        "leg.window", "all data within the advertised window",
        "window scaling unknown (handshake not captured)"
        if not hs_ok and unjudged["leg.window"] and not bad["leg.window"].count else None)
    out["leg.mss"] = verdict("leg.mss", "no segment above the peer's MSS (super-frames "
                                        "excepted)")
    if unknown_opts and not bad["leg.options"].count:
        kinds = ", ".join(map(str, sorted(unknown_opts)))
        out["leg.options"] = verdict("leg.options", f"options as negotiated (unknown option "
                                                    f"kind(s) {kinds} seen, allowed)")
    else:
        out["leg.options"] = verdict("leg.options", "options used only as negotiated")
    if not ts_seen:
        out["leg.ts_monotonic"] = Finding("leg.ts_monotonic", "n/a", "no timestamps")
    else:
        n_unsure = unjudged["leg.ts_monotonic"]
        out["leg.ts_monotonic"] = verdict(
            "leg.ts_monotonic", "TSval never went back on new data or ACKs",
            unknown_if=(f"TSval went back on {n_unsure} segment(s) after data had gone out "
                        "of order in that direction: behind a retransmission or a reordering "
                        "path the capture cannot tell which segment was sent first")
            if n_unsure else None)
    # checksum
    for s in c.segs if checks["bad"] or checks["bad-ip"] else ():
        if s.checksum == "bad":
            bad["leg.checksum"].add(s.index, f"TCP checksum wrong ({s.src}:{s.sport} > "
                                             f"{s.dst}:{s.dport})")
        elif s.checksum == "bad-ip":
            bad["leg.checksum"].add(s.index, f"IPv4 header checksum wrong ({s.src} > "
                                             f"{s.dst})")
    total = len(c.segs)
    if bad["leg.checksum"].count:
        out["leg.checksum"] = fail("leg.checksum")
    elif checks["unverified"] == total:
        out["leg.checksum"] = Finding("leg.checksum", "unknown",
                                      "every frame cut by the snap length")
    else:
        extra = []
        if checks["partial"]:
            extra.append(f"{checks['partial']} offloaded (partial)")
        if checks["unverified"]:
            extra.append(f"{checks['unverified']} cut by the snap length")
        out["leg.checksum"] = Finding("leg.checksum", "pass", "checksums valid" + (
            " (" + ", ".join(extra) + ")" if extra else ""))
    out["leg.rst_window"] = _judge_oow(c, oow_rsts, unjudged["leg.rst_window"])
    # FIN
    fin_ev = bad["leg.fin"]
    if fin_ev.count:
        out["leg.fin"] = fail("leg.fin")
    elif fin_seq == [None, None]:
        out["leg.fin"] = Finding("leg.fin", "n/a", "no FIN")
    else:
        unacked = [_side(d) for d in (1, 0) if fin_seq[d] is not None and not fin_acked[d]]
        if unacked and not c.rst:
            out["leg.fin"] = Finding("leg.fin", "unknown", f"the {' and '.join(unacked)}'s "
                                     "FIN is not acknowledged in the capture")
        else:
            out["leg.fin"] = Finding("leg.fin", "pass", "no data after FIN; FIN acknowledged"
                                     if not unacked else "no data after FIN; reset before "
                                     "the FIN was acknowledged")
    if not hs_ok:
        note = "; handshake not captured"
        for f in out.values():
            if f.verdict == "pass" and f.property in ("leg.options", "leg.mss"):
                f.detail += note
    return out


def _judge_oow(c: Conn, oow: list[tuple[int, int, int]], unjudged: int) -> Finding:
    """Out-of-window RSTs are legal to send but must not end the connection (RFC 5961)."""
    if not c.rst:
        return Finding("leg.rst_window", "n/a", "no RST")
    if not oow:
        if unjudged:
            return Finding("leg.rst_window", "unknown", "the receiver's window was not "
                           "captured before the RST")
        return Finding("leg.rst_window", "pass", f"{len(c.rst)} RST(s), all within the "
                       "receiver's window")
    segs, dirs = c.segs, c.from_client
    # Once a side has sent an acceptable RST the connection is gone; the RSTs its kernel
    # then sends for the peer's segments still in flight (RFC 9293 §3.10.7.1, CLOSED) are
    # not judged against the old window, and the peer's silence is the first RST's doing.
    # The same holds after the side's FIN: it has closed, its kernel answers what still
    # arrives with RSTs at SEG.ACK, and the peer's silence may be the close's doing. And
    # after the *peer's* acceptable RST: the peer's older segments, still in flight (a
    # jittery link delivers them after its RST), reach a side that no longer has the
    # connection, whose kernel answers each at its SEG.ACK, below the last window; the
    # peer's silence is then its own RST's doing.
    oow_pos = {pos for pos, _, _ in oow}
    end = len(segs)
    closed: dict[int, int] = {}  # side -> first FIN or acceptable RST it sent
    reset: dict[int, int] = {}  # side -> first acceptable RST it sent
    for j, sg in enumerate(segs):
        ok_rst = bool(sg.flags & RST) and j not in oow_pos
        if ok_rst or sg.flags & FIN:
            closed.setdefault(dirs[j], j)
        if ok_rst:
            reset.setdefault(dirs[j], j)
    oow = [(pos, frame, d) for pos, frame, d in oow
           if pos < closed.get(d, end) and pos < reset.get(1 - d, end)]
    if not oow:
        return Finding("leg.rst_window", "pass", f"{len(c.rst)} RST(s); those outside the "
                       "window came after their sender's FIN or an acceptable RST had ended "
                       "the connection")
    fails, unknowns, ok = [], [], []
    for pos, frame, d in oow:
        receiver_continued = sender_continued = False
        for j in range(pos + 1, len(segs)):
            if dirs[j] != d:
                if not segs[j].flags & RST:
                    receiver_continued = True
                    break
            else:
                sender_continued = True
        if receiver_continued:
            ok.append(frame)
        elif sender_continued:
            fails.append(frame)
        else:
            unknowns.append(frame)
    if fails:
        return Finding("leg.rst_window", "fail",
                       f"out-of-window RST at frame(s) {', '.join(map(str, fails))} ended the "
                       f"connection: the {_side(1 - oow[0][2])} answered nothing after it "
                       "but RSTs (RFC 5961 §3.2: it must be ignored, or challenged)",
                       tuple((c.leg, fr) for fr in fails))
    if unknowns:
        return Finding("leg.rst_window", "unknown",
                       f"out-of-window RST at frame(s) {', '.join(map(str, unknowns))} and "
                       "the capture ends before the receiver shows whether it ignored it",
                       tuple((c.leg, fr) for fr in unknowns))
    return Finding("leg.rst_window", "pass", f"out-of-window RST(s) at frame(s) "
                   f"{', '.join(map(str, ok))} ignored by the receiver")


def _picker(pid: str):
    def judge(conn: Conn, ctx: Context | None = None) -> Finding:
        return analyse(conn)[pid]
    judge.__qualname__ = f"leg_judge[{pid}]"
    judge.leg_pid = pid  # type: ignore[attr-defined]  # judge_leg reads analyse() directly
    return judge


_TITLES = {
    "leg.handshake": ("Three-way handshake consistent", ("RFC 9293 §3.5",)),
    "leg.seq": ("Sequence numbers consistent; retransmissions carry the same bytes",
                ("RFC 9293 §3.4", "RFC 9293 §3.10.7.4")),
    "leg.ack_unseen": ("No ACK of data the peer has not sent", ("RFC 9293 §3.10.7.4",)),
    "leg.window": ("Data within the peer's advertised window", ("RFC 9293 §3.8.6",
                                                                "RFC 7323 §2")),
    "leg.mss": ("Segments within the peer's MSS (GSO super-frames excepted)",
                ("RFC 9293 §3.7.1",)),
    "leg.options": ("Options used only as negotiated", ("RFC 9293 §3.2", "RFC 7323 §3.2",
                                                        "RFC 2018")),
    "leg.ts_monotonic": ("Timestamps monotonic", ("RFC 7323 §4.3",)),
    "leg.checksum": ("IPv4 header and TCP checksums valid (offloaded partial sums legal)",
                     ("RFC 9293 §3.1",)),
    "leg.rst_window": ("Out-of-window RSTs do not end the connection", ("RFC 5961 §3",)),
    "leg.fin": ("No data after FIN; FIN acknowledged", ("RFC 9293 §3.6",)),
}

for _pid in LEG_IDS:
    register(Property(_pid, _TITLES[_pid][0], "leg", _TITLES[_pid][1], _picker(_pid)))


def judge_conn(c: Conn, ctx: Context | None = None) -> list[Finding]:
    """All leg findings of one connection, in ``LEG_IDS`` order."""
    got = analyse(c)
    return [got[pid] for pid in LEG_IDS]


__all__ = ["LEG_IDS", "analyse", "judge_conn"]

"""Decoding and connection rebuilding: link types, fragments, reassembly, connection keys."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.flows import read_leg
from conformance.pcapio import write_pcap, write_pcapng
from reference.gateway.sim import fragment_ipv4
from tests.conformance import ACK, FIN, PSH, SYN, Trace

REQ = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


@settings(max_examples=80, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), cuts=st.lists(st.integers(1, 2999),
                                                                 max_size=12),
       seed=st.integers(0, 2**16), dup=st.floats(0, 0.5), isn=st.integers(0, 2**32 - 1))
def test_random_segmentation_reassembles(tmp_path_factory: pytest.TempPathFactory,
                                         data: bytes, cuts: list[int], seed: int, dup: float,
                                         isn: int) -> None:
    """Any segmentation, order, duplication and overlap gives back the bytes sent."""
    rng = random.Random(seed)
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [(a, b) for a, b in itertools.pairwise(points)]
    extra = [(a, min(len(data), b + rng.randrange(0, 50))) for a, b in pieces
             if rng.random() < dup]  # overlapping retransmissions with the same bytes
    pieces += extra
    rng.shuffle(pieces)
    t = Trace(isn_c=isn, ts=False)
    t.handshake()
    for a, b in pieces:
        t.c(1 + a, 1, PSH | ACK, data[a:b])
    leg = read_leg(t.write(tmp_path_factory.mktemp("seg") / "x.pcap"))
    (c,) = leg.conns
    assert c.stream_c2s == data
    assert c.gaps_c2s == [] and c.conflicts == []


def test_gap_is_zero_filled_and_recorded(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1, 1, PSH | ACK, b"abc")
    t.c(11, 1, PSH | ACK, b"xyz")
    (c,) = read_leg(t.write(tmp_path / "g.pcap")).conns
    assert c.stream_c2s == b"abc" + bytes(7) + b"xyz"
    assert c.gaps_c2s == [(3, 10)]
    assert any("gap" in p for p in c.problems)


def test_conflicting_overlap_is_recorded(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1, 1, PSH | ACK, b"abcdef")
    t.c(4, 1, PSH | ACK, b"XYZghi")
    (c,) = read_leg(t.write(tmp_path / "o.pcap")).conns
    assert c.stream_c2s == b"abcdefghi"
    assert c.conflicts == [("c2s", 3, 5)]


def test_negotiated_options_and_isns(tmp_path: Path) -> None:
    t = Trace(ws=None, sack=False)
    t.conversation()
    (c,) = read_leg(t.write(tmp_path / "n.pcap")).conns
    assert (c.isn_c, c.isn_s) == (1000, 5000)
    assert c.negotiated == {"mss_c": 1460, "mss_s": 1460, "wscale": False, "ws_c": 0,
                            "ws_s": 0, "sack": False, "ts": True}
    assert c.fin_c is not None and c.fin_s is not None and c.rst == []
    assert c.handshake_captured and c.problems == []


def test_new_isn_on_same_tuple_starts_a_new_connection(tmp_path: Path) -> None:
    t = Trace()
    t.conversation()
    t.isn_c, t.isn_s = 777_777, 888_888
    t.conversation(request=b"GET /2 HTTP/1.1\r\n\r\n")
    t.c(0, 0, SYN, mss=1460, wscale=7, sack_permitted=True)  # a retransmitted SYN
    leg = read_leg(t.write(tmp_path / "two.pcap"))
    assert [c.isn_c for c in leg.conns] == [1000, 777_777]
    assert leg.conns[1].stream_c2s == b"GET /2 HTTP/1.1\r\n\r\n"
    assert [c.number for c in leg.conns] == [1, 2]


def test_ipv4_fragments_are_reassembled(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    pkt = t.raw(True, t.isn_c + 1, t.isn_s + 1, PSH | ACK, REQ, tsval=1, tsecr=1)
    frags = fragment_ipv4(pkt, 16)
    assert len(frags) > 2
    for f in reversed(frags):  # out of order, too
        t.add_raw(f)
    (c,) = read_leg(t.write(tmp_path / "f.pcap")).conns
    assert c.stream_c2s == REQ
    seg = c.segs[-1]
    assert seg.fragment and seg.checksum == "ok" and seg.index == 3 + len(frags)


def test_missing_fragment_is_noted(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    pkt = t.raw(True, t.isn_c + 1, t.isn_s + 1, PSH | ACK, REQ, tsval=1, tsecr=1)
    t.add_raw(fragment_ipv4(pkt, 16)[0])
    leg = read_leg(t.write(tmp_path / "f.pcap"))
    assert any("missing fragments" in n for n in leg.notes)


def _raw_frames(t: Trace) -> list[tuple[float, bytes]]:
    return [(ts, f[14:]) for ts, f in t.frames]


@pytest.mark.parametrize("kind", ["raw", "ipv4", "sll", "sll2", "vlan", "pcapng"])
def test_link_types(tmp_path: Path, kind: str) -> None:
    t = Trace()
    t.conversation()
    raw = _raw_frames(t)
    if kind == "raw":
        p = write_pcap(tmp_path / "r.pcap", raw, linktype=101)
    elif kind == "ipv4":
        p = write_pcap(tmp_path / "r.pcap", raw, linktype=228)
    elif kind == "sll":
        p = write_pcap(tmp_path / "r.pcap", [(ts, bytes(14) + b"\x08\x00" + f)
                                             for ts, f in raw], linktype=113)
    elif kind == "sll2":
        p = write_pcap(tmp_path / "r.pcap", [(ts, b"\x08\x00" + bytes(18) + f)
                                             for ts, f in raw], linktype=276)
    elif kind == "vlan":
        p = write_pcap(tmp_path / "r.pcap", [(ts, f[:12] + b"\x81\x00\x00\x05" + f[12:])
                                             for ts, f in t.frames])
    else:
        p = write_pcapng(tmp_path / "r.pcapng", t.frames)
    leg = read_leg(p)
    (c,) = leg.conns
    assert len(c.segs) == len(t.frames) and c.stream_c2s.startswith(b"GET")
    assert leg.notes == []


def test_ipv6_conversation(tmp_path: Path) -> None:
    t = Trace(v6=True)
    t.conversation()
    (c,) = read_leg(t.write(tmp_path / "v6.pcap")).conns
    assert c.client == ("2001:db8:1::2", 40000) and c.name.startswith("[2001:db8:1::2]:40000")
    assert all(s.checksum == "ok" for s in c.segs)


def test_snapped_frames_are_unverified_not_bad(tmp_path: Path) -> None:
    from conformance.pcapio import PcapWriter
    t = Trace()
    t.conversation()
    with PcapWriter(tmp_path / "s.pcap") as w:
        for ts, f in t.frames:
            w.write(ts, f[:80], orig_len=len(f))
    (c,) = read_leg(tmp_path / "s.pcap").conns
    assert {s.checksum for s in c.segs} >= {"unverified"}
    assert "bad" not in {s.checksum for s in c.segs}


def test_garbage_frames_are_noted_with_their_numbers(tmp_path: Path) -> None:
    t = Trace()
    t.conversation()
    frames = list(t.frames)
    frames.insert(2, (frames[2][0], frames[2][1][:30]))  # IPv4 header cut short
    frames.append((frames[-1][0], bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06"
                   + bytes(28)))  # ARP
    leg = read_leg(write_pcap(tmp_path / "g.pcap", frames))
    assert len(leg.conns) == 1
    assert any("packet 3" in n and "IPv4" in n for n in leg.notes), leg.notes
    assert any("not TCP" in n for n in leg.notes)


def test_fin_seen(tmp_path: Path) -> None:
    t = Trace()
    t.handshake()
    t.c(1, 1, FIN | ACK)
    (c,) = read_leg(t.write(tmp_path / "f.pcap")).conns
    assert c.fin_c is not None and c.fin_c.index == 4 and c.fin_s is None

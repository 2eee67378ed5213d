"""pcap/pcapng reading: round trips, both byte orders and resolutions, and bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.pcapio import PcapError, PcapWriter, open_capture, write_pcap, write_pcapng

frames_st = st.lists(st.tuples(st.floats(0, 2e9, allow_nan=False).map(lambda t: round(t, 6)),
                               st.binary(min_size=0, max_size=300)), max_size=30)


def _read(path: Path) -> list[tuple[float, bytes]]:
    cap = open_capture(path)
    return [(t, cap.data[off:off + n]) for _, t, _, off, n, _ in cap.records()]


@settings(max_examples=60, deadline=None)
@given(frames=frames_st)
def test_pcap_round_trip(tmp_path_factory: pytest.TempPathFactory,
                         frames: list[tuple[float, bytes]]) -> None:
    p = tmp_path_factory.mktemp("rt") / "x.pcap"
    write_pcap(p, frames)
    got = _read(p)
    assert [f for _, f in got] == [f for _, f in frames]
    assert all(abs(a - b) < 2e-6 * max(1, b / 1e9) + 1e-6 for (a, _), (b, _) in
               zip(got, frames, strict=True))
    with p.open("rb") as fh:  # dpkt as an oracle
        assert [bytes(b) for _, b in dpkt.pcap.Reader(fh)] == [f for _, f in frames]


@settings(max_examples=30, deadline=None)
@given(frames=frames_st, ns=st.booleans())
def test_pcapng_round_trip(tmp_path_factory: pytest.TempPathFactory,
                           frames: list[tuple[float, bytes]], ns: bool) -> None:
    p = tmp_path_factory.mktemp("rt") / "x.pcapng"
    write_pcapng(p, frames, nanoseconds=ns)
    got = _read(p)
    assert [f for _, f in got] == [f for _, f in frames]
    assert all(abs(a - b) < 1e-3 for (a, _), (b, _) in zip(got, frames, strict=True))


def test_big_endian_nanosecond_pcap(tmp_path: Path) -> None:
    p = tmp_path / "be.pcap"
    body = b"\x45" + bytes(39)
    p.write_bytes(struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 101)
                  + struct.pack(">IIII", 10, 500_000_000, len(body), len(body)) + body)
    cap = open_capture(p)
    (rec,) = list(cap.records())
    assert rec[0] == 1 and rec[1] == pytest.approx(10.5) and rec[2] == 101


def test_truncated_last_record_keeps_the_rest(tmp_path: Path) -> None:
    p = write_pcap(tmp_path / "t.pcap", [(1.0, b"a" * 60), (2.0, b"b" * 60), (3.0, b"c" * 60)])
    p.write_bytes(p.read_bytes()[:-20])
    cap = open_capture(p)
    assert len(list(cap.records())) == 2
    assert cap.notes and "packet 3" in cap.notes[0] and str(p) in cap.notes[0]


def test_truncated_pcapng_keeps_the_rest(tmp_path: Path) -> None:
    p = write_pcapng(tmp_path / "t.pcapng", [(1.0, b"a" * 60), (2.0, b"b" * 60)])
    p.write_bytes(p.read_bytes()[:-10])
    cap = open_capture(p)
    assert len(list(cap.records())) == 1
    assert "packet 2" in cap.notes[0]


def test_garbage_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "garbage.pcap"
    p.write_bytes(b"this is not a capture at all")
    with pytest.raises(PcapError, match=r"garbage\.pcap: not a pcap or pcapng file"):
        open_capture(p)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "e.pcap").write_bytes(b"")
    with pytest.raises(PcapError, match="too short"):
        open_capture(tmp_path / "e.pcap")
    with pytest.raises(PcapError, match="cannot read"):
        open_capture(tmp_path / "missing.pcap")


def test_unknown_link_type_names_supported_ones(tmp_path: Path) -> None:
    p = write_pcap(tmp_path / "usb.pcap", [(1.0, b"x" * 10)], linktype=189)
    with pytest.raises(PcapError, match=r"unknown link type 189; supported: 1 \(Ethernet\)"):
        open_capture(p)
    q = write_pcapng(tmp_path / "usb.pcapng", [(1.0, b"x" * 10)], linktype=189)
    with pytest.raises(PcapError, match=r"usb\.pcapng: packet 1: unknown link type 189"):
        list(open_capture(q).records())


def test_writer_counts(tmp_path: Path) -> None:
    with PcapWriter(tmp_path / "w.pcap") as w:
        w.write(1.9999999, b"abc")
    assert w.count == 1
    assert _read(tmp_path / "w.pcap") == [(2.0, b"abc")]


def test_pcap_error_survives_pickling() -> None:
    # raised in the checker's forked process, re-raised in the parent
    import pickle

    e = pickle.loads(pickle.dumps(PcapError("x.pcap", 7, "truncated record")))
    assert isinstance(e, PcapError) and str(e) == "x.pcap: packet 7: truncated record"
    assert (e.path, e.packet_index, e.message) == ("x.pcap", 7, "truncated record")

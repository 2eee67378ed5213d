"""The checker's default two-process mode (checksums verified in a forked worker) gives the
single-process report: every verdict, note and error, every ``Seg`` and ``Conn`` field.

Golden captures are gzipped (read in one process): they are decompressed here so the
worker judges them. A worker whose statuses are wrong, that dies or that hangs must show.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from conformance import checker, flows
from conformance.checker import CheckReport, check_pcaps, default_workers
from conformance.flows import Conn
from conformance.pcapio import PcapError, PcapWriter, write_pcap, write_pcapng
from tests.conformance import Trace
from tests.conformance.test_checker_fast_paths import _expected, _frame

ROOT = Path(__file__).resolve().parents[2]
FALLBACK = "checksums computed in this process"

pytestmark = pytest.mark.skipif(default_workers() < 2,
                                reason="needs fork and two CPUs for the checksum worker")


@pytest.fixture
def fills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the legs whose fast-path statuses came from another process (the parent's
    own walk is made to fail, so a status it computed would show)."""
    calls: list[int] = []
    real = flows._fill_checksums

    def counted(conns: list[Conn], codes: Any) -> bool:
        calls.append(sum(1 for c in conns for s in c.segs if s.checksum is flows._PENDING))
        return real(conns, codes)

    def no_walk_here(*_: object) -> int:
        raise AssertionError("the parent computed the checksums itself")

    monkeypatch.setattr(flows, "_fill_checksums", counted)
    monkeypatch.setattr(flows, "fast_checksums", no_walk_here)
    return calls


def _state(rep: CheckReport) -> dict[str, Any]:
    out = rep.as_json()
    out.pop("seconds")
    for name, leg in rep.legs.items():
        out[f"leg-{name}"] = [
            [(f.name, getattr(c, f.name)) for f in dataclasses.fields(Conn)
             if f.name not in ("cache", "judged")] for c in leg.conns]
        out[f"notes-{name}"] = leg.notes
        out[f"tcp-{name}"] = (leg.packets, leg.tcp_packets)
    return out


def _same(client: Path, server: Path | None = None, **kw: Any) -> CheckReport:
    one = check_pcaps(client, server, workers=1, **kw)
    two = check_pcaps(client, server, workers=2, **kw)
    assert _state(one) == _state(two)
    assert not any(FALLBACK in n for n in two.notes), two.notes
    return two


def _statuses(rep: CheckReport, leg: str = "client") -> dict[int, str]:
    return {s.index: s.checksum for c in rep.legs[leg].conns for s in c.segs}


def _broken_trace_frames() -> list[tuple[float, bytes]]:
    """A conversation with a bad TCP checksum, a bad IPv4 header checksum and an offloaded
    (partial) one, on frames of both parities."""
    t = Trace()
    t.conversation(response=b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 2001)
    frames = [f for _, f in t.frames]
    ts = [x for x, _ in t.frames]
    f = bytearray(frames[3])  # request: TCP checksum wrong
    f[50] ^= 0x10
    frames[3] = bytes(f)
    f = bytearray(frames[5])  # response: IPv4 header checksum wrong
    f[24] ^= 0x01
    frames[5] = bytes(f)
    f = bytearray(frames[6])  # response: the pseudo-header sum only (offloaded)
    ip = f[14:34]
    tcp_len = len(f) - 34
    s = int.from_bytes(ip[12:20], "big") + 6 + tcp_len
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    f[50:52] = struct.pack("!H", s)
    frames[6] = bytes(f)
    return list(zip(ts, frames, strict=True))


def test_bad_partial_and_bad_ip_checksums_are_judged_by_the_worker(
        tmp_path: Path, fills: list[int]) -> None:
    frames = _broken_trace_frames()
    path = write_pcap(tmp_path / "bad.pcap", frames)
    rep = _same(path)
    got = _statuses(rep)
    assert [got[i] for i in (4, 6, 7)] == ["bad", "bad-ip", "partial"]
    assert [got[i] for i in sorted(got)] == [_expected(f) for _, f in frames]
    assert sum(fills) == len(frames)  # every frame's status came from the worker
    assert any(f.verdict == "fail" for c in rep.conns for f in c.findings
               if f.property == "leg.checksum")


def test_crafted_frames_of_every_kind(tmp_path: Path, fills: list[int]) -> None:
    a, b = b"\x0a\0\0\1", b"\x0a\0\0\2"
    frames = []
    for i in range(60):
        kind = ("ok", "bad", "bad-ip", "partial", "ok")[i % 5]
        frames.append(_frame(a, b, bytes((i * 37 + j) & 0xFF for j in range(i * 41 % 1700)),
                             kind=kind, options=b"\x01\x01\x08\x0a" + bytes(8) if i & 1
                             else b""))
    for writer in (write_pcap, write_pcapng):
        path = writer(tmp_path / f"k.{writer.__name__}", [(1.0 + i, f)
                                                           for i, f in enumerate(frames)])
        got = _statuses(_same(path))
        assert [got[i] for i in sorted(got)] == [_expected(f) for f in frames]
    assert sum(fills) == 2 * len(frames)


def test_truncated_frames_and_a_cut_final_record(tmp_path: Path, fills: list[int]) -> None:
    frames = _broken_trace_frames()
    path = tmp_path / "cut.pcap"
    with PcapWriter(path) as w:
        for i, (ts, f) in enumerate(frames):
            if i == 6:
                w.write(ts, f[:70], orig_len=len(f))  # snapped: unverified
            elif i == 7:
                w.write(ts, f[:60])  # cut, not snapped: shorter than its IPv4 length
            else:
                w.write(ts, f)
    data = path.read_bytes()
    path.write_bytes(data[:-9])  # the last record cut short
    rep = _same(path)
    got = _statuses(rep)
    assert got[7] == "unverified" and 8 not in got and len(frames) not in got
    assert (got[4], got[6]) == ("bad", "bad-ip")
    assert any("packet 8" in n and "IPv4 total length" in n for n in rep.notes), rep.notes
    assert any(f"packet {len(frames)}: truncated record" in n for n in rep.notes), rep.notes
    # a corrupt record length
    bad = bytearray(data)
    first = 24 + 16 + len(frames[0][1])
    bad[first + 8:first + 12] = struct.pack("<I", 0x7FFFFFF0)
    path.write_bytes(bytes(bad))
    rep = _same(path)
    assert any("packet 2: corrupt record" in n for n in rep.notes), rep.notes
    assert fills


def test_two_legs_golden_and_violations(tmp_path: Path, fills: list[int]) -> None:
    manifest = json.loads((ROOT / "pcaps" / "golden" / "manifest.json").read_text())
    n = 0
    for e in manifest["entries"]:
        legs = []
        for leg in ("client", "server"):
            plain = tmp_path / e[leg].removesuffix(".gz")
            plain.write_bytes(gzip.decompress((ROOT / "pcaps" / "golden" / e[leg]).read_bytes()))
            legs.append(plain)
        _same(legs[0], legs[1], kind="reference")
        n += 1
    for d in sorted((ROOT / "pcaps" / "violations").glob("*/")):
        c, s = d / "client.pcap", d / "server.pcap"
        if c.exists():
            _same(c, s if s.exists() else None)
            n += 1
    assert n > 50 and sum(fills) > 0


def test_checksum_violation_in_the_corpus_fails_in_both_modes(fills: list[int]) -> None:
    d = ROOT / "pcaps" / "violations" / "leg-checksum-bad"
    rep = _same(d / "client.pcap", d / "server.pcap")
    assert any(f.property == "leg.checksum" for _, f in rep.failures())
    assert "bad" in set(_statuses(rep).values()) | set(_statuses(rep, "server").values())


def test_wrong_worker_statuses_would_show(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above catches a worker that calls a bad frame good."""
    real = checker.fast_checksums

    def lenient(cap: Any, out: Any) -> int:
        n = real(cap, out)
        for i in range(n):
            if out[i] > 1:
                out[i] = 1
        return n

    monkeypatch.setattr(checker, "fast_checksums", lenient)  # the name the worker calls
    path = write_pcap(tmp_path / "bad.pcap", _broken_trace_frames())
    one, two = check_pcaps(path, workers=1), check_pcaps(path, workers=2)
    assert _statuses(one)[4] == "bad" and _statuses(two)[4] == "ok"  # the worker's word
    assert _state(one) != _state(two)


def test_a_dead_worker_falls_back_with_a_note(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checker, "_checksum_worker_main", lambda *_: os._exit(3))
    path = write_pcap(tmp_path / "bad.pcap", _broken_trace_frames())
    one, two = check_pcaps(path, workers=1), check_pcaps(path, workers=2)
    a, b = _state(one), _state(two)
    base = a.pop("notes")
    extra = [n for n in b.pop("notes") if n not in base]
    b.pop("notes-client"), a.pop("notes-client")
    assert a == b
    assert len(extra) == 1 and "exit code 3" in extra[0] and FALLBACK in extra[0], extra
    assert _statuses(two)[4] == "bad"


def test_a_hung_worker_does_not_hang_the_checker(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checker, "_checksum_worker_main", lambda *_: time.sleep(120))
    monkeypatch.setattr(checker, "WORKER_WAIT", 0.5)
    path = write_pcap(tmp_path / "bad.pcap", _broken_trace_frames())
    t0 = time.monotonic()
    rep = check_pcaps(path, path, workers=2)
    assert time.monotonic() - t0 < 20
    assert sum("did not answer" in n and FALLBACK in n for n in rep.notes) == 2, rep.notes
    assert _statuses(rep)[4] == "bad" and _statuses(rep, "server")[6] == "bad-ip"


def test_unreadable_captures_give_the_same_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all, really" * 4)
    good = write_pcap(tmp_path / "good.pcap", _broken_trace_frames())
    for args in ((junk, good), (good, junk), (good, tmp_path / "missing.pcap")):
        msgs = []
        for w in (1, 2):
            with pytest.raises(PcapError) as e:
                check_pcaps(*args, workers=w)
            msgs.append(str(e.value))
        assert msgs[0] == msgs[1]
    # pcapng: a packet on an interface the section never described (raised mid-file)
    ng = write_pcapng(tmp_path / "ng.pcapng", _broken_trace_frames())
    raw = bytearray(ng.read_bytes())
    shb = struct.unpack_from("<I", raw, 4)[0]
    idb = struct.unpack_from("<I", raw, shb + 4)[0]
    second = shb + idb + struct.unpack_from("<I", raw, shb + idb + 4)[0]
    raw[second + 8:second + 12] = struct.pack("<I", 5)
    ng.write_bytes(bytes(raw))
    msgs = []
    for w in (1, 2):
        with pytest.raises(PcapError, match="packet 2: packet on interface 5") as e:
            check_pcaps(ng, workers=w)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]


def test_default_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      fills: list[int]) -> None:
    path = write_pcap(tmp_path / "bad.pcap", _broken_trace_frames())
    check_pcaps(path)  # two CPUs here: the worker by default
    assert fills and sum(fills) > 0
    fills.clear()
    check_pcaps(path, workers=1)
    assert not fills
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0})
    assert default_workers() == 1
    check_pcaps(path)
    assert not fills
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    assert default_workers() == 2


def test_gzipped_input_is_read_in_one_process(tmp_path: Path, fills: list[int]) -> None:
    plain = write_pcap(tmp_path / "bad.pcap", _broken_trace_frames())
    zipped = tmp_path / "bad.pcap.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    rep = check_pcaps(zipped, workers=2)
    assert not fills and not any(FALLBACK in n for n in rep.notes)
    assert _statuses(rep) == _statuses(check_pcaps(plain, workers=1))

"""The golden captures (pcaps/golden, from the reference gateway) still pass the offline
checker with the path classes the live run saw; and a golden trace with one response byte
changed on the client leg does not."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from conformance.checker import check_pcaps
from conformance.golden import DEFAULT_OUT
from conformance.pcapio import open_capture
from conformance.properties import REFERENCE
from conformance.runner import DEFAULT_POLICY

MANIFEST = DEFAULT_OUT / "manifest.json"
ENTRIES = json.loads(MANIFEST.read_text())["entries"] if MANIFEST.exists() else []


def test_there_are_golden_captures_of_every_case_but_the_largest() -> None:
    from conformance.cases import CASES

    manifest = json.loads(MANIFEST.read_text())
    seen = {e["case"] for e in manifest["entries"]}
    left = {label.split("[")[0] for label in manifest["left_out"]}
    assert {c.id for c in CASES} <= seen | left
    assert len(left) <= 2


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e['case']}-v{e['family']}" for e in ENTRIES])
def test_a_golden_capture_still_passes_with_the_same_paths(entry: dict) -> None:
    rep = check_pcaps(DEFAULT_OUT / entry["client"], DEFAULT_OUT / entry["server"],
                      policy=DEFAULT_POLICY, capabilities=REFERENCE)
    fails = [(name, f.property, f.detail) for name, f in rep.failures()]
    assert fails == []
    assert sorted(set(rep.path_classes())) == sorted(set(entry["paths"]))


def test_a_golden_capture_with_one_response_byte_changed_fails(tmp_path: Path) -> None:
    entry = next(e for e in ENTRIES if e["case"] == "TC01" and e["family"] == 4)
    cap = open_capture(DEFAULT_OUT / entry["client"])
    data = bytearray(cap.data)
    # Every 8-byte block of a lab response body is its own offset in hex.
    pos = data.find(b"00000008")
    assert pos > 0
    data[pos + 7] ^= 0x01
    bad = tmp_path / "client.pcap"
    bad.write_bytes(gzip.compress(bytes(data)))
    rep = check_pcaps(bad, DEFAULT_OUT / entry["server"], policy=DEFAULT_POLICY,
                      capabilities=REFERENCE)
    failed = {f.property for _, f in rep.failures()}
    assert "cross.stream_s2c" in failed or "leg.checksum" in failed
    assert not rep.ok

"""The violations corpus in pcaps/violations: each trace gets its verdict from the checker,
breaks exactly one property, and the committed files are what the generator makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance import violations
from conformance.checker import check_pcaps
from conformance.leg_checks import LEG_IDS
from conformance.properties import PROPERTIES

CORPUS = Path(__file__).resolve().parents[2] / "pcaps" / "violations"
ENTRIES = sorted(p.parent for p in CORPUS.glob("*/expected.json"))


def test_the_corpus_exists_and_matches_the_generator_list() -> None:
    assert {d.name for d in ENTRIES} == {v.name for v in violations.VIOLATIONS}
    assert (CORPUS / "README.md").exists()
    readme = (CORPUS / "README.md").read_text()
    for v in violations.VIOLATIONS:
        assert f"`{v.name}`" in readme


def test_every_property_is_covered() -> None:
    covered = {json.loads((d / "expected.json").read_text())["property"] for d in ENTRIES}
    cross = {pid for pid, p in PROPERTIES.items() if p.scope == "cross"}
    assert cross | set(LEG_IDS) <= covered


@pytest.mark.parametrize("entry", ENTRIES, ids=[d.name for d in ENTRIES])
def test_entry_gets_its_verdict_and_breaks_nothing_else(entry: Path) -> None:
    exp = json.loads((entry / "expected.json").read_text())
    policy = entry / exp["policy"] if exp["policy"] else None
    rep = check_pcaps(entry / "client.pcap", entry / "server.pcap", policy=policy,
                      kind=exp["kind"])
    findings = list(rep.findings())
    for pid, verdict in exp["verdicts"].items():
        got = [f.verdict for f in findings if f.property == pid]
        assert verdict in got, (pid, got, rep.render())
        if verdict != "fail":
            assert "fail" not in got
    others = [f"{f.property}: {f.detail}" for f in findings
              if f.verdict == "fail" and f.property != exp["property"]]
    assert not others, others
    if exp["path"]:
        assert exp["path"] in rep.path_classes()


def test_regeneration_is_deterministic(tmp_path: Path) -> None:
    """Two runs give identical bytes; the committed index and verdicts are what the generator
    writes. (The committed pcaps themselves may lag a changed reference core: they stay valid
    violations, which the test above checks; regenerate them with the command above.)"""
    violations.main(["--out", str(tmp_path / "a")])
    violations.write_corpus(tmp_path / "b")
    for entry in ENTRIES:
        for name in ("client.pcap", "server.pcap", "expected.json"):
            assert (tmp_path / "a" / entry.name / name).read_bytes() == \
                (tmp_path / "b" / entry.name / name).read_bytes(), f"{entry.name}/{name}"
        assert (tmp_path / "a" / entry.name / "expected.json").read_bytes() == \
            (entry / "expected.json").read_bytes(), f"{entry.name}/expected.json is stale"
    assert (tmp_path / "a" / "README.md").read_text() == (CORPUS / "README.md").read_text()

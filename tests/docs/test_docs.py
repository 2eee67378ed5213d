"""The generated specification: it builds with ``-W`` (the CI build), its traceability matrix
holds every claim-1 element, invariant and conformance case (and the check says so when one is
missing), and its fast-path diagram draws every non-default transition of the state table."""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fastpath import docs
from spec.claim import CLAIM1_IDS
from spec.invariants import REGISTRY, Invariant, ProofResult, Status, all_invariants
from spec.states import FAST_PATH_TABLE, FastPathState

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "docs" / "_ext") not in sys.path:
    sys.path.insert(0, str(REPO / "docs" / "_ext"))
specgen: Any = importlib.import_module("specgen")


def _docs_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fastpath")
    docs.add(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["docs", *argv])


# --- (1) the CI build ---------------------------------------------------------------------------


def test_docs_build_with_warnings_as_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's `dot` is missing: apt-get install graphviz (setup.sh should)")
    args = _docs_cli(["--out", str(tmp_path / "html")])
    assert args.handler(args) == 0, "sphinx-build -W failed: see the warnings above"
    assert f"docs built: {tmp_path / 'html' / 'index.html'}" in capsys.readouterr().out
    html = tmp_path / "html" / "_generated"
    matrix = (html / "traceability.html").read_text(encoding="utf-8")
    for name in REGISTRY:
        assert name in matrix
    assert (REPO / "docs" / "_generated" / "fast_path.dot").read_text(encoding="utf-8") \
        == specgen.fast_path_dot()
    assert "graphviz" in (html / "states.html").read_text(encoding="utf-8")
    invariants = (html / "invariants.html").read_text(encoding="utf-8")
    assert invariants.count("✔ proved") >= len(REGISTRY)  # results of this build, per invariant


def test_a_failed_build_exits_1_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("extensions = []\n", encoding="utf-8")
    (src / "index.rst").write_text("Broken\n======\n\n.. no-such-directive::\n",
                                   encoding="utf-8")
    monkeypatch.setattr(docs, "DOCS", src)
    args = _docs_cli(["--out", str(tmp_path / "html")])
    assert args.handler(args) == 1
    assert "the docs build failed" in capsys.readouterr().err


def test_open_without_a_browser_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(docs, "build", lambda out, srcdir=docs.DOCS: 0)
    monkeypatch.setattr(docs.webbrowser, "open", lambda url: False)
    args = _docs_cli(["--out", str(tmp_path), "--open"])
    assert args.handler(args) == 0
    assert "no web browser found" in capsys.readouterr().out


# --- (2) the traceability matrix is complete, and the check catches a gap ----------------------


def _matrix(cases: list[Any] | None = None) -> str:
    text, _ = specgen.traceability_page(all_invariants(), cases, "no suite")
    return text


def test_matrix_has_every_claim_element_invariant_and_case() -> None:
    cases, _ = specgen.conformance_cases()
    names = [c.name for c in cases or []]
    text = _matrix(cases)
    assert specgen.missing_from_matrix(text, CLAIM1_IDS, list(REGISTRY), names) == []


def test_matrix_check_fails_for_an_invariant_that_serves_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    all_invariants()  # the real registry first, so the fake is an addition

    def check(model: Any) -> ProofResult:
        return ProofResult("fake_untraced", Status.PROVED, 0.0)

    monkeypatch.setitem(REGISTRY, "fake_untraced",
                        Invariant("fake_untraced", "nothing", (), check, ()))
    missing = specgen.missing_from_matrix(_matrix(), CLAIM1_IDS, list(REGISTRY))
    assert len(missing) == 1 and "invariant fake_untraced" in missing[0]


def test_matrix_check_fails_for_a_missing_claim_row() -> None:
    lines = _matrix().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(r"\s*\* - :term:`C1\.e`", ln))
    row = lines[start][: len(lines[start]) - len(lines[start].lstrip())] + "* - "
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(row))
    text = "\n".join(lines[:start] + lines[end:])  # the whole C1.e row, gone
    assert specgen.missing_from_matrix(text, CLAIM1_IDS, []) == [
        "claim-1 element C1.e has no row"]


def test_matrix_places_conformance_cases_and_catches_one_that_serves_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("conformance.cases")
    fake.CASES = {  # type: ignore[attr-defined]
        "handoff_keeps_isns": types.SimpleNamespace(
            name="handoff_keeps_isns", description="ISNs survive the handoff",
            serves=("C1.g", "RFC 9293 §3.10.7.4")),
        "orphan": types.SimpleNamespace(name="orphan", description="serves nothing",
                                        serves=()),
    }
    monkeypatch.setitem(sys.modules, "conformance.cases", fake)
    cases, why = specgen.conformance_cases()
    assert why == "" and [c.name for c in cases] == ["handoff_keeps_isns", "orphan"]
    missing = specgen.missing_from_matrix(_matrix(cases), CLAIM1_IDS, list(REGISTRY),
                                          [c.name for c in cases])
    assert len(missing) == 1 and "conformance case orphan" in missing[0]


# --- (3) the fast-path diagram ------------------------------------------------------------------

EDGE = re.compile(r'^\s*"(\w+)" -> "(\w+)" \[label="([^"]*)"', re.MULTILINE)


def _edge_pairs(label: str) -> set[tuple[str, str]]:
    """(event, effect) pairs of an ``EVENT, EVENT / effect`` label (lines split by ``\\n``)."""
    pairs: set[tuple[str, str]] = set()
    pending: list[str] = []
    for line in label.split("\\n"):
        head, sep, effect = line.partition("/ ")
        pending += head.replace(",", " ").split()
        if sep:
            pairs |= {(e, effect.strip()) for e in pending}
            pending = []
    return pairs


def _missing_edges(dot: str) -> list[str]:
    drawn: set[tuple[str, str, str, str]] = set()
    for src, dst, label in EDGE.findall(dot):
        for event, effect in _edge_pairs(label):
            drawn.add((src, specgen.dot_node_state(dst), event, effect))
    missing = []
    for state, row in FAST_PATH_TABLE.items():
        default = Counter(row.values()).most_common(1)[0][0]
        for event, t in row.items():
            if t == default and t.next is state:
                continue
            want = (state.name, t.next.name, event.name, t.effect.name.lower())
            if want not in drawn:
                missing.append(f"{state.name} --{event.name}/{t.effect.name}--> {t.next.name}")
    return missing


def test_fast_path_diagram_draws_every_non_default_transition() -> None:
    dot = specgen.fast_path_dot()
    assert _missing_edges(dot) == []
    nodes = {specgen.dot_node_state(n) for n in re.findall(r'^\s*"(\w+)" \[', dot, re.M)}
    assert nodes == {s.name for s in FastPathState}
    assert ".. graphviz:: fast_path.dot" in specgen.states_page()


def test_diagram_check_fails_when_an_edge_is_missing() -> None:
    dot = specgen.fast_path_dot()
    handoff = next(ln for ln in dot.splitlines() if '"ESTABLISHED" -> "HANDED_OFF"' in ln)
    missing = _missing_edges(dot.replace(handoff + "\n", ""))
    assert sorted(missing) == [
        "ESTABLISHED --CLIENT_FIN/HANDOFF--> HANDED_OFF",
        "ESTABLISHED --CLIENT_REQUEST_HANDOFF/HANDOFF--> HANDED_OFF"]

"""``fastpath verify`` against a small fake registry, so the CLI is tested fast and on its own.

The fake replaces ``spec.invariants.all_invariants`` and the ``spec.variants`` module; the real
:func:`spec.invariants.run` still does the timing and model selection. One test at the end runs a
real proof end to end.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastpath.cli import main
from spec import invariants
from spec.invariants import Invariant, ProofResult, Status


@dataclass(frozen=True)
class FakeModel:
    broken: frozenset[str] = frozenset()
    """Invariants this model violates."""


class FakeTrace:
    def __init__(self, name: str) -> None:
        self.name = name

    def render(self) -> str:
        return f"client->gw SEQ=1 | gw->server SEQ=2  ({self.name} leg pair)\n"

    def write_pcap(self, path: Path) -> None:
        Path(path).write_bytes(b"\xd4\xc3\xb2\xa1fake")


def _check(name: str):
    def check(model: FakeModel) -> ProofResult:
        if name in model.broken:
            return ProofResult(name, Status.COUNTEREXAMPLE, 0.0, detail=f"x!{name} = 7",
                               trace=FakeTrace(name))
        return ProofResult(name, Status.PROVED, 0.0)
    return check


def _inv(name: str, broken_by: tuple[str, ...] = ()) -> Invariant:
    return Invariant(name, f"{name} holds for every segment", ("C1.g", "RFC 9293 §3.4"),
                     _check(name), broken_by)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Three invariants; variant ``off_by_one`` breaks ``beta``; returns the fake variants."""
    invs = [_inv("alpha"), _inv("beta", ("off_by_one",)), _inv("gamma")]
    monkeypatch.setattr(invariants, "all_invariants", lambda: list(invs))
    mod = types.ModuleType("spec.variants")
    mod.REAL = FakeModel()  # type: ignore[attr-defined]
    mod.VARIANTS = {  # type: ignore[attr-defined]
        "off_by_one": types.SimpleNamespace(name="off_by_one", description="adds one to seq",
                                            model=FakeModel(frozenset({"beta"})),
                                            breaks=("beta",)),
        "lossy": types.SimpleNamespace(name="lossy", description="drops a field",
                                       model=FakeModel(frozenset({"alpha", "gamma"})),
                                       breaks=("alpha",)),
    }
    monkeypatch.setitem(sys.modules, "spec.variants", mod)
    return mod


def test_all_proved_prints_table_and_exits_0(fake, capsys) -> None:
    assert main(["verify"]) == 0
    out, err = capsys.readouterr()
    for name in ("alpha", "beta", "gamma"):
        assert name in out and f"{name} holds for every segment" in out
    assert out.count("proved") >= 3
    assert "total: 3 proofs, 3 proved" in out and " s" in out.splitlines()[-1]
    assert "[1/3] alpha ... proved (" in err and "[3/3] gamma ... proved (" in err


def test_counterexample_exits_1_and_shows_trace(fake, monkeypatch, capsys) -> None:
    monkeypatch.setattr(fake, "REAL", FakeModel(frozenset({"gamma"})))
    assert main(["verify"]) == 1
    out, err = capsys.readouterr()
    assert "== counterexample: gamma ==" in out
    assert "(gamma leg pair)" in out and "x!gamma = 7" in out
    assert "[3/3] gamma ... counterexample" in err


def test_json_output_only_json(fake, capsys) -> None:
    assert main(["verify", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["alpha", "beta", "gamma"]
    for r in rows:
        assert r["status"] == "proved" and isinstance(r["seconds"], float)
        assert r["guarantees"] and r["serves"] == ["C1.g", "RFC 9293 §3.4"]
    assert err == ""


def test_only_selects_and_unknown_only_exits_2(fake, capsys) -> None:
    assert main(["verify", "--json", "--only", "gamma", "--only", "alpha"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["alpha", "gamma"]
    assert main(["verify", "--only", "alpha", "nope"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "'nope'" in err and "alpha, beta, gamma" in err


def test_unknown_variant_exits_2_listing_known(fake, capsys) -> None:
    assert main(["verify", "--variant", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "off_by_one, lossy" in err


def test_variant_runs_its_breaks_and_exits_1(fake, capsys) -> None:
    assert main(["verify", "--variant", "off_by_one"]) == 1
    out, err = capsys.readouterr()
    assert "[1/1] beta ... counterexample" in err
    assert "== counterexample: beta (variant off_by_one) ==" in out
    assert "(beta leg pair)" in out and "x!beta = 7" in out
    assert "1 of 1 claimed invariants broken as expected" in out


def test_variant_with_only_and_json(fake, capsys) -> None:
    assert main(["verify", "--json", "--variant", "lossy", "--only", "alpha", "beta"]) == 1
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["alpha"]["status"] == "counterexample" and "trace" in rows["alpha"]
    assert rows["beta"]["status"] == "proved" and rows["beta"]["variant"] == "lossy"


def test_pcap_dir_writes_one_file_per_counterexample(fake, tmp_path, capsys) -> None:
    out_dir = tmp_path / "cex"
    assert main(["verify", "--variant", "lossy", "--only", "alpha", "beta", "gamma",
                 "--pcap-dir", str(out_dir)]) == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["alpha.pcap", "gamma.pcap"]
    assert f"pcap: {out_dir / 'alpha.pcap'}" in capsys.readouterr().out


def test_list_shows_invariants_and_variants(fake, capsys) -> None:
    assert main(["verify", "--list"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "C1.g, RFC 9293 §3.4" in out and "beta holds" in out
    assert "off_by_one" in out and "adds one to seq" in out


def test_real_proof_seq_order_total(capsys) -> None:
    """The real registry, end to end: this proof is fast and must hold."""
    for module in ("spec.proofs", "spec.variants"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            pytest.skip(f"{module} is not importable yet ({exc})")
    if "seq_order_total" not in {inv.name for inv in invariants.all_invariants()}:
        pytest.skip("spec.proofs does not register seq_order_total yet")
    code = main(["verify", "--json", "--only", "seq_order_total"])
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["status"], code) == ("seq_order_total", "proved", 0)

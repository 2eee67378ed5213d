"""Every named scenario of ``fastpath simulate`` passes on the reference core, and the
scenario verdict itself can fail."""

from __future__ import annotations

import pytest

from reference.gateway import scenarios
from spec import translate


@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_scenario_passes_byte_exact_on_the_expected_path(name: str) -> None:
    r = scenarios.run(scenarios.SCENARIOS[name])
    assert r.verdict == "pass", f"{name}: {r.detail}"
    sc = scenarios.SCENARIOS[name]
    assert (r.path, r.reason) == (sc.expect_path, sc.expect_reason)


def test_verdict_fails_when_the_splice_translates_wrongly(monkeypatch) -> None:
    monkeypatch.setattr(translate, "seq_to_client",
                        lambda sp, s: (s + sp.s2c_seq + 1) & 0xFFFFFFFF)
    r = scenarios.run(scenarios.SCENARIOS["eligible_request"])
    assert r.verdict == "FAIL"
    assert not r.byte_exact


def test_verdict_fails_when_the_path_is_not_the_expected_one(monkeypatch) -> None:
    from spec import eligibility

    monkeypatch.setattr(eligibility, "request_head_complete", lambda payload: False)
    r = scenarios.run(scenarios.SCENARIOS["eligible_request"])
    assert r.verdict == "FAIL"
    assert "path normal, expected fast" in r.detail

"""The runners' guard: a case that raises becomes an "error" result naming the exception,
and the run goes on."""

from __future__ import annotations

from conformance.cases import CASES
from conformance.report import CaseResult
from conformance.runner import guarded


def test_a_case_that_raises_is_an_error_result_not_an_abort() -> None:
    case = CASES[0]

    def broken() -> CaseResult:
        raise RuntimeError("capture vanished")

    res = guarded(case, 6, broken)
    assert (res.case_id, res.family, res.verdict) == (case.id, 6, "error")
    assert res.reason == "RuntimeError: capture vanished"
    assert any("capture vanished" in n for n in res.notes)  # the traceback is kept


def test_a_case_that_runs_returns_its_own_result() -> None:
    case = CASES[0]
    ok = CaseResult(case.id, case.name, case.title, 4, "pass", "")
    assert guarded(case, 4, lambda: ok) is ok

"""Results of a conformance run and the three forms they leave in: a verdict table for the
terminal, JSON for programs, JUnit XML for CI systems (one testcase per case and family,
a failure element carrying the first failed property and its evidence frames)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CASE_VERDICTS = ("pass", "fail", "skip", "error")


@dataclass
class PropertyResult:
    """One property over all connections of a case: the worst verdict wins
    (fail > unknown > pass > n/a), with the details of the connections that earned it."""

    id: str
    verdict: str
    detail: str
    packets: list[tuple[str, int]] = field(default_factory=list)
    focus: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"property": self.id, "verdict": self.verdict, "detail": self.detail,
                "packets": [list(p) for p in self.packets], "focus": self.focus}


@dataclass
class CaseResult:
    case_id: str
    name: str
    title: str
    family: int
    verdict: str
    reason: str
    """Why it failed, was skipped or errored; for a pass, the path class seen."""
    seconds: float = 0.0
    stimulus: dict[str, Any] = field(default_factory=dict)
    properties: list[PropertyResult] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    expected_path: str | None = None
    connections: int = 0
    pcaps: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.case_id}[v{self.family}]"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.case_id, "name": self.name, "title": self.title,
                "family": self.family, "verdict": self.verdict, "reason": self.reason,
                "seconds": round(self.seconds, 3), "stimulus": self.stimulus,
                "expected_path": self.expected_path, "paths": self.paths,
                "connections": self.connections, "pcaps": self.pcaps, "notes": self.notes,
                "properties": [p.as_json() for p in self.properties]}


@dataclass
class SuiteResult:
    gateway: str
    capabilities: dict[str, bool]
    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    gateway_stats: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(CASE_VERDICTS, 0)
        for r in self.results:
            out[r.verdict] += 1
        return out

    @property
    def ok(self) -> bool:
        c = self.counts()
        return c["fail"] == 0 and c["error"] == 0

    def as_json(self) -> dict[str, Any]:
        return {"gateway": self.gateway, "capabilities": self.capabilities,
                "ok": self.ok, "counts": self.counts(), "seconds": round(self.seconds, 2),
                "notes": self.notes, "gateway_stats": self.gateway_stats,
                "cases": [r.as_json() for r in self.results]}


def write_json(suite: SuiteResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite.as_json(), indent=2) + "\n")


def junit_tree(suite: SuiteResult) -> ET.ElementTree:
    c = suite.counts()
    root = ET.Element("testsuites", name="fastpath conformance", tests=str(len(suite.results)),
                      failures=str(c["fail"]), errors=str(c["error"]), skipped=str(c["skip"]),
                      time=f"{suite.seconds:.3f}")
    ts = ET.SubElement(root, "testsuite", name=f"conformance.{suite.gateway}",
                       tests=str(len(suite.results)), failures=str(c["fail"]),
                       errors=str(c["error"]), skipped=str(c["skip"]),
                       time=f"{suite.seconds:.3f}")
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", name="gateway", value=suite.gateway)
    for k, v in suite.capabilities.items():
        ET.SubElement(props, "property", name=f"capability.{k}", value=str(v).lower())
    for r in suite.results:
        tc = ET.SubElement(ts, "testcase", classname=f"conformance.{suite.gateway}.v{r.family}",
                           name=f"{r.case_id} {r.name}", time=f"{r.seconds:.3f}")
        if r.verdict == "fail":
            el = ET.SubElement(tc, "failure", message=r.reason[:500], type="conformance")
            el.text = _failure_text(r)
        elif r.verdict == "error":
            el = ET.SubElement(tc, "error", message=r.reason[:500], type="harness")
            el.text = r.reason
        elif r.verdict == "skip":
            ET.SubElement(tc, "skipped", message=r.reason[:500])
        out = ET.SubElement(tc, "system-out")
        out.text = "\n".join(f"{p.id}: {p.verdict}: {p.detail}" for p in r.properties) + \
            ("\npcaps: " + ", ".join(r.pcaps.values()) if r.pcaps else "")
    ET.indent(root)
    return ET.ElementTree(root)


def _failure_text(r: CaseResult) -> str:
    lines = [r.reason]
    for p in r.properties:
        if p.verdict == "fail":
            frames = ", ".join(f"{leg} #{n}" for leg, n in p.packets[:10])
            lines.append(f"{p.id}: {p.detail}" + (f" (frames {frames})" if frames else ""))
    if r.pcaps:
        lines.append("pcaps: " + ", ".join(r.pcaps.values()))
    return "\n".join(lines)


def write_junit(suite: SuiteResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(suite).write(path, encoding="utf-8", xml_declaration=True)


MARK = {"pass": "ok", "fail": "FAIL", "skip": "skip", "error": "ERROR"}


def render(suite: SuiteResult) -> str:
    """The verdict table: one row per case and family, then the totals."""
    rows = [("case", "fam", "verdict", "path", "time", "why")]
    for r in suite.results:
        path = ",".join(sorted(set(r.paths))) or "-"
        rows.append((f"{r.case_id} {r.name}", f"v{r.family}", MARK[r.verdict], path,
                     f"{r.seconds:.1f}s", r.reason if r.verdict != "pass" else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True))
             + ("  " + row[5] if row[5] else "") for row in rows]
    c = suite.counts()
    lines.append(f"{suite.gateway}: {c['pass']} passed, {c['fail']} failed, {c['skip']} "
                 f"skipped, {c['error']} errors in {suite.seconds:.1f} s")
    return "\n".join(line.rstrip() for line in lines)

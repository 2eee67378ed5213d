"""Run a :class:`~conformance.stimulus.RealPeer` stimulus in a lab and judge its outcome.

The shaping (client sysctls, impairment nodes) is applied for the case and undone after it,
also when the stimulus fails, so one case cannot leak its conditions into the next. The
outcome check is the client's view only: every response has the status the lab server gives,
and a ``/size/N`` body is exactly :func:`reference.gateway.sim.response_body` (by sha256);
the traces are judged separately by the checker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from conformance.stimulus import Connection, Outcome, RealPeer, Request
from reference.gateway.sim import response_body
from reference.lab import Lab

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CURL_FORMAT = "%{filename_effective}|%{http_code}|%header{x-server}|%{errormsg}\n"
SPLIT_PAUSE = 0.15
"""Seconds between the pieces of a split request: long enough that each is its own segment
and a fast path sees the first alone."""


@lru_cache(maxsize=256)
def expected_digest(size: int) -> str:
    return hashlib.sha256(response_body(size)).hexdigest()


def expected_status(req: Request) -> int:
    """What the lab's HTTP server answers (reference/lab/httpserver.py): 200 for GET/HEAD of
    ``/size/N`` and ``/``, 404 for other paths, 405 for other methods."""
    if req.method not in ("GET", "HEAD"):
        return 405
    return 200 if req.path is None or req.path == "/" else 404


@contextlib.contextmanager
def shaped(lab: Lab, stim: RealPeer) -> Iterator[None]:
    """Client sysctls and impairments for the duration of the block, then the old values."""
    saved: list[tuple[str, str]] = []
    impaired: list[str] = []
    try:
        for key, value in stim.client_sysctls:
            old = lab.run("client", ["sysctl", "-n", key], capture_output=True, text=True)
            saved.append((key, old.stdout.strip()))
            lab.run("client", ["sysctl", "-qw", f"{key}={value}"], check=True)
        for leg, imp in stim.impair:
            impaired.append(leg)
            lab.set_impairment(leg, **imp.as_kwargs())
        yield
    finally:
        for leg in impaired:
            with contextlib.suppress(Exception):
                lab.set_impairment(leg)
        for key, old_value in reversed(saved):
            if old_value:
                lab.run("client", ["sysctl", "-qw", f"{key}={old_value}"])


def _host(vip: str, family: int) -> str:
    return f"[{vip}]" if family == 6 else vip


def run_curl(lab: Lab, stim: RealPeer, vip: str, port: int, family: int,
             work: Path) -> list[list[dict[str, Any]]]:
    """One curl for every connection (``--parallel`` if the stimulus says so), each request
    on a connection of its own, bodies to files that are hashed here."""
    work.mkdir(parents=True, exist_ok=True)
    reqs = [r for conn in stim.connections for r in conn.requests]
    argv = ["curl", "-sS", "-g", f"-{family}", "--connect-timeout", "5", "--max-time",
            f"{stim.timeout:g}", "-w", CURL_FORMAT, "-H", "Connection: close"]
    if stim.parallel and len(reqs) > 1:
        argv += ["--parallel", "--parallel-immediate", "--parallel-max", str(len(reqs))]
    files = [work / f"body{i}" for i in range(len(reqs))]
    for f, r in zip(files, reqs, strict=True):
        if r.host:
            argv += ["-H", f"Host: {r.host}"]
        argv += ["-o", str(f), f"http://{_host(vip, family)}:{port}{r.target}"]
    res = lab.run("client", argv, capture_output=True, text=True, timeout=stim.timeout + 30)
    lines = {fields[0]: fields for line in res.stdout.splitlines()
             if len(fields := line.split("|")) >= 4}
    out: list[list[dict[str, Any]]] = []
    for f, r in zip(files, reqs, strict=True):
        fields = lines.get(str(f))
        if fields is None:
            out.append([{"target": r.target, "error": f"curl reported nothing (exit "
                                                      f"{res.returncode}: "
                                                      f"{res.stderr.strip()[-200:]})"}])
            continue
        code, server, err = int(fields[1] or 0), fields[2] or None, "|".join(fields[3:])
        data = f.read_bytes() if f.exists() else b""
        f.unlink(missing_ok=True)
        item: dict[str, Any] = {"target": r.target, "status": code, "server": server,
                                "length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if err or not code:
            item["error"] = f"curl: {err or 'no response'}"
        out.append([item])
    return out


def _conn_spec(conn: Connection) -> dict[str, Any]:
    return {"requests": [{"method": r.method, "target": r.target, "host": r.host,
                          "body": r.body, "version": r.version, "close": r.close}
                         for r in conn.requests],
            "split_at": list(conn.split_at), "pipeline": conn.pipeline,
            "half_close": conn.half_close, "abort_after": conn.abort_after}


def run_python(lab: Lab, stim: RealPeer, vip: str, port: int,
               family: int) -> list[list[dict[str, Any]]]:
    spec = {"host": vip, "port": port, "family": family, "pause": SPLIT_PAUSE,
            "timeout": stim.timeout, "maxseg": stim.maxseg, "parallel": stim.parallel,
            "connections": [_conn_spec(c) for c in stim.connections]}
    res = lab.run("client", [sys.executable, "-m", "conformance.peer_client", json.dumps(spec)],
                  capture_output=True, text=True, timeout=stim.timeout + 30, cwd=PROJECT_ROOT)
    try:
        results = json.loads(res.stdout)
    except ValueError:
        why = f"Python client failed (exit {res.returncode}): {res.stderr.strip()[-300:]}"
        return [[{"target": r.target, "error": why} for r in c.requests]
                for c in stim.connections]
    return results  # type: ignore[no-any-return]


def judge(stim: RealPeer, results: list[list[dict[str, Any]]]) -> Outcome:
    """Compare each response with what the lab server sends; the first problem is the
    detail, every response is kept for the report."""
    if stim.client == "curl":
        expected = [[r] for conn in stim.connections for r in conn.requests]
        conns: list[Connection] = [Connection(requests=(r,)) for conn in stim.connections
                                   for r in conn.requests]
    else:
        expected = [list(c.requests) for c in stim.connections]
        conns = list(stim.connections)
    problems: list[str] = []
    flat: list[dict[str, Any]] = []
    for ci, (want, got, conn) in enumerate(zip(expected, results, conns, strict=False)):
        for ri, req in enumerate(want):
            where = f"connection {ci + 1} request {ri + 1} ({req.method} {req.target})"
            res = got[ri] if ri < len(got) else {"error": "no result"}
            flat.append(res)
            if res.get("error"):
                problems.append(f"{where}: {res['error']}")
                continue
            if res.get("status") != expected_status(req):
                problems.append(f"{where}: status {res.get('status')}, expected "
                                f"{expected_status(req)}")
            if res.get("aborted") or not req.expects_body or req.method == "HEAD":
                continue
            if conn.abort_after is not None:
                continue
            if res.get("length") != req.size or res.get("sha256") != expected_digest(req.size):
                problems.append(f"{where}: body of {res.get('length')} bytes is not the "
                                f"{req.size} bytes the server sent (sha256 differs)")
    if len(results) != len(expected):
        problems.append(f"{len(results)} connection results for {len(expected)} connections")
    n = len(flat)
    ok = not problems
    detail = (f"{n} response{'s' * (n != 1)} as the servers sent them" if ok
              else f"{len(problems)} problem(s); first: {problems[0]}")
    return Outcome(ok, detail, tuple(flat), tuple(problems))


def run(lab: Lab, stim: RealPeer, *, vip: str, port: int, family: int, work: Path) -> Outcome:
    """Drive and judge. The caller shapes the lab first (:func:`shaped`), before its captures
    start (see :func:`conformance.runner.capturing`)."""
    try:
        if stim.client == "curl":
            results = run_curl(lab, stim, vip, port, family, work)
        else:
            results = run_python(lab, stim, vip, port, family)
    except subprocess.TimeoutExpired as exc:
        return Outcome(False, f"the client did not finish within {exc.timeout:g} s")
    return judge(stim, results)

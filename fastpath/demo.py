"""``fastpath demo``: the whole system in one command, on the embedded default config (root).

Builds a lab ("out" mode, a name of its own), runs ``fastpath gateway`` in its gateway
namespace, captures both legs with tcpdump, and drives traffic from the client namespace that
must take each path: ordinary GETs (spliced on the fast path), requests written in two
segments (handed off as PARTIAL_REQUEST), a large body on each path, many concurrent
connections and keep-alive connections. Every response is checked byte for byte against
``response_body``. Progress goes to stderr, the summary to stdout (``--json`` writes it as
JSON too), then everything is torn down, also on failure, Ctrl-C or SIGTERM.

Exit 0 only if every request succeeded byte-exact and the gateway's counters show exactly the
expected paths; 1 otherwise; 2 if the demo cannot run here (not root, a tool missing).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import FrameType
from typing import Any

from fastpath.cli import CliError
from reference.gateway.sim import response_body
from reference.lab import Lab, LabError
from spec.topology import VIP, VPORT

ROOT = Path(__file__).resolve().parents[1]
URL = f"http://{VIP}"
TOOLS = {"ip": "iproute2", "nft": "nftables", "curl": "curl", "tcpdump": "tcpdump"}
"""Commands the demo runs, with the Debian package of each (for the error message)."""
READY_TIMEOUT = 15.0
"""Seconds for the gateway to print ``ready`` and for tcpdump to start listening."""
STOP_TIMEOUT = 10.0
GATEWAY_LIFETIME = 900.0
"""The gateway's ``--duration``: a safety net should the demo lose track of it."""
REQUEST_TIMEOUT = 60.0
"""Seconds any one client (curl or the Python client) may take for its connection(s)."""
SPLIT_PAUSE = 0.2
"""Seconds between the two writes of a split request, so they leave as two segments."""
IMPAIRMENT = {"loss": 0.02, "duplicate": 0.02, "reorder": 0.05, "delay_ms": 1.0,
              "jitter_ms": 1.0}
"""What the impaired steps apply on each leg (seeded impairment nodes, this kernel has no
netem)."""
IMPAIR_TEXT = "2% loss, 2% duplication, 5% reordering"
MAX_ERRORS = 20
"""Error messages kept per step (every failure is still counted)."""
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Plan:
    """How much traffic each step sends; ``--quick`` is small enough for a test."""

    name: str
    gets: int
    split: int
    big: int
    concurrent: int
    keepalive_connections: int
    keepalive_requests: int


FULL = Plan("full", gets=20, split=5, big=10 << 20, concurrent=200, keepalive_connections=20,
            keepalive_requests=200)
QUICK = Plan("quick", gets=5, split=2, big=1 << 20, concurrent=20, keepalive_connections=4,
             keepalive_requests=20)


@dataclass(slots=True)
class Step:
    """One traffic step: what it sent, which path it must take, what came back."""

    what: str
    path: str
    """``fast`` or ``normal``: where the gateway must put every connection of this step."""
    connections: int
    requests: int
    ok: int = 0
    seconds: float = 0.0
    servers: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    def record(self, size: int, *, status: int | None = None, length: int | None = None,
               digest: str | None = None, server: str | None = None,
               error: str | None = None) -> None:
        """Count one response: good only if 200 and byte-exact; else keep why it is not."""
        if error is None:
            if status != 200:
                error = f"HTTP status {status}"
            elif length != size:
                error = f"{length} body bytes instead of {size}"
            elif digest != expected_digest(size):
                error = "body differs from response_body (sha256)"
        if error is None:
            self.ok += 1
            self.servers[server or "(no X-Server)"] += 1
        elif len(self.errors) < MAX_ERRORS:
            self.errors.append(f"/size/{size}: {error}")

    def as_json(self) -> dict[str, Any]:
        return {"what": self.what, "path": self.path, "connections": self.connections,
                "requests": self.requests, "ok": self.ok, "failed": self.failed,
                "seconds": round(self.seconds, 3), "servers": dict(sorted(self.servers.items())),
                "errors": list(self.errors)}


@lru_cache(maxsize=512)
def expected_digest(size: int) -> str:
    """sha256 of what ``/size/N`` must return (cached: the steps repeat sizes)."""
    return hashlib.sha256(response_body(size)).hexdigest()


# --------------------------------------------------------------------------- verdict, summary


def verdict(steps: Sequence[Step], stats: dict[str, Any] | None) -> list[str]:
    """Every reason the demo failed, empty if it passed. Pure, so a test can check that a
    broken result (one request not byte-exact, a wrong path) really fails."""
    problems = [f"{s.what}: {s.failed} of {s.requests} requests failed"
                + (f" (first: {s.errors[0]})" if s.errors else "")
                for s in steps if s.failed or s.ok != s.requests]
    if stats is None:
        return [*problems, "the gateway left no final stats (did it crash?)"]
    core = stats.get("gateway", {})
    fast = sum(s.connections for s in steps if s.path == "fast")
    normal = sum(s.connections for s in steps if s.path == "normal")
    handoffs = {k: v for k, v in core.get("handoffs", {}).items() if v}
    if core.get("sessions_spliced") != fast:
        problems.append(f"fast path: {core.get('sessions_spliced')} sessions spliced, "
                        f"expected {fast}")
    if core.get("sessions_handed_off") != normal:
        problems.append(f"normal path: {core.get('sessions_handed_off')} sessions handed off, "
                        f"expected {normal}")
    if handoffs != ({"PARTIAL_REQUEST": normal} if normal else {}):
        problems.append(f"handoffs by reason {handoffs or '{}'}, expected only "
                        f"PARTIAL_REQUEST x {normal}")
    return problems


def summarize(plan: Plan, lab: str, kept: bool, steps: Sequence[Step],
              stats: dict[str, Any] | None, pcaps: dict[str, dict[str, Any]],
              problems: Sequence[str], seconds: float) -> dict[str, Any]:
    """The summary as JSON-able data; the text summary is rendered from exactly this."""
    problems = [*problems, *verdict(steps, stats)]
    core = (stats or {}).get("gateway", {})
    drv = (stats or {}).get("driver", {})
    servers: Counter[str] = Counter()
    for s in steps:
        servers.update(s.servers)

    def path(name: str, sessions_key: str) -> dict[str, Any]:
        mine = [s for s in steps if s.path == name]
        return {"sessions": core.get(sessions_key), "expected_sessions":
                sum(s.connections for s in mine), "requests": sum(s.requests for s in mine),
                "requests_ok": sum(s.ok for s in mine)}

    return {
        "verdict": "fail" if problems else "pass", "problems": problems, "plan": plan.name,
        "lab": {"name": lab, "kept": kept,
                "remove": f"fastpath lab down --name {lab}" if kept else None},
        "seconds": round(seconds, 2),
        "requests": {"total": sum(s.requests for s in steps), "ok": sum(s.ok for s in steps),
                     "failed": sum(s.failed for s in steps)},
        "steps": [s.as_json() for s in steps],
        "paths": {"fast": path("fast", "sessions_spliced"),
                  "normal": path("normal", "sessions_handed_off")},
        "handoffs": {k: v for k, v in core.get("handoffs", {}).items() if v},
        "bytes": {"client_to_server": core.get("bytes_client_to_server"),
                  "server_to_client": core.get("bytes_server_to_client")},
        "drops": {"gateway": {k: v for k, v in core.get("drops", {}).items() if v},
                  "driver": {k: v for k, v in drv.get("drops", {}).items() if v},
                  "socket": {k: v for k, v in drv.get("kernel_drops", {}).items() if v}},
        "servers": dict(sorted(servers.items())),
        "errors": [e for s in steps for e in s.errors][:MAX_ERRORS],
        "pcaps": pcaps,
        "gateway_stats": stats,
    }


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def render(summary: dict[str, Any]) -> str:
    """The text summary: a table of the steps, then one labelled line per topic."""
    req, lab = summary["requests"], summary["lab"]
    head = (f"fastpath demo ({summary['plan']}) on lab {lab['name']}: "
            f"{summary['verdict'].upper()}, {req['ok']} of {req['total']} requests byte-exact, "
            f"{summary['seconds']:.1f} s")
    what_w = max(len("step"), *(len(s["what"]) for s in summary["steps"])) \
        if summary["steps"] else len("step")
    row = f"  {{:<{what_w}}}  {{:<6}}  {{:>8}}  {{:>5}}  {{:>6}}  {{:>7}}"
    lines = [head, row.format("step", "path", "requests", "ok", "failed", "seconds")]
    lines += [row.format(s["what"], s["path"], s["requests"], s["ok"], s["failed"],
                         f"{s['seconds']:.2f}") for s in summary["steps"]]
    fast, normal = summary["paths"]["fast"], summary["paths"]["normal"]
    drops = summary["drops"]
    pcaps = "; ".join(f"{p['path']} ({p['interface']}, {p.get('packets', '?')} packets, "
                      f"{_size(p.get('bytes'))})" for p in summary["pcaps"].values())
    labels = [
        ("paths", f"fast: {fast['sessions']} sessions spliced (expected "
                  f"{fast['expected_sessions']}), {fast['requests']} requests; normal: "
                  f"{normal['sessions']} sessions handed off (expected "
                  f"{normal['expected_sessions']}), {normal['requests']} requests"),
        ("handoffs", _counts(summary["handoffs"])),
        ("bytes", f"client->server {_size(summary['bytes']['client_to_server'])}, "
                  f"server->client {_size(summary['bytes']['server_to_client'])}"),
        ("drops", f"gateway: {_counts(drops['gateway'])}; driver: {_counts(drops['driver'])}; "
                  f"socket: {_counts(drops['socket'])}"),
        ("servers", _counts(summary["servers"])),
        ("errors", "none" if not summary["errors"] else f"{req['failed']} failed, "
                   f"first: {summary['errors'][0]}"),
        ("pcaps", pcaps or "none"),
        ("lab", f"kept; remove it with `{lab['remove']}`" if lab["kept"] else "removed"),
    ]
    lines += [f"{k + ':':<10}{v}" for k, v in labels]
    lines += [f"problem:  {p}" for p in summary["problems"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- processes


def _die_with_us(sig: signal.Signals) -> Callable[[], None]:
    """A preexec_fn: should the demo be SIGKILLed, the child still gets ``sig`` and stops
    (its Ctrl-C and SIGTERM paths are covered by the demo's own teardown)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


def _stop(proc: subprocess.Popen[Any], sig: signal.Signals) -> int | None:
    """``sig``, a bounded wait, then SIGKILL: the process is gone afterwards whatever it did."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
            return None
    return proc.returncode


def _tail(path: Path, n: int = 300) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").strip()[-n:] or "(no output)"
    return "(no output)"


class Capture:
    """tcpdump on one gateway interface, writing a pcap; started in a session of its own so
    a terminal's Ctrl-C reaches only the demo, which then stops it with SIGINT (complete
    file, counters printed)."""

    def __init__(self, lab: Lab, interface: str, pcap: Path, log: Path) -> None:
        self.interface, self.pcap, self.log = interface, pcap, log
        argv = ["tcpdump", "-i", interface, "-w", str(pcap), "-s", "0", "-U", "-n", "-p",
                "-Z", "root"]
        with open(log, "wb") as err:
            self.proc = lab.popen("gateway", argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                  preexec_fn=_die_with_us(signal.SIGINT))
        self.stopped: dict[str, Any] | None = None

    def wait_listening(self, deadline: float) -> None:
        """Traffic must not start before tcpdump listens, or the pcap misses the first SYN."""
        for _ in range(10_000):
            if "listening on" in _tail(self.log, 10_000):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise CliError(f"tcpdump on {self.interface} did not start: {_tail(self.log)}")

    def stop(self) -> dict[str, Any]:
        if self.stopped is None:
            rc = _stop(self.proc, signal.SIGINT)
            log = _tail(self.log, 10_000)
            nums = {key: int(m.group(1)) for key in ("captured", "dropped by kernel")
                    if (m := re.search(rf"(\d+) packets? {key}", log))}
            self.stopped = {"path": str(self.pcap), "interface": self.interface,
                            "packets": nums.get("captured"),
                            "dropped_by_kernel": nums.get("dropped by kernel"),
                            "bytes": self.pcap.stat().st_size if self.pcap.exists() else None,
                            "tcpdump_exit": rc}
        return self.stopped


class GatewayProcess:
    """``fastpath gateway --netns`` on the lab's gateway namespace with the default config."""

    def __init__(self, lab: Lab, work: Path) -> None:
        self.stats_path, self.log = work / "gateway-stats.json", work / "gateway.log"
        argv = [sys.executable, "-m", "fastpath.cli", "gateway", "--netns", lab.gateway_ns,
                "--duration", f"{GATEWAY_LIFETIME:g}", "--stats-json", str(self.stats_path)]
        with open(self.log, "wb") as err:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=ROOT,
                start_new_session=True, preexec_fn=_die_with_us(signal.SIGTERM))
        self.ready = ""

    def wait_ready(self) -> str | None:
        """The ``ready`` line, or None if none came within READY_TIMEOUT."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        self.ready = line
        return line if line.startswith("ready ") else None

    def stop(self) -> tuple[int | None, dict[str, Any] | None]:
        """SIGTERM, then the final stats it wrote on the way out (None if it wrote none)."""
        rc = _stop(self.proc, signal.SIGTERM)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        try:
            return rc, json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return rc, None


# --------------------------------------------------------------------------- the clients

_CLIENT = r'''
"""Python client for fastpath demo: argv[1] is JSON {"vip", "conns": [{"sizes", "split"}],
"pause", "timeout"}; prints per connection a list of per-request results as JSON."""
import asyncio, hashlib, json, socket, sys


async def conn(spec, vip, port, pause, timeout):
    sizes, out = spec["sizes"], []
    writer, failed = None, False
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(vip, port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                       socket.TCP_NODELAY, 1)
            for i, n in enumerate(sizes):
                close = "close" if i == len(sizes) - 1 else "keep-alive"
                req = (f"GET /size/{n} HTTP/1.1\r\nHost: {vip}\r\n"
                       f"Connection: {close}\r\n\r\n").encode()
                if spec["split"] and i == 0:  # 9 bytes: "GET /size", no complete line
                    writer.write(req[:9])
                    await writer.drain()
                    await asyncio.sleep(pause)
                    req = req[9:]
                writer.write(req)
                await writer.drain()
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                status = int(head[0].split()[1])
                hdrs = {k.strip().lower(): v.strip()
                        for k, _, v in (h.partition(":") for h in head[1:] if h)}
                left, got, digest = int(hdrs.get("content-length", "0")), 0, hashlib.sha256()
                while left > 0:
                    chunk = await reader.read(min(left, 1 << 16))
                    if not chunk:
                        raise ConnectionError(f"closed after {got} body bytes")
                    digest.update(chunk)
                    got, left = got + len(chunk), left - len(chunk)
                res = {"size": n, "status": status, "server": hdrs.get("x-server"),
                       "length": got, "sha256": digest.hexdigest()}
                if close == "close" and await reader.read(1):  # the stream must end here
                    res["error"] = "data after the last body"
                out.append(res)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
            IndexError) as exc:
        failed = True
        out += [{"size": n, "error": f"{type(exc).__name__}: {exc}"} for n in sizes[len(out):]]
    finally:
        if writer is not None and failed:
            writer.transport.abort()  # no orderly close to wait for
        elif writer is not None:
            writer.close()
    return out


async def main():
    spec = json.loads(sys.argv[1])
    results = await asyncio.gather(*(conn(c, spec["vip"], spec["port"], spec["pause"],
                                          spec["timeout"]) for c in spec["conns"]))
    json.dump(results, sys.stdout)


asyncio.run(main())
'''

_CURL_FORMAT = "%{filename_effective}|%{http_code}|%header{x-server}|%{errormsg}\n"


class Demo:
    """The run's state: lab, gateway, captures, steps; :meth:`teardown` always runs last."""

    def __init__(self, plan: Plan, pcap_dir: Path, work: Path, keep: bool) -> None:
        self.plan, self.pcap_dir, self.work, self.keep = plan, pcap_dir, work, keep
        self.lab: Lab | None = None
        self.gateway: GatewayProcess | None = None
        self.captures: list[Capture] = []
        self.steps: list[Step] = []
        self.problems: list[str] = []
        self.stats: dict[str, Any] | None = None
        self.pcaps: dict[str, dict[str, Any]] = {}
        self._runs = 0

    @staticmethod
    def say(msg: str) -> None:
        print(f"demo: {msg}", file=sys.stderr, flush=True)

    # ---- setup ----------------------------------------------------------------------------
    def setup(self) -> bool:
        """Lab, captures, gateway. False (with a problem noted) if the gateway never got
        ready: that is a failure of the thing being demonstrated, not of this machine."""
        t0 = time.monotonic()
        self.lab = Lab(_unique_name(), servers=3, gateway_kernel="out", impair=True)
        try:
            self.lab.up()
        except LabError as exc:
            self.lab = None  # up() removed whatever it had built
            raise CliError(str(exc)) from None
        self.say(f"lab {self.lab.name} up (3 servers, gateway kernel out) in "
                 f"{time.monotonic() - t0:.2f} s")
        deadline = time.monotonic() + READY_TIMEOUT
        for role, ifname in (("client_leg", "gc"), ("server_leg", "gs")):
            pcap = self.pcap_dir / f"{role.replace('_', '-')}.pcap"
            self.captures.append(Capture(self.lab, ifname, pcap, self.work / f"{role}.log"))
        for cap in self.captures:
            cap.wait_listening(deadline)
        self.say("capturing " + ", ".join(f"{c.interface} -> {c.pcap}" for c in self.captures))
        t0 = time.monotonic()
        self.gateway = GatewayProcess(self.lab, self.work)
        if self.gateway.wait_ready() is None:
            self.problems.append(f"the gateway did not get ready within {READY_TIMEOUT:g} s: "
                                 f"{self.gateway.ready or _tail(self.gateway.log)}")
            return False
        self.say(f"gateway {self.gateway.ready.removeprefix('ready ')} ready in "
                 f"{time.monotonic() - t0:.2f} s")
        return True

    # ---- traffic --------------------------------------------------------------------------
    def drive(self) -> None:
        p = self.plan
        big = _size(p.big).replace(".0 ", " ")
        ka_sizes = [3000 + 7 * i for i in range(p.keepalive_requests)]
        per = -(-p.keepalive_requests // p.keepalive_connections)
        ka_conns = [ka_sizes[i:i + per] for i in range(0, len(ka_sizes), per)]
        plan: list[tuple[Step, Callable[[Step], None]]] = [
            (Step(f"{p.gets} GETs /size/1000, a connection each (curl)", "fast", p.gets,
                  p.gets), self._ordinary_gets),
            (Step(f"{p.split} requests in 2 segments (Python, TCP_NODELAY)", "normal",
                  p.split, p.split),
             lambda s: self._python(s, [[5000 + 1000 * i] for i in range(p.split)], True)),
            (Step(f"{big} response on the fast path (curl)", "fast", 1, 1),
             lambda s: self._curl(s, [p.big])),
            (Step(f"{big} response after a handoff (Python, 2 segments)", "normal", 1, 1),
             lambda s: self._python(s, [[p.big]], True)),
            (Step(f"{p.concurrent} concurrent connections, keep-alive off (curl --parallel)",
                  "fast", p.concurrent, p.concurrent),
             lambda s: self._curl(s, [2000 + i for i in range(p.concurrent)], parallel=True)),
            (Step(f"{p.keepalive_requests} requests over {len(ka_conns)} keep-alive "
                  f"connections (Python)", "fast", len(ka_conns), p.keepalive_requests),
             lambda s: self._python(s, ka_conns, False)),
            (Step(f"1 MiB with {IMPAIR_TEXT} on both legs (curl)", "fast", 1, 1),
             lambda s: self._impaired(lambda: self._curl(s, [1 << 20]))),
            (Step(f"request in 2 segments with {IMPAIR_TEXT} on both legs (Python)",
                  "normal", 1, 1),
             lambda s: self._impaired(lambda: self._python(s, [[200_000]], True))),
        ]
        for i, (step, run) in enumerate(plan, 1):
            t0 = time.monotonic()
            run(step)
            step.seconds = time.monotonic() - t0
            self.steps.append(step)
            mark = "ok" if not step.failed else "FAILED"
            print(f"[{i}/{len(plan)}] {step.what}, {step.path} path: {step.ok}/{step.requests}"
                  f" ok, {step.failed} failed, {step.seconds:.2f} s  {mark}", file=sys.stderr,
                  flush=True)
            if step.failed and step.errors:
                self.say(f"  first error: {step.errors[0]}")

    def _impaired(self, run: Callable[[], None]) -> None:
        """Run a step with the seeded impairment nodes on both legs, then make them
        transparent again."""
        assert self.lab is not None
        for seed, leg in enumerate(("client", "server"), 7):
            self.lab.set_impairment(leg, seed=seed, **IMPAIRMENT)  # type: ignore[arg-type]
        try:
            run()
        finally:
            for leg in ("client", "server"):
                self.lab.set_impairment(leg)  # type: ignore[arg-type]

    def _ordinary_gets(self, step: Step) -> None:
        """One curl per GET, as ordinary clients do: each its own connection."""
        for _ in range(step.requests):
            self._curl(step, [1000])

    def _scratch(self) -> Path:
        self._runs += 1
        d = self.work / f"run{self._runs}"
        d.mkdir()
        return d

    def _curl(self, step: Step, sizes: Sequence[int], parallel: bool = False) -> None:
        """One curl for all ``sizes``, bodies to files; ``parallel``: all at once, each on a
        connection of its own (``Connection: close``)."""
        assert self.lab is not None
        d = self._scratch()
        argv = ["curl", "-sS", "--connect-timeout", "5", "--max-time", f"{REQUEST_TIMEOUT:g}",
                "-w", _CURL_FORMAT]
        if parallel:
            argv += ["--parallel", "--parallel-immediate", "--parallel-max", str(len(sizes)),
                     "-H", "Connection: close"]
        files = [d / f"{i}-{n}" for i, n in enumerate(sizes)]
        for f, n in zip(files, sizes, strict=True):
            argv += ["-o", str(f), f"{URL}/size/{n}"]
        res = self.lab.run("client", argv, capture_output=True, text=True,
                           timeout=REQUEST_TIMEOUT + 30)
        lines = {fields[0]: fields for line in res.stdout.splitlines()
                 if len(fields := line.split("|")) >= 4}
        for f, n in zip(files, sizes, strict=True):
            fields = lines.get(str(f))
            if fields is None:
                step.record(n, error=f"curl reported nothing (exit {res.returncode}: "
                                     f"{res.stderr.strip()[-200:]})")
                continue
            code, server, err = int(fields[1] or 0), fields[2] or None, "|".join(fields[3:])
            if err or not code:
                step.record(n, error=f"curl: {err or 'no response'}")
                continue
            data = f.read_bytes() if f.exists() else b""
            step.record(n, status=code, length=len(data),
                        digest=hashlib.sha256(data).hexdigest(), server=server)
            f.unlink(missing_ok=True)

    def _python(self, step: Step, conns: Sequence[Sequence[int]], split: bool) -> None:
        """The Python client: ``conns`` connections, each with its requests in order (the
        first one split in two writes if ``split``); it hashes the bodies itself."""
        assert self.lab is not None
        spec = {"vip": VIP, "port": VPORT, "pause": SPLIT_PAUSE, "timeout": REQUEST_TIMEOUT,
                "conns": [{"sizes": list(c), "split": split} for c in conns]}
        res = self.lab.run("client", [sys.executable, "-c", _CLIENT, json.dumps(spec)],
                           capture_output=True, text=True, timeout=REQUEST_TIMEOUT + 30)
        try:
            results = json.loads(res.stdout)
        except ValueError:
            why = f"Python client failed (exit {res.returncode}): {res.stderr.strip()[-200:]}"
            for c in conns:
                for n in c:
                    step.record(n, error=why)
            return
        for conn in results:
            for r in conn:
                step.record(r["size"], status=r.get("status"), length=r.get("length"),
                            digest=r.get("sha256"), server=r.get("server"), error=r.get("error"))

    # ---- teardown -------------------------------------------------------------------------
    def teardown(self) -> None:
        """Captures, gateway, lab, each whatever happened to the others; a second Ctrl-C or
        a SIGTERM waits until this is done, so nothing is left half-stopped."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for cap in self.captures:
                key = "client_leg" if cap.interface == "gc" else "server_leg"
                self.pcaps[key] = info = cap.stop()
                if not info["bytes"]:
                    self.problems.append(f"tcpdump on {cap.interface} wrote no pcap: "
                                         f"{_tail(cap.log)}")
            if self.gateway is not None:
                rc, self.stats = self.gateway.stop()
                if rc != 0:
                    self.problems.append(f"the gateway exited with status {rc}: "
                                         f"{_tail(self.gateway.log)}")
            if self.lab is not None and not self.keep:
                try:
                    self.lab.down()
                except LabError as exc:
                    self.problems.append(str(exc))
                self.say(f"lab {self.lab.name} removed")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _unique_name() -> str:
    """``fpd`` + 4 hex digits of the pid + 2 random ones, not the name of an existing lab."""
    for _ in range(20):
        name = f"fpd{os.getpid() & 0xFFFF:04x}{secrets.token_hex(1)}"
        if not Lab(name).existing_namespaces():
            return name
    raise CliError("no free lab name after 20 tries; remove old labs (`ip netns list`)")


def _preflight() -> None:
    """Everything that would make the demo fail for reasons of this machine, up front."""
    if sys.platform != "linux":
        raise CliError("the demo needs Linux (network namespaces, AF_PACKET)")
    if os.geteuid() != 0:
        raise CliError(f"run as root (uid {os.geteuid()}): the lab needs network namespaces "
                       f"and the gateway raw sockets, e.g. sudo .venv/bin/fastpath demo")
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items()
               if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None]
    if missing:
        raise CliError(f"missing {', '.join(missing)}; run `bash setup.sh` as root or "
                       f"apt-get install them")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so a killed demo still tears its lab down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_json(path: Path, summary: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write {path} ({exc.strerror or exc}); pass a writable "
                       f"--json FILE") from None


# --------------------------------------------------------------------------- the command


def add(sub: Any) -> None:
    p = sub.add_parser("demo", help="lab + gateway + traffic on both paths + pcaps, in one go "
                                    "(root)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--pcap-dir", type=Path, default=Path("demo-pcaps"), metavar="DIR",
                   help="where client-leg.pcap and server-leg.pcap go (default ./demo-pcaps)")
    p.add_argument("--keep", action="store_true",
                   help="leave the lab up afterwards (the gateway and captures still stop)")
    p.add_argument("--quick", action="store_true",
                   help="a small run (5 GETs, 2 split requests, 1 MiB, 20 concurrent) for tests")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Report CliError here: under ``python -m fastpath.cli`` the CliError that ``cli.main``
    catches is another class than the one imported here (see gateway_cmd)."""
    try:
        return _run(args)
    except CliError as exc:
        print(f"fastpath: error: {exc}", file=sys.stderr, flush=True)
        return 2


def _run(args: argparse.Namespace) -> int:
    _preflight()
    plan = QUICK if args.quick else FULL
    pcap_dir: Path = args.pcap_dir.resolve()
    try:
        pcap_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {pcap_dir} ({exc.strerror or exc}); pass a writable "
                       f"--pcap-dir") from None
    t0 = time.monotonic()
    with _sigterm_interrupts(), tempfile.TemporaryDirectory(prefix="fastpath-demo-") as tmp:
        demo = Demo(plan, pcap_dir, Path(tmp), args.keep)
        try:
            if demo.setup():
                demo.drive()
        finally:
            demo.teardown()
    assert demo.lab is not None
    summary = summarize(plan, demo.lab.name, args.keep, demo.steps, demo.stats, demo.pcaps,
                        demo.problems, time.monotonic() - t0)
    print(render(summary), flush=True)
    if args.json is not None:
        _write_json(args.json, summary)
    return 0 if summary["verdict"] == "pass" else 1

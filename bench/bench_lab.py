"""End-to-end benchmark in the netns lab: the reference gateway beside kernel DNAT and HAProxy.

One run measures, side by side, with ``wrk`` in the lab's client namespace against the VIP
``http://192.0.2.10/size/N`` (TEST-NET addresses only, every run bounded by ``-d``):

* workloads: ``1k-keepalive`` (1 KiB bodies, persistent connections), ``1k-close`` (1 KiB,
  ``Connection: close``: a new TCP connection per request) and ``1m-keepalive`` (1 MiB bodies,
  fewer connections);
* setups, each in a lab of its own (fresh namespaces, so no TIME_WAIT or conntrack state is
  carried from one setup to the next):

  - ``kernel-dnat``: routing-mode lab, one nftables rule in the gateway namespace DNATs the
    VIP to server s1 (the kernel forwards; there is no process to charge CPU to);
  - ``haproxy-tcp`` / ``haproxy-http``: routing-mode lab, HAProxy bound to the VIP on the
    gateway's ``lo`` (config generated here: one thread, round robin over the backends,
    http mode with keep-alive and ``http-reuse always``);
  - ``gw-fast``: out-mode lab, ``fastpath gateway`` with its default config (``/size/`` goes to
    pool static = s1, s2), whole requests, so every session is spliced;
  - ``gw-normal``: out-mode lab, the default config with ``rewrite = "x-forwarded-for"``, so
    every session is handed off (reason LENGTH_CHANGING_REWRITE); the gateway's stats must
    confirm it for each run, else the row is an error.

Before measuring, each setup must serve ``/size/1000`` byte-exact (``response_body(1000)``,
fetched with curl from the client namespace) and ``/size/1048576`` with the right SHA-256; a
setup that fails that (or fails to start) gets error rows instead of numbers. Per run: req/s,
MB/s (10^6 bytes/s read by wrk, headers included), mean and p99 latency, CPU% of the proxy
process (gateway or HAProxy; 100 = one core) and of the lab's servers, and how busy the whole
box was (100 = one core). TIME_WAIT is drained (bounded wait) before a close-mode run.

Targets from the issue: fast path / HAProxy http on 1 MiB >= 1.0x, fast path / kernel DNAT on
1 MiB >= 0.4x, fast path / normal path on bulk (1 MiB) >= 2x.

Needs root, iproute2, nftables, curl, wrk and haproxy (Debian packages ``wrk`` and
``haproxy``). Usage: ``sudo .venv/bin/python bench/bench_lab.py [--quick] [--json FILE]``
(``--dnat-backends N`` / ``--haproxy-backends 1|3`` change the backends, default 1 and 3;
``--only SETUP ...`` runs a subset).
Every lab is taken down and every process this script started is stopped, also on errors and
on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reference.gateway.config import DEFAULT_CONFIG_TOML  # noqa: E402
from reference.gateway.sim import response_body  # noqa: E402
from reference.lab import Lab  # noqa: E402
from reference.lab._system import alive  # noqa: E402
from reference.lab.topology import server_ip  # noqa: E402
from spec.topology import VIP  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
KIB, MIB = 1024, 1024 * 1024
CHECK_SMALL, CHECK_BIG = 1000, MIB
READY_TIMEOUT = 15.0
"""Seconds for HAProxy to listen or the gateway to print ``ready``."""
TW_LIMIT = 1000
"""Close-mode runs start only with fewer TIME_WAIT sockets than this in the lab ..."""
TW_MAX_WAIT = 65.0
"""... or after this many seconds of waiting (TIME_WAIT lasts 60 s on Linux)."""
WRK_TIMEOUT = "5s"
"""wrk's per-request timeout: a stalled request counts as a timeout, not a hang."""
GATEWAY_SAFETY = 900.0
"""``--duration`` of every gateway process: a net should this script lose track of it."""

RATIOS = (
    # (key, numerator setup, denominator setup, workload, target)
    ("fast/haproxy-http 1MiB", "gw-fast", "haproxy-http", "1m-keepalive", 1.0),
    ("fast/kernel-dnat 1MiB", "gw-fast", "kernel-dnat", "1m-keepalive", 0.4),
    ("fast/normal bulk 1MiB", "gw-fast", "gw-normal", "1m-keepalive", 2.0),
)



def log_tail(log: Path | None) -> str:
    """The last three lines of a process's log, for error messages."""
    with contextlib.suppress(OSError):
        if log is not None:
            return " | ".join(log.read_text(errors="replace").strip()
                              .splitlines()[-3:]) or "(no output)"
    return "(no output)"

class SetupError(RuntimeError):
    """A setup cannot be measured; the message goes into its error rows."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every cleanup runs."""


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    key: str
    size: int
    close: bool
    conns: int

    @property
    def path(self) -> str:
        return f"/size/{self.size}"


WORKLOAD_NAMES = ("1k-keepalive", "1k-close", "1m-keepalive")


def workloads(args: argparse.Namespace) -> list[Workload]:
    every = [Workload("1k-keepalive", KIB, False, args.conns_small),
             Workload("1k-close", KIB, True, args.conns_small),
             Workload("1m-keepalive", MIB, False, args.conns_big)]
    return [w for w in every if not args.workloads or w.key in args.workloads]


# --------------------------------------------------------------------------- CPU accounting


def proc_ticks(pid: int | None) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks; None if gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def box_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def background_busy(seconds: float) -> float:
    """How busy the box is (100 = one core) while this script does nothing: other users'
    load that every run below shares the CPUs with."""
    b0 = box_ticks()
    time.sleep(seconds)
    b1 = box_ticks()
    return 100.0 * NCPU * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])


# --------------------------------------------------------------------------- proxies


class Proxy:
    """What sits in the gateway namespace for one setup."""

    pid: int | None = None
    backends: list[str]

    def start(self, lab: Lab, work: Path) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Idempotent, never raises."""

    def alive(self) -> bool:
        return self.pid is None or alive(self.pid)

    def snapshot(self) -> dict[str, Any] | None:
        """Counters to diff around a run (the gateway's stats), None if it has none."""
        return None

    def judge(self, before: dict[str, Any] | None, after: dict[str, Any] | None,
              row: dict[str, Any]) -> None:
        """Check the counters of one run; may set row['error'] or add notes."""


class KernelDnat(Proxy):
    TABLE = "fastpath_bench"

    def __init__(self, backends: int) -> None:
        self.backends = [server_ip(k) for k in range(1, backends + 1)]
        self.lab: Lab | None = None

    def start(self, lab: Lab, work: Path) -> None:
        self.lab = lab
        if len(self.backends) == 1:
            target = self.backends[0]
        else:  # per connection (conntrack keeps the choice), round robin
            target = (f"numgen inc mod {len(self.backends)} map {{ "
                      + ", ".join(f"{i} : {a}" for i, a in enumerate(self.backends)) + " }")
        ruleset = (f"table ip {self.TABLE} {{\n"
                   f"  chain prerouting {{ type nat hook prerouting priority dstnat; "
                   f"policy accept;\n"
                   f"    ip daddr {VIP} tcp dport 80 counter dnat to {target}:80\n"
                   f"  }}\n}}\n")
        res = lab.run("gateway", ["nft", "-f", "-"], input=ruleset, text=True,
                      capture_output=True, timeout=20)
        if res.returncode != 0:
            raise SetupError(f"nft DNAT rule failed: {res.stderr.strip()}")

    def stop(self) -> None:
        if self.lab is not None:
            with contextlib.suppress(Exception):
                self.lab.run("gateway", ["nft", "delete", "table", "ip", self.TABLE],
                             capture_output=True, timeout=20)
            self.lab = None


class HAProxy(Proxy):
    def __init__(self, mode: str, backends: int) -> None:
        self.mode = mode
        self.backends = [server_ip(k) for k in range(1, backends + 1)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def config(self) -> str:
        servers = "\n".join(f"    server s{k} {addr}:80" for k, addr in
                            enumerate(self.backends, 1))
        http = ("    option http-keep-alive\n"
                "    http-reuse always\n"
                "    timeout http-keep-alive 10s\n"
                "    timeout http-request 10s\n") if self.mode == "http" else ""
        return (f"# generated by bench/bench_lab.py\n"
                f"global\n"
                f"    nbthread 1\n"
                f"    maxconn 4096\n"
                f"defaults\n"
                f"    mode {self.mode}\n"
                f"    timeout connect 5s\n"
                f"    timeout client 30s\n"
                f"    timeout server 30s\n"
                f"{http}"
                f"frontend vip\n"
                f"    bind {VIP}:80\n"
                f"    default_backend servers\n"
                f"backend servers\n"
                f"    balance roundrobin\n"
                f"{servers}\n")

    def start(self, lab: Lab, work: Path) -> None:
        haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
        if haproxy is None:
            raise SetupError("haproxy is not installed (apt-get install haproxy)")
        cfg = work / f"haproxy-{self.mode}.cfg"
        cfg.write_text(self.config())
        res = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], capture_output=True,
                             text=True, timeout=20)
        if res.returncode != 0:
            raise SetupError(f"haproxy -c rejected the config: {res.stderr.strip()}")
        self.log = work / f"haproxy-{self.mode}.log"
        with open(self.log, "wb") as log:
            # -db: foreground, no daemon; `ip netns exec` execs it, so the pid is HAProxy's.
            self.proc = lab.popen("gateway", [haproxy, "-db", "-f", str(cfg)],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.pid = self.proc.pid
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"haproxy exited with {self.proc.returncode}: {self._tail()}")
            res = lab.run("gateway", ["ss", "-Hltn", f"src {VIP}:80"], capture_output=True,
                          text=True, timeout=10)
            if res.stdout.strip():
                return
            time.sleep(0.05)
        raise SetupError(f"haproxy did not listen on {VIP}:80 within {READY_TIMEOUT:g} s: "
                         f"{self._tail()}")

    def _tail(self) -> str:
        return log_tail(self.log)

    def stop(self) -> None:
        stop_popen(self.proc)
        self.proc = None


class FastpathGateway(Proxy):
    """``fastpath gateway --netns NS`` with a config file or the embedded default."""

    def __init__(self, normal: bool, profile_dir: Path | None = None) -> None:
        self.normal = normal
        self.profile_dir = profile_dir
        self.backends = [server_ip(1), server_ip(2)]  # pool static of the default config
        self.proc: subprocess.Popen[bytes] | None = None
        self.stats_path: Path | None = None
        self.log: Path | None = None
        self.final: dict[str, Any] | None = None

    def start(self, lab: Lab, work: Path) -> None:
        name = "normal" if self.normal else "fast"
        self.stats_path = work / f"gw-{name}-stats.json"
        self.log = work / f"gw-{name}.log"
        argv = [sys.executable, "-m", "fastpath.cli", "gateway", "--netns", lab.gateway_ns,
                "--client-if", "gc", "--server-if", "gs", "--stats-json", str(self.stats_path),
                "--duration", f"{GATEWAY_SAFETY:g}"]
        if self.profile_dir is not None:
            argv += ["--profile", str(self.profile_dir / f"gw-{name}.pstats")]
        if self.normal:
            toml = DEFAULT_CONFIG_TOML.replace('rewrite = "none"', 'rewrite = "x-forwarded-for"')
            if toml == DEFAULT_CONFIG_TOML:
                raise SetupError('the default config has no `rewrite = "none"` line to replace')
            cfg = work / "gw-normal.toml"
            cfg.write_text(toml)
            argv += ["--config", str(cfg)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=log)
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        if not line.startswith("ready "):
            raise SetupError(f"the gateway did not get ready within {READY_TIMEOUT:g} s "
                             f"(stdout {line.strip()!r}, exit {self.proc.poll()}): "
                             f"{self._tail()}")

    def _tail(self) -> str:
        return log_tail(self.log)

    def snapshot(self) -> dict[str, Any] | None:
        """SIGUSR1, then wait (bounded) for the stats file to be written anew."""
        if self.proc is None or self.proc.poll() is not None or self.stats_path is None:
            return None
        self.stats_path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                return json.loads(self.stats_path.read_text())
            time.sleep(0.02)
        return None

    def judge(self, before: dict[str, Any] | None, after: dict[str, Any] | None,
              row: dict[str, Any]) -> None:
        if before is None or after is None:
            row["notes"].append("no gateway stats")
            if self.normal and row["error"] is None:
                row["error"] = "cannot confirm the handoffs: no gateway stats"
            return
        b, a = before["gateway"], after["gateway"]
        spliced = a["sessions_spliced"] - b["sessions_spliced"]
        handed = a["sessions_handed_off"] - b["sessions_handed_off"]
        reasons = {k: v - b["handoffs"].get(k, 0) for k, v in a["handoffs"].items()
                   if v - b["handoffs"].get(k, 0)}
        drops = {k: v - b["drops"].get(k, 0) for k, v in a["drops"].items()
                 if v - b["drops"].get(k, 0)}
        kdrops = {leg: v - before["driver"]["kernel_drops"].get(leg, 0)
                  for leg, v in after["driver"]["kernel_drops"].items()
                  if v - before["driver"]["kernel_drops"].get(leg, 0)}
        row["gateway_stats"] = {"sessions_spliced": spliced, "sessions_handed_off": handed,
                                "handoffs": reasons, "drops": drops,
                                "socket_kernel_drops": kdrops,
                                "resets_sent": a["resets_sent"] - b["resets_sent"],
                                "sessions_reopened": a.get("sessions_reopened", 0)
                                - b.get("sessions_reopened", 0)}
        # EARLY_FIN (FIN before any request) comes from connections that carry no request:
        # wrk.resolve() connects once and closes (its address probe), and at the deadline
        # wrk closes connections whose request it has not sent yet (up to one per
        # connection). Those are not measured requests, so up to conns + 1 are expected.
        idle = min(reasons.get("EARLY_FIN", 0), row["conns"] + 1)
        other = {k: v - (idle if k == "EARLY_FIN" else 0) for k, v in reasons.items()
                 if k != "LENGTH_CHANGING_REWRITE"}
        other = {k: v for k, v in other.items() if v}
        rewrite = reasons.get("LENGTH_CHANGING_REWRITE", 0)
        requests = (row.get("wrk") or {}).get("requests") or 0
        sessions = requests if row["connection_close"] else row["conns"]
        row["notes"].append(f"spliced +{spliced}, handed off +{handed}"
                            + (f" {reasons}" if reasons else "")
                            + (f" ({idle} EARLY_FIN: connections closed before a request)"
                               if idle else ""))
        if drops:
            row["notes"].append(f"core drops {drops}")
        if kdrops:
            row["notes"].append(f"socket drops {kdrops}")
        if self.normal:
            if row["error"] is None and (rewrite < sessions or spliced > 0 or other):
                row["error"] = (f"normal path not confirmed: {rewrite} LENGTH_CHANGING_REWRITE "
                                f"handoffs for {sessions} sessions, spliced +{spliced}, "
                                f"other handoffs {other}")
        elif other or rewrite or spliced < sessions:
            row["notes"].append(f"WARNING: not all on the fast path: spliced +{spliced} for "
                                f"{sessions} sessions, handoffs {reasons}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        stop_popen(self.proc)
        if self.proc is not None and self.stats_path is not None:
            with contextlib.suppress(OSError, ValueError):
                self.final = json.loads(self.stats_path.read_text())
        self.proc = None


def stop_popen(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, 5 s, SIGKILL; closes its pipes. Only ever the process we started."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()


# --------------------------------------------------------------------------- setups


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    kernel: str
    make: Callable[[argparse.Namespace], Proxy]


SETUPS = (
    Setup("kernel-dnat", "kernel forwarding + nft DNAT", "routing",
          lambda a: KernelDnat(a.dnat_backends)),
    Setup("haproxy-tcp", "HAProxy tcp mode", "routing",
          lambda a: HAProxy("tcp", a.haproxy_backends)),
    Setup("haproxy-http", "HAProxy http mode", "routing",
          lambda a: HAProxy("http", a.haproxy_backends)),
    Setup("gw-fast", "gateway fast path", "out",
          lambda a: FastpathGateway(normal=False, profile_dir=a.profile_gateway)),
    Setup("gw-normal", "gateway normal path (x-forwarded-for)", "out",
          lambda a: FastpathGateway(normal=True, profile_dir=a.profile_gateway)),
)


def check_responses(lab: Lab, work: Path) -> None:
    """/size/1000 byte-exact and /size/1048576 by SHA-256, via curl in the client namespace."""
    for size in (CHECK_SMALL, CHECK_BIG):
        out = work / f"body-{size}"
        out.unlink(missing_ok=True)
        res = lab.run("client", ["curl", "-sS", "--max-time", "20", "-o", str(out), "-w",
                                 "%{http_code}", f"http://{VIP}/size/{size}"],
                      capture_output=True, text=True, timeout=30)
        if res.returncode != 0 or res.stdout != "200":
            raise SetupError(f"curl /size/{size}: exit {res.returncode}, status "
                             f"{res.stdout or '-'} {res.stderr.strip()}")
        body = out.read_bytes() if out.exists() else b""
        want = response_body(size)
        if size == CHECK_SMALL and body != want:
            raise SetupError(f"/size/{size} body differs from response_body({size}) "
                             f"({len(body)} bytes received)")
        if hashlib.sha256(body).digest() != hashlib.sha256(want).digest():
            raise SetupError(f"/size/{size} body differs ({len(body)} bytes received)")
        out.unlink(missing_ok=True)


def time_wait(lab: Lab) -> int:
    total = 0
    for ns in lab.existing_namespaces():
        res = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htan", "state", "time-wait"],
                             capture_output=True, text=True, timeout=20)
        total += len(res.stdout.splitlines())
    return total


def drain_time_wait(lab: Lab) -> tuple[int, float]:
    """Wait (at most TW_MAX_WAIT s) for TIME_WAIT to fall below TW_LIMIT; (count, waited)."""
    t0 = time.monotonic()
    n = time_wait(lab)
    while n >= TW_LIMIT and time.monotonic() - t0 < TW_MAX_WAIT:
        time.sleep(1.0)
        n = time_wait(lab)
    return n, time.monotonic() - t0


# --------------------------------------------------------------------------- wrk

WRK_LUA = r"""
local function num(x)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return "null" end
  return string.format("%.0f", x)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write("BENCH_JSON {" ..
    '"requests": ' .. num(summary.requests) .. ', "bytes": ' .. num(summary.bytes) ..
    ', "duration_us": ' .. num(summary.duration) ..
    ', "connect_errors": ' .. num(e.connect) .. ', "read_errors": ' .. num(e.read) ..
    ', "write_errors": ' .. num(e.write) .. ', "status_errors": ' .. num(e.status) ..
    ', "timeouts": ' .. num(e.timeout) ..
    ', "latency_mean_us": ' .. num(latency.mean) ..
    ', "latency_p99_us": ' .. num(latency:percentile(99)) ..
    ', "latency_max_us": ' .. num(latency.max) .. "}\n")
end
"""


def run_wrk(lab: Lab, wl: Workload, duration: float, lua: Path) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{wl.conns}", f"-d{duration:g}s", "--timeout", WRK_TIMEOUT,
            "-s", str(lua)]
    if wl.close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{VIP}{wl.path}")
    try:
        res = lab.run("client", argv, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:  # subprocess.run has killed wrk already
        raise SetupError(f"wrk did not finish within {duration + 30:g} s") from None
    m = re.search(r"^BENCH_JSON (\{.*\})$", res.stdout, re.M)
    if res.returncode != 0 or m is None:
        raise SetupError(f"wrk exit {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}")
    out: dict[str, Any] = json.loads(m.group(1))
    out["argv"] = " ".join(argv)
    return out


def measure(lab: Lab, proxy: Proxy, setup: Setup, wl: Workload, args: argparse.Namespace,
            lua: Path, server_pids: list[int]) -> dict[str, Any]:
    row = new_row(setup, wl, proxy, args.duration)
    if wl.close:
        n, waited = drain_time_wait(lab)
        row["time_wait_before"] = n
        if waited >= 1.0:
            row["notes"].append(f"waited {waited:.1f} s for TIME_WAIT ({n} left)")
    if not proxy.alive():
        row["error"] = "proxy process is not running"
        return row
    stats0 = proxy.snapshot()
    p0, s0 = proc_ticks(proxy.pid), [proc_ticks(p) for p in server_pids]
    b0, t0 = box_ticks(), time.monotonic()
    try:
        w = run_wrk(lab, wl, args.duration, lua)
    except SetupError as exc:
        row["error"] = str(exc)
        return row
    b1, t1 = box_ticks(), time.monotonic()
    p1, s1 = proc_ticks(proxy.pid), [proc_ticks(p) for p in server_pids]
    elapsed = t1 - t0
    row["wrk"] = w
    secs = (w["duration_us"] or 0) / 1e6
    if secs > 0 and w["requests"]:
        row["req_per_s"] = w["requests"] / secs
        row["MB_per_s"] = w["bytes"] / secs / 1e6
    row["latency_mean_ms"] = None if w["latency_mean_us"] is None else w["latency_mean_us"] / 1e3
    row["latency_p99_ms"] = None if w["latency_p99_us"] is None else w["latency_p99_us"] / 1e3
    if p0 is not None and p1 is not None:
        row["proxy_cpu_pct"] = 100.0 * (p1 - p0) / HZ / elapsed
    if server_pids and all(v is not None for v in s0 + s1):
        ticks = sum(b - a for a, b in zip(s0, s1, strict=True))  # type: ignore[operator]
        row["servers_cpu_pct"] = 100.0 * ticks / HZ / elapsed
    busy, total = b1[0] - b0[0], b1[1] - b0[1]
    if total > 0:
        row["box_busy_pct"] = 100.0 * NCPU * busy / total
    errs = {k: w[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors",
                              "timeouts") if w.get(k)}
    if errs:
        row["notes"].append("wrk " + ", ".join(f"{k}={v}" for k, v in errs.items()))
    if not w["requests"]:
        row["error"] = "no request completed"
    elif w.get("status_errors"):
        row["error"] = f"{w['status_errors']} non-2xx/3xx responses of {w['requests']}"
    elif not proxy.alive():
        row["error"] = "proxy process died during the run"
    proxy.judge(stats0, proxy.snapshot(), row)
    return row


def new_row(setup: Setup, wl: Workload, proxy: Proxy | None, duration: float
            ) -> dict[str, Any]:
    return {"setup": setup.key, "label": setup.label, "lab_mode": setup.kernel,
            "workload": wl.key, "body_bytes": wl.size, "connection_close": wl.close,
            "conns": wl.conns, "duration_s": duration,
            "backends": list(proxy.backends) if proxy is not None else None,
            "req_per_s": None, "MB_per_s": None, "latency_mean_ms": None,
            "latency_p99_ms": None, "proxy_cpu_pct": None, "servers_cpu_pct": None,
            "box_busy_pct": None, "error": None, "notes": []}


def run_setup(setup: Setup, index: int, args: argparse.Namespace, work: Path,
              lua: Path) -> list[dict[str, Any]]:
    wls = workloads(args)
    t0 = time.monotonic()
    name = f"bl{os.getpid() & 0xFFFF:04x}{index}"
    lab = Lab(name, servers=3, gateway_kernel=setup.kernel)  # type: ignore[arg-type]
    proxy: Proxy | None = None
    rows: list[dict[str, Any]] = []
    cleanup_error = None
    idle_busy = background_busy(0.5)
    print(f"== {setup.key}: {setup.label} (lab {name}, {setup.kernel} mode; box busy "
          f"{idle_busy:.1f}% before)", file=sys.stderr, flush=True)
    try:
        try:
            lab.up()
            proxy = setup.make(args)
            proxy.start(lab, work)
            check_responses(lab, work)
        except (SetupError, OSError, subprocess.SubprocessError, RuntimeError) as exc:
            msg = f"setup failed: {exc}"
            print(f"   {msg}", file=sys.stderr, flush=True)
            rows = [dict(new_row(setup, wl, proxy, args.duration), error=msg) for wl in wls]
            return rows
        server_pids = [s["pid"] for s in lab.status()["servers"] if s["pid"]]
        for wl in wls:
            try:
                row = measure(lab, proxy, setup, wl, args, lua, server_pids)
            except Exception as exc:  # one broken run must not hide the others
                row = dict(new_row(setup, wl, proxy, args.duration),
                           error=f"{type(exc).__name__}: {exc}")
            print(f"   {wl.key:13s} {fmt(row['req_per_s'], 1):>10s} req/s "
                  f"{fmt(row['MB_per_s'], 2):>9s} MB/s  {row['error'] or ''}"
                  f"{'; '.join(row['notes'])}", file=sys.stderr, flush=True)
            rows.append(row)
        return rows
    finally:
        try:
            if proxy is not None:
                proxy.stop()
        finally:
            try:
                lab.down()
            except Exception as exc:  # reported, and the run goes on
                cleanup_error = f"lab {name} teardown: {exc}"
        left = lab.existing_namespaces()
        if left or cleanup_error:
            msg = cleanup_error or f"namespaces left behind: {left}"
            print(f"   ERROR {msg}", file=sys.stderr, flush=True)
            for row in rows:
                row["notes"].append(msg)
        for row in rows:
            row["setup_seconds"] = time.monotonic() - t0
            row["box_busy_before_setup_pct"] = idle_busy


# --------------------------------------------------------------------------- report


def fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def find(rows: list[dict[str, Any]], setup: str, workload: str, round_: int = 1
         ) -> dict[str, Any] | None:
    for r in rows:
        if r["setup"] == setup and r["workload"] == workload and r.get("round", 1) == round_:
            return r
    return None


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ratio per round (numerator and denominator from the same round, so slow drift of
    the box's load hits both), then the median over the rounds and their range."""
    rounds = sorted({r.get("round", 1) for r in rows}) or [1]
    out = []
    for key, num, den, wl, target in RATIOS:
        entry: dict[str, Any] = {"ratio": key, "numerator": f"{num} {wl}",
                                 "denominator": f"{den} {wl}", "metric": "MB_per_s",
                                 "target": target, "value": None, "meets_target": None,
                                 "per_round": [], "error": None}
        errors = []
        for rnd in rounds:
            a, b = find(rows, num, wl, rnd), find(rows, den, wl, rnd)
            bad = [r for r in (a, b) if r is None or r["error"] or not r["MB_per_s"]]
            if bad:
                errors += [f"{r['setup']}: {r['error'] or 'no number'}" if r else
                           "row missing" for r in bad]
            else:
                assert a is not None and b is not None
                entry["per_round"].append(a["MB_per_s"] / b["MB_per_s"])
        if errors:
            entry["error"] = "; ".join(dict.fromkeys(errors))
        if entry["per_round"] and not errors:
            entry["value"] = statistics.median(entry["per_round"])
            entry["meets_target"] = entry["value"] >= target
        out.append(entry)
    return out


def table(rows: list[dict[str, Any]], rat: list[dict[str, Any]]) -> str:
    head = ("setup", "workload", "conns", "req/s", "MB/s", "lat ms", "p99 ms", "proxy CPU%",
            "srv CPU%", "box busy%", "notes / error")
    lines = []
    multi = len({r.get("round", 1) for r in rows}) > 1
    for r in rows:
        label = f"{r['setup']} #{r.get('round', 1)}" if multi else r["setup"]
        if r["error"]:
            cells = (label, r["workload"], str(r["conns"]), "ERROR", "ERROR", "-", "-",
                     "-", "-", "-", f"ERROR: {r['error']}"
                     + (f" ({'; '.join(r['notes'])})" if r["notes"] else ""))
        else:
            cells = (label, r["workload"], str(r["conns"]), fmt(r["req_per_s"], 1),
                     fmt(r["MB_per_s"], 2), fmt(r["latency_mean_ms"], 2),
                     fmt(r["latency_p99_ms"], 2), fmt(r["proxy_cpu_pct"], 1),
                     fmt(r["servers_cpu_pct"], 1), fmt(r["box_busy_pct"], 1),
                     "; ".join(r["notes"]))
        lines.append(cells)
    widths = [max(len(head[i]), *(len(c[i]) for c in lines)) if i < 10 else 0
              for i in range(len(head))]
    right = {2, 3, 4, 5, 6, 7, 8, 9}

    def row_text(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                 for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    out = [row_text(head), row_text(tuple("-" * w if w else "-" * 13 for w in widths))]
    out += [row_text(c) for c in lines]
    out.append("")
    out.append("ratios (MB/s on the same workload):")
    for e in rat:
        if e["error"]:
            out.append(f"  {e['ratio']:24s} n/a  (target >= {e['target']:g}x)  ERROR: "
                       f"{e['error']}")
        else:
            verdict = "meets target" if e["meets_target"] else "BELOW target"
            spread = ""
            if len(e["per_round"]) > 1:
                spread = (f"  median of {len(e['per_round'])} rounds, range "
                          f"{min(e['per_round']):.3f}-{max(e['per_round']):.3f}")
            out.append(f"  {e['ratio']:24s} {e['value']:.3f}x  (target >= {e['target']:g}x)"
                       f"  {verdict}{spread}")
    return "\n".join(out)


def versions() -> dict[str, str]:
    found = {"kernel": platform.release(), "python": platform.python_version(),
             "cpus": str(NCPU)}
    for tool, argv in (("wrk", ["wrk", "-v"]), ("haproxy", ["haproxy", "-v"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (res.stdout + res.stderr).strip().splitlines()
            found[tool] = text[0] if text else "?"
    return found


# --------------------------------------------------------------------------- main


def preflight(args: argparse.Namespace) -> None:
    if sys.platform != "linux" or os.geteuid() != 0:
        raise SystemExit("bench_lab: needs Linux and root (network namespaces, raw sockets)")
    missing = [t for t in ("ip", "nft", "curl", "ss", "wrk")
               if shutil.which(t) is None and shutil.which(t, path="/usr/sbin:/sbin") is None]
    if any(s.startswith("haproxy") for s in args.only or [s.key for s in SETUPS]) \
            and shutil.which("haproxy") is None and \
            shutil.which("haproxy", path="/usr/sbin:/sbin") is None:
        missing.append("haproxy")
    if missing:
        debian = {"ss": "iproute2", "ip": "iproute2", "nft": "nftables"}
        packages = " ".join(sorted({debian.get(m, m) for m in missing}))
        raise SystemExit(f"bench_lab: missing {', '.join(missing)} (Debian: apt-get install "
                         f"{packages})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 s runs instead of 5 s")
    p.add_argument("--duration", type=float, help="seconds per wrk run (overrides --quick)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every number here")
    p.add_argument("--conns-small", type=int, default=16, help="connections, 1 KiB (16)")
    p.add_argument("--conns-big", type=int, default=4, help="connections, 1 MiB (4)")
    p.add_argument("--dnat-backends", type=int, choices=(1, 2, 3), default=1,
                   help="kernel DNAT targets: s1 only (the issue's setup) or s1..sN (1)")
    p.add_argument("--haproxy-backends", type=int, choices=(1, 3), default=3,
                   help="HAProxy backends: s1 only or s1-s3 round robin (3)")
    p.add_argument("--only", nargs="+", choices=[s.key for s in SETUPS],
                   help="run these setups only (ratios needing others show n/a)")
    p.add_argument("--workloads", nargs="+", choices=WORKLOAD_NAMES,
                   help="run these workloads only (default: all three)")
    p.add_argument("--rounds", type=int, default=1, metavar="N",
                   help="run every setup N times, interleaved (setup A, B, ..., A, B, ...); "
                        "ratios are per round, reported as the median and range (1)")
    p.add_argument("--profile-gateway", type=Path, metavar="DIR",
                   help="run the reference gateway under cProfile and write gw-fast.pstats / "
                        "gw-normal.pstats here (its numbers are then not comparable)")
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    if not 0 < args.duration <= 120:
        p.error("--duration must be in (0, 120] seconds")
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be in 1..20")
    preflight(args)

    def on_signal(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    started = time.time()
    t0 = time.monotonic()
    idle_start = background_busy(1.0)
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="bench_lab."))
    try:
        lua = work / "report.lua"
        lua.write_text(WRK_LUA)
        for rnd in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"== round {rnd} of {args.rounds}", file=sys.stderr, flush=True)
            for i, setup in enumerate(SETUPS):
                if args.only and setup.key not in args.only:
                    continue
                for row in run_setup(setup, i, args, work, lua):
                    row["round"] = rnd
                    rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runtime = time.monotonic() - t0
    rat = ratios(rows)
    print(table(rows, rat))
    print(f"\n{args.duration:g} s per run, wrk -t1, 1 KiB with {args.conns_small} connections, "
          f"1 MiB with {args.conns_big}; MB = 10^6 bytes read by wrk (headers included); "
          f"CPU% 100 = one core, box has {NCPU}; box busy before the first setup (other "
          f"load) {idle_start:.1f}%; total runtime {runtime:.1f} s")
    if args.json:
        doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "runtime_s": runtime, "duration_s": args.duration,
               "conns": {"1k": args.conns_small, "1m": args.conns_big},
               "haproxy_backends": args.haproxy_backends,
               "dnat_backends": args.dnat_backends, "versions": versions(),
               "box_busy_before_start_pct": idle_start, "rows": rows, "ratios": rat}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"bench_lab: interrupted ({type(exc).__name__} {exc}); labs torn down",
              file=sys.stderr)
        sys.exit(130)

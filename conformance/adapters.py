"""Gateways under test: how the conformance suite starts, probes and stops each one in a lab.

An :class:`Adapter` turns the suite's selection policy (a
:class:`reference.gateway.config.GatewayConfig`, the reference gateway's own TOML model) into
whatever the gateway reads, starts it in the lab's gateway namespace, and declares itself ready
only after a real HTTP request from the client namespace went through the VIP and came back:
a process that runs but does not forward is not ready. A failed start raises
:class:`AdapterError` with the gateway's log tail, and leaves nothing running.

Adapters (:data:`ADAPTERS`, :func:`make_adapter`):

* ``reference``: ``fastpath gateway --netns NS --config FILE`` ("out" lab: the kernel stays out
  of the gateway's traffic); stop returns its stats JSON.
* ``haproxy-http`` / ``haproxy-tcp``: HAProxy (Debian), config generated: http mode routes by
  the policy's Host/path rules, tcp mode sends to one backend with every server of the
  service. Stop returns ``show stat`` (sessions per server) from its stats socket.
* ``nginx-http`` / ``nginx-stream``: nginx (Debian ``nginx``, ``libnginx-mod-stream``) with
  ``-g 'daemon off;'``, every path (pid, logs, temp files) inside the work directory. Stop
  returns the upstream of each logged request/session.
* ``netfilter``: the kernel itself: an nftables ``synproxy`` answers the client's handshake with
  its own SYN-ACK (a syncookie), then opens the server side and translates sequence numbers
  (conntrack seqadj); DNAT picks the server round robin (``numgen inc``). See
  :class:`NetfilterAdapter` for the rule set and its limits.
* ``command``: any program (:class:`CommandAdapter`), started in the gateway namespace with
  the lab's addresses and the policy in ``FASTPATH_*`` environment variables.

The kernel-stack adapters (everything but ``reference`` and usually ``command``) need a
``"routing"`` lab, whose gateway namespace has the VIP on ``lo``; :attr:`Adapter.gateway_kernel`
says which, so callers build ``Lab(gateway_kernel=adapter.gateway_kernel)``.

IPv6: when the lab runs IPv6 (``Lab(..., ipv6=True)``) and the policy serves no IPv6 address,
:meth:`Adapter.start` adds an IPv6 twin of each service on :data:`spec.topology.VIP` (same
rules, pools of the servers' IPv6 twins; :func:`dual_stack`). The policy actually served is
:attr:`Adapter.policy` (also written to ``policy.toml`` in the work directory): judge traces
against that one.

Readiness probes go through the gateway like any client (``GET /`` per service), so they take
round-robin turns: a case must not assume which server its first connection gets.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from reference.gateway.config import GatewayConfig, Pool, Server, VirtualService
from reference.lab.topology import GW_CLIENT_IF, GW_SERVER_IF, SERVER_IF, Lab, server_ip
from spec.topology import VIP

try:  # the IPv6 lab constants (spec/topology.py); absent in an IPv4-only tree
    from spec.topology import GW_SERVER_IP6, SERVER_IPS6, VIP6
except ImportError:  # pragma: no cover - depends on the tree
    GW_SERVER_IP6, SERVER_IPS6, VIP6 = None, (), None

from conformance.properties import Capabilities

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 20.0
"""Seconds from launch until a request through every VIP must have been answered."""
PROBE_TIMEOUT = 3.0
"""Seconds one readiness probe (curl) may take."""
STOP_TIMEOUT = 10.0
"""Seconds a gateway gets to exit after its stop signal before it is killed."""
LIFETIME = 3600.0
"""The reference gateway's ``--duration``: a safety net should the suite lose track of it."""
TAIL_LINES = 15
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
PR_SET_PDEATHSIG = 1
_SAFE_QUOTED = re.compile(r"[^'\\\s\x00-\x1f\x7f]+")
"""What we put inside single quotes (HAProxy) or double quotes (nginx) without escaping."""


class AdapterError(RuntimeError):
    """The gateway under test could not be configured, started, probed or stopped; the
    message says which gateway, what happened and (for a process) the tail of its log."""


# --------------------------------------------------------------------------- policy helpers


def _is_v6(address: str) -> bool:
    return ":" in address


def policy_toml(config: GatewayConfig) -> str:
    """``config`` as the reference gateway's TOML (``reference.gateway.config.loads`` reads it
    back to an equal config): what the reference and command adapters hand their gateway."""
    q = json.dumps  # TOML basic strings accept JSON's escapes
    out = ["# written by conformance/adapters.py from the suite's policy", "[gateway]"]
    if config.client_address is not None:
        out.append(f"client_address = {q(config.client_address)}")
    out.append(f"server_address = {q(config.server_address)}")
    if config.server_address6 is not None:
        out.append(f"server_address6 = {q(config.server_address6)}")
    out += [f"mss = {config.mss}", f"window_scale = {config.window_scale}"]
    if config.isn_secret is not None:
        out.append(f"isn_secret = {q(config.isn_secret)}")
    out += [f"idle_timeout = {float(config.idle_timeout)!r}",
            f"open_timeout = {float(config.open_timeout)!r}",
            f"buffer_bytes = {config.buffer_bytes}"]
    for svc in config.services:
        out += ["", "[[service]]", f"name = {q(svc.name)}", f"vip = {q(svc.vip)}",
                f"port = {svc.port}", f"default_pool = {q(svc.default_pool)}",
                f"rewrite = {q(svc.rewrite)}"]
        for rule in svc.rules:
            out += ["", "  [[service.rule]]"]
            if rule.host is not None:
                out.append(f"  host = {q(rule.host)}")
            if rule.path_prefix is not None:
                out.append(f"  path_prefix = {q(rule.path_prefix)}")
            out.append(f"  pool = {q(rule.pool)}")
    for name, pool in config.pools.items():
        servers = ", ".join(q(str(s)) for s in pool.servers)
        out += ["", f"[pool.{q(name)}]", f"servers = [{servers}]", f"method = {q(pool.method)}"]
    return "\n".join(out) + "\n"


def dual_stack(config: GatewayConfig, lab: Lab | None = None) -> GatewayConfig:
    """``config`` plus an IPv6 twin of each service on the IPv4 VIP (on VIP6, same port, same
    rules), whose pools hold the IPv6 twins of the servers (203.0.113.1K -> 2001:db8:2::1K).

    Unchanged when the tree has no IPv6 constants, when ``config`` already serves an IPv6
    address, or when a server has no known twin (a server outside the lab).
    """
    if VIP6 is None or any(_is_v6(s.vip) for s in config.services):
        return config
    v4 = list(lab.server_addresses) if lab is not None else []
    v6 = list(getattr(lab, "server_addresses6", []) or []) if lab is not None else []
    twins = dict(zip(v4, v6, strict=False)) or dict(zip(_default_v4(), SERVER_IPS6,
                                                        strict=False))
    pools = dict(config.pools)
    renamed: dict[str, str] = {}
    services = list(config.services)
    for svc in config.services:
        if svc.vip != VIP:
            continue
        for name in svc.pool_names:
            if name in renamed:
                continue
            pool = config.pools[name]
            if any(s.address not in twins for s in pool.servers):
                return config
            new = f"{name}6"
            while new in pools:
                new += "6"
            renamed[name] = new
            pools[new] = Pool(new, tuple(Server(twins[s.address], s.port)
                                         for s in pool.servers), pool.method)
        rules = tuple(replace(r, pool=renamed[r.pool]) for r in svc.rules)
        services.append(VirtualService(name=f"{svc.name}6", vip=VIP6, port=svc.port,
                                       default_pool=renamed[svc.default_pool], rules=rules,
                                       rewrite=svc.rewrite))
    if not renamed:
        return config
    return replace(config, services=tuple(services), pools=pools,
                   server_address6=config.server_address6 or GW_SERVER_IP6)


def _default_v4() -> list[str]:
    return [server_ip(k) for k in range(1, len(SERVER_IPS6) + 1)]


def _service_servers(config: GatewayConfig, svc: VirtualService) -> list[Server]:
    """Every server of every pool the service can use, each once, in policy order."""
    seen: dict[Server, None] = {}
    for name in svc.pool_names:
        for s in config.pools[name].servers:
            seen.setdefault(s, None)
    return list(seen)


def _quote(text: str, what: str) -> str:
    if not _SAFE_QUOTED.fullmatch(text):
        raise AdapterError(f"{what} {text!r} has quotes, backslashes, spaces or control "
                           f"characters that the generated config cannot carry; use plain "
                           f"characters")
    return text


def _regex_escape(text: str) -> str:
    """``text`` as a literal in a PCRE pattern (HAProxy and nginx both use PCRE)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\/-])", r"\\\1", text)


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """preexec_fn: should the suite be SIGKILLed, its gateway still gets SIGTERM."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, pgrp, state) of ``pid``, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    return int(fields[1]), int(fields[2]), fields[0].decode()


def _running(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] not in ("Z", "X")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants, plus live members of its process group: what a
    gateway we started may have spawned (a program that daemonizes escapes both)."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdecimal() and (st := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = st
    found = {pid} if pid in table else set()
    for _ in range(64):  # bounded depth
        more = {p for p, (ppid, _, _) in table.items() if ppid in found} - found
        if not more:
            break
        found |= more
    found |= {p for p, (_, pgrp, _) in table.items() if pgrp == pid}
    return sorted(p for p in found if table[p][2] not in ("Z", "X"))


def netns_pids(ns: str) -> list[int]:
    """Live processes whose network namespace is ``ns`` (for checks that nothing is left)."""
    try:
        ino = os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return []
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdecimal():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino == ino and _running(int(entry.name)):
                out.append(int(entry.name))
    return out


def _terminate(proc: subprocess.Popen[bytes], sig: int) -> list[int]:
    """``sig`` to the process and everything it spawned, a bounded wait, SIGKILL for the
    rest; returns the pids still alive after that (normally none)."""
    tree = process_tree(proc.pid)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
    while time.monotonic() < deadline and any(_running(p) for p in tree):
        time.sleep(0.05)
    left = [p for p in tree if _running(p)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
    end = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < end and any(_running(p) for p in left):
        time.sleep(0.05)
    return [p for p in left if _running(p)]


def _tail(path: Path | None, lines: int = TAIL_LINES) -> str:
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _which(tool: str, package: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise AdapterError(f"{tool} is not installed; run `bash setup.sh` as root (or "
                           f"`apt-get install {package}`)")
    return path


# --------------------------------------------------------------------------- the base


class Adapter(ABC):
    """One gateway under test. Lifecycle: :meth:`start` once, then :meth:`stop` (idempotent)."""

    name: str = ""
    description: str = ""
    capabilities: Capabilities = Capabilities()
    gateway_kernel: str = "out"
    """``"out"`` for user-space raw-socket gateways, ``"routing"`` for kernel-stack ones."""

    def __init__(self) -> None:
        self.lab: Lab | None = None
        self.policy: GatewayConfig | None = None
        """The policy actually served (with IPv6 twins added, see :func:`dual_stack`)."""
        self.work_dir: Path | None = None
        self.policy_path: Path | None = None
        self.log_path: Path | None = None
        self.notes: list[str] = []
        """Where this gateway cannot follow the policy exactly (e.g. a hash pool)."""
        self._vips_added: list[str] = []
        self.ready_timeout = READY_TIMEOUT
        """Seconds from launch until every VIP must have answered a request."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} running={self.alive()}>"

    # ---- lifecycle --------------------------------------------------------------------

    def start(self, lab: Lab, policy: GatewayConfig, work_dir: str | os.PathLike[str]) -> None:
        """Configure and start the gateway in ``lab``'s gateway namespace; returns once a
        request through every VIP was answered. ``policy`` may also be a
        :class:`conformance.policy.Policy` (its ``config`` is used). On failure everything
        started is stopped and :class:`AdapterError` says why, with the gateway's log tail."""
        if self.lab is not None:
            raise AdapterError(f"gateway {self.name} is already started; stop() it first")
        if lab.gateway_kernel != self.gateway_kernel:
            raise AdapterError(
                f"gateway {self.name} needs a lab with gateway_kernel={self.gateway_kernel!r}, "
                f"but lab {lab.name} has {lab.gateway_kernel!r}; build it with "
                f"Lab(gateway_kernel=adapter.gateway_kernel)")
        self.lab = lab
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not isinstance(policy, GatewayConfig):  # a conformance.policy.Policy
            policy = getattr(policy, "config", policy)
        if not isinstance(policy, GatewayConfig):
            raise AdapterError(f"gateway {self.name}: the policy must be a GatewayConfig "
                               f"(reference.gateway.config), not {type(policy).__name__}")
        self.policy = dual_stack(policy, lab) if getattr(lab, "ipv6", False) else policy
        self.policy_path = self.work_dir / "policy.toml"
        self.policy_path.write_text(policy_toml(self.policy))
        try:
            self._launch()
            self._await_ready()
        except BaseException as exc:
            tail = self.log_tail()
            with contextlib.suppress(Exception):
                self.stop()
            if isinstance(exc, AdapterError | OSError | subprocess.SubprocessError):
                raise AdapterError(f"gateway {self.name} did not start: {exc}\n"
                                   f"log {self.log_path}:\n{tail}") from exc
            raise

    def stop(self) -> dict[str, Any] | None:
        """Stop the gateway and undo its setup; its stats (a dict) if it keeps any. Safe to
        call again, and after a failed start."""
        if self.lab is None:
            return None
        try:
            stats = self._halt()
        finally:
            self._remove_vips()
            self.lab = None
        return stats

    @abstractmethod
    def alive(self) -> bool:
        """Whether the gateway is (still) running."""

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the gateway's log (what to show when something failed)."""
        return _tail(self.log_path, lines)

    # ---- for subclasses ---------------------------------------------------------------

    @abstractmethod
    def _launch(self) -> None:
        """Write the config and start the gateway (self.lab/policy/work_dir are set)."""

    @abstractmethod
    def _halt(self) -> dict[str, Any] | None:
        """Stop what :meth:`_launch` started (also a partial start); the stats if any."""

    def _served(self) -> list[VirtualService]:
        """The policy's services this lab can reach (IPv6 ones only in an IPv6 lab)."""
        assert self.policy is not None and self.lab is not None
        v6 = bool(getattr(self.lab, "ipv6", False))
        return [s for s in self.policy.services if v6 or not _is_v6(s.vip)]

    def probe_urls(self) -> list[str]:
        """One URL per served (VIP, port): what readiness requests go to."""
        return [f"http://{'[' + s.vip + ']' if _is_v6(s.vip) else s.vip}:{s.port}/"
                for s in self._served()]

    def _await_ready(self) -> None:
        """Bounded loop: each URL must get an HTTP answer (any status) from the client
        namespace while the gateway stays alive."""
        assert self.lab is not None
        pending = self.probe_urls()
        deadline = time.monotonic() + self.ready_timeout
        last = ""
        for _ in range(10_000):
            if not self.alive():
                raise AdapterError("it exited during startup")
            if not pending:
                return
            if time.monotonic() > deadline:
                break
            url = pending[0]
            argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                    "--connect-timeout", "1", "-m", f"{PROBE_TIMEOUT:g}", url]
            try:
                res = self.lab.run("client", argv, capture_output=True, text=True,
                                   timeout=PROBE_TIMEOUT + 5)
                code = res.stdout.strip()
                last = f"{url}: {res.stderr.strip() or 'HTTP ' + code}"
            except subprocess.TimeoutExpired:
                code, last = "000", f"{url}: probe timed out"
            if code.isdecimal() and code != "000":
                pending.pop(0)
                continue
            time.sleep(0.1)
        raise AdapterError(f"no answer through the VIP within {self.ready_timeout:g} s "
                           f"(last probe: {last or 'none'})")

    def _spawn(self, argv: Sequence[str], *, in_netns: bool = True,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a gateway process (in the gateway namespace via ``ip netns exec`` unless it
        enters it itself), stdout and stderr to :attr:`log_path`, a session of its own."""
        assert self.lab is not None and self.log_path is not None
        ip = _which("ip", "iproute2")
        full = [ip, "netns", "exec", self.lab.gateway_ns, *argv] if in_netns else list(argv)
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    cwd=ROOT, env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent)

    def _ensure_vips(self) -> None:
        """Kernel-stack gateways bind the VIPs: put any the lab lacks on the gateway's lo."""
        assert self.lab is not None
        res = self.lab.run("gateway", ["ip", "-j", "addr", "show", "dev", "lo"],
                           capture_output=True, text=True, timeout=20)
        have = {a.get("local") for e in json.loads(res.stdout or "[]")
                for a in e.get("addr_info", [])}
        for svc in self._served():
            if svc.vip not in have and svc.vip not in self._vips_added:
                plen = 128 if _is_v6(svc.vip) else 32
                self.lab.run("gateway", ["ip", "addr", "add", f"{svc.vip}/{plen}", "dev", "lo",
                                         *(["nodad"] if _is_v6(svc.vip) else [])],
                             check=True, capture_output=True, timeout=20)
                self._vips_added.append(svc.vip)

    def _remove_vips(self) -> None:
        if self.lab is None:
            return
        for vip in self._vips_added:
            plen = 128 if _is_v6(vip) else 32
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.lab.run("gateway", ["ip", "addr", "del", f"{vip}/{plen}", "dev", "lo"],
                             capture_output=True, timeout=20)
        self._vips_added = []


class ProcessAdapter(Adapter):
    """A gateway that is one process (and whatever it spawns)."""

    stop_signal: int = signal.SIGTERM

    def __init__(self) -> None:
        super().__init__()
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _halt(self) -> dict[str, Any] | None:
        stats = self._final_stats()
        if self.proc is not None:
            left = _terminate(self.proc, self.stop_signal)
            self.exit_code = self.proc.returncode
            self.proc = None
            if left:
                raise AdapterError(f"gateway {self.name}: pid(s) {left} survived SIGKILL")
        return self._stats_after(stats)

    def _final_stats(self) -> dict[str, Any] | None:
        """Stats to read while the gateway still runs (e.g. from its control socket)."""
        return None

    def _stats_after(self, before: dict[str, Any] | None) -> dict[str, Any] | None:
        """Stats to read once it exited (e.g. a file it wrote on the way out)."""
        return before


# --------------------------------------------------------------------------- reference


class ReferenceAdapter(ProcessAdapter):
    """The project's own gateway, ``fastpath gateway``, on the lab's raw interfaces."""

    name = "reference"
    description = ("fastpath-tcp's reference gateway (fastpath gateway --netns): delayed "
                   "binding, splices whole requests, hands the rest to its normal path")
    capabilities = Capabilities(l7=True, splices=True, delayed_binding=True)
    gateway_kernel = "out"

    def __init__(self, lifetime: float = LIFETIME, extra_args: Sequence[str] = ()) -> None:
        super().__init__()
        self.lifetime = lifetime
        self.extra_args = list(extra_args)
        self.stats_path: Path | None = None

    def _launch(self) -> None:
        assert self.lab is not None and self.work_dir is not None
        self.log_path = self.work_dir / "reference.log"
        self.stats_path = self.work_dir / "reference-stats.json"
        self.stats_path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "fastpath.cli", "gateway", "--netns", self.lab.gateway_ns,
                "--config", str(self.policy_path), "--client-if", GW_CLIENT_IF,
                "--server-if", GW_SERVER_IF, "--stats-json", str(self.stats_path),
                "--duration", f"{self.lifetime:g}", *self.extra_args]
        self.proc = self._spawn(argv, in_netns=False)
        # Its `ready` line (sockets bound) comes before the first probe can succeed.
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline and self.alive():
            if re.search(r"^ready\b", _tail(self.log_path, 200), re.M):
                return
            time.sleep(0.05)

    def _stats_after(self, before: dict[str, Any] | None) -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError, TypeError):
            if self.stats_path is not None:
                return dict(json.loads(self.stats_path.read_text()))
        return None


# --------------------------------------------------------------------------- haproxy


class HAProxyAdapter(ProcessAdapter):
    """HAProxy from Debian, one thread, config generated from the policy."""

    gateway_kernel = "routing"

    def __init__(self, mode: str = "http") -> None:
        super().__init__()
        if mode not in ("http", "tcp"):
            raise AdapterError(f"HAProxy mode {mode!r} is unknown; use 'http' or 'tcp'")
        self.mode = mode
        self.name = f"haproxy-{mode}"
        if mode == "http":
            self.description = ("HAProxy in http mode: a full proxy that routes each "
                                "connection by its first request's Host and path")
            self.capabilities = Capabilities(l7=True, splices=False, delayed_binding=True)
        else:
            self.description = ("HAProxy in tcp mode: a full proxy that connects to a "
                                "server (round robin) as soon as the client connects")
            self.capabilities = Capabilities(l7=False, splices=False, delayed_binding=False)
        self.socket_path: Path | None = None

    def config(self) -> str:
        """The generated haproxy.cfg (needs :attr:`policy` and :attr:`work_dir`)."""
        assert self.policy is not None and self.work_dir is not None
        sock = self.work_dir / "haproxy.sock"
        # A unix socket path has at most 107 bytes; without one, stop() returns no stats.
        self.socket_path = sock if len(str(sock).encode()) < 100 else None
        out = [f"# generated by conformance/adapters.py ({self.name}) from {self.policy_path}",
               "global", "    nbthread 1", "    maxconn 4096"]
        if self.socket_path is not None:
            out.append(f"    stats socket {_quote(str(sock), 'work directory')} mode 600")
        out += ["defaults", f"    mode {self.mode}", "    timeout connect 5s",
               "    timeout client 60s", "    timeout server 60s"]
        if self.mode == "http":
            # http-reuse never: while a scripted server plays, the lab drops every frame to
            # the real servers, FINs of idle pooled connections included, so a reused
            # connection may be dead without HAProxy knowing (a lab artefact, not a bug).
            out += ["    timeout http-request 10s", "    timeout http-keep-alive 10s",
                    "    http-reuse never"]
        backends: dict[str, list[str]] = {}
        for i, svc in enumerate(self._served()):
            out += [f"frontend fp_svc{i}", f"    bind {_hap_addr(svc.vip, svc.port)}"]
            if self.mode == "tcp":
                name = f"fp_all{i}"
                backends[name] = self._backend(name, _service_servers(self.policy, svc),
                                               "round_robin")
                out.append(f"    default_backend {name}")
                continue
            pool_be = {p: f"fp_pool_{j}" for j, p in enumerate(self.policy.pools)}
            for k, rule in enumerate(svc.rules):
                conds = []
                if rule.host is not None:
                    host = _regex_escape(_quote(rule.host, "rule host"))
                    out.append(f"    acl fp_r{k}_host req.hdr(host) -m reg -i "
                               f"'^{host}\\.?(:[0-9]+)?$'")
                    conds.append(f"fp_r{k}_host")
                if rule.path_prefix is not None:
                    out.append(f"    acl fp_r{k}_path path_beg "
                               f"'{_quote(rule.path_prefix, 'rule path_prefix')}'")
                    conds.append(f"fp_r{k}_path")
                out.append(f"    use_backend {pool_be[rule.pool]} if {' '.join(conds)}")
            out.append(f"    default_backend {pool_be[svc.default_pool]}")
            for pname in svc.pool_names:
                pool = self.policy.pools[pname]
                backends.setdefault(pool_be[pname], self._backend(
                    pool_be[pname], pool.servers, pool.method, pname))
        for lines in backends.values():
            out += lines
        return "\n".join(out) + "\n"

    def _backend(self, name: str, servers: Iterable[Server], method: str,
                 pool: str = "") -> list[str]:
        if method == "hash":
            self.notes.append(f"pool {pool}: HAProxy's `balance source` hashes the client "
                              f"address, not the reference's crc32 of address:port, so the "
                              f"server within the pool may differ from the policy's")
        lines = [f"backend {name}" + (f"  # pool {pool}" if pool else ""),
                 f"    balance {'source' if method == 'hash' else 'roundrobin'}"]
        lines += [f"    server s{j} {_hap_addr(s.address, s.port)}"
                  for j, s in enumerate(servers, 1)]
        return lines

    def _launch(self) -> None:
        assert self.work_dir is not None
        haproxy = _which("haproxy", "haproxy")
        self.log_path = self.work_dir / f"{self.name}.log"
        cfg = self.work_dir / f"{self.name}.cfg"
        cfg.write_text(self.config())
        self._ensure_vips()
        # -db: foreground; `ip netns exec` execs it, so the pid is HAProxy's own.
        self.proc = self._spawn([haproxy, "-db", "-f", str(cfg)])

    def _final_stats(self) -> dict[str, Any] | None:
        """``show stat`` over the stats socket: sessions per server and frontend."""
        if self.socket_path is None or not self.alive():
            return None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(self.socket_path))
                s.sendall(b"show stat\n")
                data = b""
                for _ in range(10_000):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        lines = data.decode(errors="replace").splitlines()
        if not lines or not lines[0].startswith("# "):
            return None
        head = lines[0][2:].split(",")
        rows = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:] if line]
        servers = {f"{r['pxname']}/{r['svname']}": int(r.get("stot") or 0) for r in rows
                   if r.get("svname") not in ("FRONTEND", "BACKEND")}
        frontends = {r["pxname"]: int(r.get("stot") or 0) for r in rows
                     if r.get("svname") == "FRONTEND"}
        return {"gateway": self.name, "sessions_per_server": servers,
                "sessions_per_frontend": frontends}


def _hap_addr(address: str, port: int) -> str:
    return f"ipv6@{address}:{port}" if _is_v6(address) else f"{address}:{port}"


# --------------------------------------------------------------------------- nginx


class NginxAdapter(ProcessAdapter):
    """nginx from Debian (one worker), http or stream, config generated from the policy."""

    gateway_kernel = "routing"
    stop_signal = signal.SIGTERM

    def __init__(self, mode: str = "http") -> None:
        super().__init__()
        if mode not in ("http", "stream"):
            raise AdapterError(f"nginx mode {mode!r} is unknown; use 'http' or 'stream'")
        self.mode = mode
        self.name = f"nginx-{mode}"
        if mode == "http":
            self.description = ("nginx http proxy: routes each request by Host and path "
                                "(a map over $host|$request_uri, first rule wins)")
            self.capabilities = Capabilities(l7=True, splices=False, delayed_binding=True)
        else:
            self.description = ("nginx stream proxy: connects to a server (round robin) as "
                                "soon as the client connects")
            self.capabilities = Capabilities(l7=False, splices=False, delayed_binding=False)
        self.access_log: Path | None = None

    def config(self) -> str:
        """The generated nginx.conf (needs :attr:`policy` and :attr:`work_dir`)."""
        assert self.policy is not None and self.work_dir is not None
        w = self.work_dir
        self.access_log = w / f"{self.name}-access.log"
        path = lambda p: _quote(str(p), "work directory")  # noqa: E731
        out = [f"# generated by conformance/adapters.py ({self.name}) from {self.policy_path}"]
        if self.mode == "stream":
            if not NGINX_STREAM_MODULE.exists():
                raise AdapterError(f"{NGINX_STREAM_MODULE} is missing; run `bash setup.sh` as "
                                   f"root (or `apt-get install libnginx-mod-stream`)")
            out.append(f"load_module {NGINX_STREAM_MODULE};")
        # user root: the worker must reach the work directory, which may be private.
        out += ["user root;", "worker_processes 1;", f"pid {path(w / 'nginx.pid')};",
                f"error_log {path(w / f'{self.name}-error.log')} warn;",
                "events { worker_connections 1024; }"]
        body: list[str] = []
        upstreams: dict[str, list[str]] = {}
        if self.mode == "http":
            (w / "nginx-temp").mkdir(parents=True, exist_ok=True)
            for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                body.append(f"{sub}_temp_path {path(w / 'nginx-temp' / sub)};")
            body += ["log_format fp '$remote_addr $remote_port $upstream_addr $status "
                     "$request_length $bytes_sent \"$request\"';",
                     f"access_log {path(self.access_log)} fp;",
                     "proxy_http_version 1.1;", "proxy_set_header Host $http_host;",
                     "proxy_set_header Connection $http_connection;",
                     "proxy_buffering off;", "proxy_request_buffering off;",
                     # A client that half-closes after its request still wants the
                     # response (RFC 9293 §3.6); by default nginx takes the FIN for an
                     # abort and drops the request (cases TC18, TC39 fail that way).
                     "proxy_ignore_client_abort on;",
                     # No retry on the next upstream: while a scripted server plays, the lab
                     # hides the real servers, so a retry (which RFC 9110 §9.2.2 allows for
                     # a GET) would hang instead of showing the reset the case is about.
                     "proxy_next_upstream off;",
                     "proxy_connect_timeout 5s;"]
            names = {p: f"fp_pool_{j}" for j, p in enumerate(self.policy.pools)}
            for i, svc in enumerate(self._served()):
                for pname in svc.pool_names:
                    pool = self.policy.pools[pname]
                    upstreams.setdefault(names[pname], self._upstream(
                        names[pname], pool.servers, pool.method, pname))
                if svc.rules:
                    body.append(f'map "$host|$request_uri" $fp_svc{i} {{')
                    for rule in svc.rules:
                        host = (_regex_escape(_quote(rule.host, "rule host"))
                                if rule.host is not None else "[^|]*")
                        prefix = (_regex_escape(_quote(rule.path_prefix, "rule path_prefix"))
                                  if rule.path_prefix is not None else "")
                        body.append(f'    "~^{host}\\|{prefix}" {names[rule.pool]};')
                    body += [f"    default {names[svc.default_pool]};", "}"]
                    target = f"$fp_svc{i}"
                else:
                    target = names[svc.default_pool]
                body += ["server {", f"    listen {_ngx_addr(svc.vip, svc.port)};",
                         f"    location / {{ proxy_pass http://{target}; }}", "}"]
        else:
            body += ["log_format fp '$remote_addr $remote_port $upstream_addr $status "
                     "$bytes_received $bytes_sent';",
                     f"access_log {path(self.access_log)} fp;", "proxy_connect_timeout 5s;",
                     # Relay a FIN one way and keep the other direction open (RFC 9293
                     # §3.6 half-close); by default nginx closes both on the first FIN.
                     "proxy_timeout 60s;", "proxy_half_close on;"]
            for i, svc in enumerate(self._served()):
                name = f"fp_all{i}"
                upstreams[name] = self._upstream(name, _service_servers(self.policy, svc),
                                                 "round_robin")
                body += ["server {", f"    listen {_ngx_addr(svc.vip, svc.port)};",
                         f"    proxy_pass {name};", "}"]
        block = [line for lines in upstreams.values() for line in lines] + body
        out += [f"{self.mode} {{", *(f"    {line}" for line in block), "}"]
        return "\n".join(out) + "\n"

    def _upstream(self, name: str, servers: Iterable[Server], method: str,
                  pool: str = "") -> list[str]:
        lines = [f"upstream {name} {{" + (f"  # pool {pool}" if pool else "")]
        if method == "hash":
            self.notes.append(f"pool {pool}: nginx's `hash` folds crc32 to 15 bits, unlike "
                              f"the reference's crc32 of address:port, so the server within "
                              f"the pool may differ from the policy's")
            lines.append("    hash $remote_addr:$remote_port;")
        lines += [f"    server {_ngx_addr(s.address, s.port)};" for s in servers]
        return [*lines, "}"]

    def _launch(self) -> None:
        assert self.work_dir is not None
        nginx = _which("nginx", "nginx")
        self.log_path = self.work_dir / f"{self.name}-error.log"
        cfg = self.work_dir / f"{self.name}.conf"
        cfg.write_text(self.config())
        self._ensure_vips()
        # -e: the error log before the config is read (else /var/log/nginx/error.log);
        # -p: prefix for relative paths. `ip netns exec` execs nginx: the pid is the master.
        self.proc = self._spawn([nginx, "-p", str(self.work_dir), "-e", str(self.log_path),
                                 "-c", str(cfg), "-g", "daemon off;"])

    def _stats_after(self, before: dict[str, Any] | None) -> dict[str, Any] | None:
        """Requests (http) or sessions (stream) per upstream address, from the access log."""
        if self.access_log is None:
            return None
        try:
            lines = self.access_log.read_text(errors="replace").splitlines()
        except OSError:
            return None
        per: dict[str, int] = {}
        for line in lines:
            parts = line.split()
            if len(parts) >= 3:
                per[parts[2]] = per.get(parts[2], 0) + 1
        unit = "requests" if self.mode == "http" else "sessions"
        return {"gateway": self.name, unit: len(lines), f"{unit}_per_upstream": per}


def _ngx_addr(address: str, port: int) -> str:
    return f"[{address}]:{port}" if _is_v6(address) else f"{address}:{port}"


# --------------------------------------------------------------------------- netfilter


class NetfilterAdapter(Adapter):
    """The kernel's SYNPROXY + DNAT: a seq-translating splice with no process at all.

    Rule set (one ``inet`` table, per served VIP and port; family ``ip`` or ``ip6``)::

        chain raw_pre   { type filter hook prerouting priority raw;
                          ip daddr VIP tcp dport PORT tcp flags syn notrack }
        chain input     { type filter hook input priority filter;
                          ip daddr VIP tcp dport PORT ct state invalid,untracked
                              synproxy mss M wscale W timestamp sack-perm
                          ip daddr VIP tcp dport PORT ct state invalid drop }
        chain nat_out   { type nat hook output priority -100;
                          ip daddr VIP tcp dport PORT dnat ip to numgen inc mod N map {...} }

    and ``net.netfilter.nf_conntrack_tcp_loose = 0`` in the gateway namespace. How it runs:
    the client's SYN is untracked, so it reaches ``input`` (the VIP is local) where synproxy
    answers with its own SYN-ACK (a syncookie ISN, window 0). The client's ACK has no
    conntrack entry and, with loose pickup off, is INVALID: synproxy checks the cookie and
    sends its own SYN to the VIP with the client's address and ISN through ``ip_local_out``,
    where a fresh conntrack entry (carrying the seqadj and synproxy extensions) is DNATed by
    ``nat_out`` to a server. The server's SYN-ACK is caught by synproxy at POSTROUTING: it
    ACKs the server and sends the client a window update; from then on conntrack DNATs the
    client's segments and seqadj shifts sequence numbers by the ISN difference, both ways.

    Limits: the SYN-ACK's options come from the rule, not from the server, so ``mss``,
    ``wscale``, ``timestamp`` and ``sack-perm`` are read from the first lab server of each
    family at start (interface MTU, ``tcp_rmem``/``rmem_max``, ``tcp_timestamps``,
    ``tcp_sack``); a case that changes a server's sysctls after start makes them differ (the
    window is then scaled wrongly). No delayed binding, no L7: the server is chosen at the
    handshake. IPv4 VIPs need IPv4 servers and IPv6 VIPs IPv6 servers (NAT does not cross
    families).
    """

    name = "netfilter"
    description = ("the kernel's SYNPROXY + DNAT: its own SYN-ACK, then a server connection "
                   "with sequence numbers translated by conntrack (seqadj)")
    capabilities = Capabilities(l7=False, splices=True, delayed_binding=False,
                                opens_window=False)
    gateway_kernel = "routing"
    TABLE = "fastpath_conformance"
    SYSCTLS: ClassVar[dict[str, str]] = {"net.netfilter.nf_conntrack_tcp_loose": "0"}

    def __init__(self) -> None:
        super().__init__()
        self.ruleset = ""
        self._saved: dict[str, str] = {}
        self._loaded = False

    def _server_options(self, servers: Sequence[Server]) -> str:
        """``mss M wscale W [timestamp] [sack-perm]`` as the first lab server among
        ``servers`` would announce them (defaults for a server outside the lab)."""
        assert self.lab is not None
        lab_servers = list(self.lab.server_addresses)
        lab_servers6 = list(getattr(self.lab, "server_addresses6", []) or [])
        k = next((lst.index(s.address) + 1 for s in servers
                  for lst in (lab_servers, lab_servers6) if s.address in lst), None)
        mtu, rmem, ts, sack = 1500, 1 << 22, True, True
        if k is not None:
            res = self.lab.run(f"s{k}", ["sysctl", "-n", "net.ipv4.tcp_rmem",
                                         "net.core.rmem_max", "net.ipv4.tcp_timestamps",
                                         "net.ipv4.tcp_sack"],
                               capture_output=True, text=True, timeout=20)
            vals = res.stdout.split()
            if res.returncode == 0 and len(vals) == 6:
                rmem = max(int(vals[2]), int(vals[3]))
                ts, sack = vals[4] != "0", vals[5] != "0"
            link = self.lab.run(f"s{k}", ["ip", "-j", "link", "show", "dev", SERVER_IF],
                                capture_output=True, text=True, timeout=20)
            with contextlib.suppress(ValueError, IndexError, KeyError):
                mtu = int(json.loads(link.stdout)[0]["mtu"])
        mss = mtu - (60 if _is_v6(servers[0].address) else 40)
        # Linux's tcp_select_initial_window: the shift that covers the largest receive buffer.
        wscale = min(14, max(0, int(math.log2(rmem)) - 15))
        return (f"mss {mss} wscale {wscale}" + (" timestamp" if ts else "")
                + (" sack-perm" if sack else ""))

    def rules(self) -> str:
        """The nft script (replaces the table atomically)."""
        assert self.policy is not None
        raw, inp, nat = [], [], []
        for svc in self._served():
            fam = "ip6" if _is_v6(svc.vip) else "ip"
            servers = [s for s in _service_servers(self.policy, svc)
                       if _is_v6(s.address) == _is_v6(svc.vip)]
            if not servers:
                raise AdapterError(f"service {svc.name} ({svc.vip}) has no server of its own "
                                   f"address family; netfilter's NAT cannot translate between "
                                   f"IPv4 and IPv6")
            match = f"{fam} daddr {svc.vip} tcp dport {svc.port}"
            raw.append(f"{match} tcp flags syn notrack")
            inp.append(f"{match} ct state invalid,untracked counter synproxy "
                       f"{self._server_options(servers)} comment \"synproxy\"")
            inp.append(f"{match} ct state invalid counter drop comment \"invalid\"")
            if len(servers) == 1:
                target = _ngx_addr(servers[0].address, servers[0].port)
            else:  # per connection, round robin; conntrack keeps the choice
                pairs = ", ".join(f"{i} : {s.address} . {s.port}"
                                  for i, s in enumerate(servers))
                target = f"numgen inc mod {len(servers)} map {{ {pairs} }}"
            nat.append(f"{match} counter dnat {fam} to {target} comment \"dnat\"")
        t = self.TABLE

        def chain(name: str, hook: str, rules: list[str]) -> str:
            return (f"  chain {name} {{\n    type {hook}; policy accept;\n"
                    + "".join(f"    {r}\n" for r in rules) + "  }\n")

        return (f"table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n"
                + chain("raw_pre", "filter hook prerouting priority raw", raw)
                + chain("input", "filter hook input priority filter", inp)
                + chain("nat_out", "nat hook output priority -100", nat) + "}\n")

    def _launch(self) -> None:
        assert self.lab is not None and self.work_dir is not None
        _which("nft", "nftables")
        self.log_path = self.work_dir / "netfilter.log"
        self.ruleset = self.rules()
        (self.work_dir / "netfilter.nft").write_text(self.ruleset)
        self._ensure_vips()
        for key, value in self.SYSCTLS.items():
            res = self.lab.run("gateway", ["sysctl", "-n", key], capture_output=True,
                               text=True, timeout=20)
            if res.returncode != 0:
                raise AdapterError(f"sysctl {key} is unavailable in the gateway namespace: "
                                   f"{res.stderr.strip()}")
            self._saved[key] = res.stdout.strip()
            self.lab.run("gateway", ["sysctl", "-q", "-w", f"{key}={value}"], check=True,
                         capture_output=True, timeout=20)
        res = self.lab.run("gateway", ["nft", "-f", "-"], input=self.ruleset,
                           capture_output=True, text=True, timeout=20)
        with open(self.log_path, "a") as log:
            log.write(f"$ nft -f netfilter.nft (exit {res.returncode})\n{res.stderr}")
        if res.returncode != 0:
            raise AdapterError(f"nft rejected the rule set: {res.stderr.strip()}")
        self._loaded = True

    def alive(self) -> bool:
        if not self._loaded or self.lab is None:
            return False
        res = self.lab.run("gateway", ["nft", "list", "table", "inet", self.TABLE],
                           capture_output=True, text=True, timeout=20)
        return res.returncode == 0

    def counters(self) -> dict[str, dict[str, int]]:
        """Packets and bytes per rule comment (synproxy, invalid, dnat), summed over VIPs."""
        assert self.lab is not None
        res = self.lab.run("gateway", ["nft", "-j", "list", "table", "inet", self.TABLE],
                           capture_output=True, text=True, timeout=20)
        out: dict[str, dict[str, int]] = {}
        with contextlib.suppress(ValueError):
            for item in json.loads(res.stdout or "{}").get("nftables", []):
                rule = item.get("rule")
                if not rule or "comment" not in rule:
                    continue
                for expr in rule.get("expr", []):
                    if "counter" in expr:
                        c = out.setdefault(rule["comment"], {"packets": 0, "bytes": 0})
                        c["packets"] += expr["counter"]["packets"]
                        c["bytes"] += expr["counter"]["bytes"]
        return out

    def _halt(self) -> dict[str, Any] | None:
        assert self.lab is not None
        stats: dict[str, Any] | None = None
        if self._loaded:
            stats = {"gateway": self.name, "counters": self.counters()}
            self.lab.run("gateway", ["nft", "delete", "table", "inet", self.TABLE],
                         capture_output=True, timeout=20)
            self._loaded = False
        for key, value in self._saved.items():
            self.lab.run("gateway", ["sysctl", "-q", "-w", f"{key}={value}"],
                         capture_output=True, timeout=20)
        self._saved = {}
        return stats

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        text = _tail(self.log_path, lines)
        if self.ruleset:
            text += "\nrule set:\n" + self.ruleset
        return text


# --------------------------------------------------------------------------- command


class CommandAdapter(ProcessAdapter):
    """Any program, started in the gateway namespace; what it needs comes in the environment:

    ``FASTPATH_VIP``/``FASTPATH_VPORT`` (the first IPv4 service), ``FASTPATH_VIP6`` (the first
    IPv6 one, if any), ``FASTPATH_CLIENT_IF``/``FASTPATH_SERVER_IF`` (``gc``/``gs``),
    ``FASTPATH_SERVERS`` (every server, space separated ``ip:port``, IPv6 as ``[ip]:port``),
    ``FASTPATH_POLICY`` (the policy as the reference gateway's TOML), ``FASTPATH_GATEWAY_NS``
    and ``FASTPATH_WORK_DIR``. It must stay in the foreground (a program that daemonizes
    escapes the stop) and is ready once a request through the VIP is answered.
    """

    name = "command"

    def __init__(self, argv: Sequence[str] | str, gateway_kernel: str = "out",
                 capabilities: Capabilities | None = None, name: str = "command",
                 description: str = "") -> None:
        super().__init__()
        self.argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
        if not self.argv:
            raise AdapterError("the command adapter needs a program: argv=[program, args...]")
        if gateway_kernel not in ("out", "routing"):
            raise AdapterError(f"gateway_kernel {gateway_kernel!r} is unknown; use 'out' for "
                               f"a raw-socket gateway or 'routing' for a kernel-stack one")
        self.gateway_kernel = gateway_kernel
        self.capabilities = capabilities or Capabilities()
        self.name = name
        self.description = description or f"the program {shlex.join(self.argv)}"

    def environment(self) -> dict[str, str]:
        """The ``FASTPATH_*`` variables (plus the caller's environment)."""
        assert self.lab is not None and self.policy is not None
        served = self._served()
        v4 = [s for s in served if not _is_v6(s.vip)]
        v6 = [s for s in served if _is_v6(s.vip)]
        servers = dict.fromkeys(str(s) for svc in served
                                for s in _service_servers(self.policy, svc))
        env = dict(os.environ)
        env.update({"FASTPATH_VIP": v4[0].vip if v4 else "",
                    "FASTPATH_VPORT": str((v4 or v6)[0].port) if served else "",
                    "FASTPATH_CLIENT_IF": GW_CLIENT_IF, "FASTPATH_SERVER_IF": GW_SERVER_IF,
                    "FASTPATH_SERVERS": " ".join(servers),
                    "FASTPATH_POLICY": str(self.policy_path),
                    "FASTPATH_GATEWAY_NS": self.lab.gateway_ns,
                    "FASTPATH_WORK_DIR": str(self.work_dir)})
        if v6:
            env["FASTPATH_VIP6"] = v6[0].vip
        else:
            env.pop("FASTPATH_VIP6", None)
        return env

    def _launch(self) -> None:
        assert self.work_dir is not None
        self.log_path = self.work_dir / f"{self.name}.log"
        self.proc = self._spawn(self.argv, env=self.environment())


# --------------------------------------------------------------------------- registry


ADAPTERS: dict[str, Callable[..., Adapter]] = {
    "reference": ReferenceAdapter,
    "haproxy-http": lambda **kw: HAProxyAdapter("http", **kw),
    "haproxy-tcp": lambda **kw: HAProxyAdapter("tcp", **kw),
    "nginx-http": lambda **kw: NginxAdapter("http", **kw),
    "nginx-stream": lambda **kw: NginxAdapter("stream", **kw),
    "netfilter": NetfilterAdapter,
    "command": CommandAdapter,
}
"""Adapter name -> factory; ``command`` needs ``argv=`` (and usually ``gateway_kernel=``,
``capabilities=``)."""


def make_adapter(name: str, **opts: Any) -> Adapter:
    """A new adapter by name; an unknown name or bad options raise :class:`AdapterError`."""
    factory = ADAPTERS.get(name)
    if factory is None:
        raise AdapterError(f"unknown gateway {name!r}; known: {', '.join(ADAPTERS)}")
    try:
        return factory(**opts)
    except TypeError as exc:
        hint = " (the command adapter needs argv=[program, args...])" \
            if name == "command" else ""
        raise AdapterError(f"gateway {name}: bad options {sorted(opts)}: {exc}{hint}") from None

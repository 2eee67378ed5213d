"""Thin wrappers around ip(8), nft(8), sysctl(8), ethtool(8) and /proc, so that
:mod:`reference.lab.topology` reads as a list of steps and every failure becomes one
:class:`LabError` sentence that says what to do."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NETNS_DIR = Path("/run/netns")
"""Where ``ip netns`` mounts named namespaces (iproute2's NETNS_RUN_DIR)."""
CMD_TIMEOUT = 30.0
"""No single ip/nft/sysctl call may take longer; they normally take milliseconds."""
SERVER_MODULE = "reference.lab.httpserver"

_PACKAGES = {"ip": "iproute2", "nft": "nftables", "ethtool": "ethtool", "sysctl": "procps",
             "unshare": "util-linux", "curl": "curl"}


class LabError(RuntimeError):
    """The lab cannot be built, used or removed; the message says what to do."""


def need(tool: str) -> str:
    """The path of ``tool``, or a LabError naming the Debian package that provides it."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pkg = _PACKAGES.get(tool, tool)
        raise LabError(f"{tool} is not installed; run `bash setup.sh` as root "
                       f"(or `apt-get install {pkg}`)")
    return path


def run_cmd(argv: Sequence[str], *, check: bool = True, stdin: str | None = None,
            timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a short admin command, text in and out; a failure (if ``check``) is a LabError
    quoting the command and its stderr."""
    argv = [need(argv[0]), *argv[1:]]
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s; check "
                       f"the system with `ip netns list` and retry") from None
    if check and res.returncode != 0:
        why = (res.stderr or res.stdout).strip() or f"exit status {res.returncode}"
        raise LabError(f"`{shlex.join(argv)}` failed: {why}")
    return res


def ip(*args: str, ns: str | None = None, check: bool = True,
       stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``ip [-n ns] args...``."""
    return run_cmd(["ip", *(("-n", ns) if ns else ()), *args], check=check, stdin=stdin)


def ns_exec(ns: str, argv: Sequence[str], *, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A short command inside namespace ``ns``."""
    return run_cmd(["ip", "netns", "exec", ns, need(argv[0]), *argv[1:]], check=check,
                   stdin=stdin)


def is_missing(res: subprocess.CompletedProcess[str]) -> bool:
    """Whether a failed command failed only because what it acts on is already gone."""
    text = res.stderr.lower()
    return any(s in text for s in ("no such file", "cannot find device", "does not exist",
                                   "no such device", "cannot assign requested address",
                                   "no such process"))


# --------------------------------------------------------------------------- namespaces


def netns_names() -> list[str]:
    """Every named network namespace (``ip netns list``), without the ``(id: N)`` suffix."""
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_inode(ns: str) -> int | None:
    """The inode that identifies namespace ``ns`` (compare with ``/proc/PID/ns/net``)."""
    try:
        return (NETNS_DIR / ns).stat().st_ino
    except OSError:
        return None


def links(ns: str) -> dict[str, dict[str, Any]]:
    """``ip -j addr show`` of namespace ``ns``, by interface name ({} if ``ns`` is gone)."""
    res = ip("-j", "addr", "show", ns=ns, check=False)
    if res.returncode != 0:
        return {}
    return {entry["ifname"]: entry for entry in json.loads(res.stdout or "[]")}


def sysctl_get(ns: str, key: str) -> str | None:
    res = ns_exec(ns, ["sysctl", "-n", key], check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def userns_support() -> str:
    """What an unprivileged user could do here instead of root, as a phrase for errors.

    Named namespaces live under /run/netns, which only root (in the initial user namespace)
    can write, so ``ip netns add`` never works for a plain user. What does work, when the
    kernel allows unprivileged user namespaces, is a private root: inside
    ``unshare --user --map-root-user --mount --net`` with a tmpfs on /run, ``ip netns``,
    veth, bridges, nftables and sysctls all work, but the namespaces exist only for processes
    started inside that shell and vanish with it.
    """
    limit = Path("/proc/sys/user/max_user_namespaces")
    with contextlib.suppress(OSError):
        if limit.read_text().strip() == "0":
            return "disabled here (user.max_user_namespaces = 0)"
    try:
        res = run_cmd(["unshare", "--user", "--map-root-user", "--net", "true"], check=False,
                      timeout=5)
    except LabError as exc:
        return f"cannot be checked ({exc})"
    if res.returncode != 0:
        return f"not available ({res.stderr.strip() or 'unshare failed'})"
    return ("available, but named namespaces need the real root, so run everything in one "
            "private shell: `unshare --user --map-root-user --mount --net sh -c "
            "'mount -t tmpfs tmpfs /run && exec bash'` (the lab then exists only inside it)")


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class ServerProcess:
    """A running ``reference.lab.httpserver`` of some lab, found in /proc."""

    pid: int
    lab: str
    name: str
    netns_inode: int | None
    """Inode of its network namespace; compare with :func:`netns_inode`."""


def _argv(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def _opt(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X", b"")


def server_processes(lab: str) -> list[ServerProcess]:
    """Live httpserver processes whose command line says ``--lab <lab>``, in any namespace.

    The marker is what makes them ours: nothing else is ever signalled by the lab.
    """
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdecimal():
            continue
        pid = int(entry.name)
        try:
            argv = _argv(pid)
            ns_ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        if ("-m" not in argv[:-1] or argv[argv.index("-m") + 1] != SERVER_MODULE
                or _opt(argv, "--lab") != lab or not alive(pid)):
            continue
        found.append(ServerProcess(pid, lab, _opt(argv, "--name") or "?", ns_ino))
    return sorted(found, key=lambda p: p.pid)


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Servers this process started, so stopping them also reaps them (no zombies)."""
_CHILD_LAB: dict[int, str] = {}


def remember_child(lab: str, proc: subprocess.Popen[bytes]) -> None:
    _CHILDREN[proc.pid] = proc
    _CHILD_LAB[proc.pid] = lab


def own_children(lab: str) -> list[int]:
    """Servers of ``lab`` this process started and has not reaped. A child only just forked
    still shows its parent's command line, so :func:`server_processes` cannot see it yet."""
    return [pid for pid, owner in _CHILD_LAB.items()
            if owner == lab and _CHILDREN[pid].poll() is None]


def stop_processes(pids: Iterable[int], grace: float = 3.0) -> list[int]:
    """SIGTERM, wait up to ``grace`` s, then SIGKILL and wait 1 s; returns the survivors."""
    pending = [p for p in pids if alive(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        for pid in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            for pid in pending:
                child = _CHILDREN.get(pid)
                if child is not None and child.poll() is not None:
                    del _CHILDREN[pid], _CHILD_LAB[pid]
            pending = [p for p in pending if alive(p)]
            if pending:
                time.sleep(0.02)
        if not pending:
            break
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[pid], _CHILD_LAB[pid]
    return pending

"""The offline trace checker: two leg captures in, a verdict per connection and property out.

``check_pcaps`` rebuilds every connection of each leg (``conformance.flows``), judges each
with the registered per-leg properties (``conformance.leg_checks``), pairs client-leg and
server-leg connections and runs the registered cross-leg judges (``conformance.cross_checks``,
when that module is present), and optionally asks tshark for a second opinion. Judges are
looked up in ``conformance.properties.PROPERTIES`` so a property id means one thing everywhere.

Bad input never aborts a judgement that can still be made: a truncated capture is judged up
to the cut, a missing server leg leaves the per-leg judgements, and every such limit is a
note in the report.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import marshal
import mmap
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import leg_checks
from conformance.flows import Conn, Leg, fast_checksums, read_leg, status_buffer_size
from conformance.pcapio import open_capture
from conformance.properties import PROPERTIES, Capabilities, Context, Finding, by_scope

RANK = {"pass": 0, "n/a": 0, "unknown": 1, "fail": 2}


def _cross() -> Any:
    """The cross-leg module, or None while it does not exist (per-leg checking only)."""
    if importlib.util.find_spec("conformance.cross_checks") is None:
        return None
    return importlib.import_module("conformance.cross_checks")


@dataclass
class ConnResult:
    """Per-leg findings of one connection."""

    leg: str
    number: int
    name: str
    first_frame: int
    packets: int
    findings: list[Finding]
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"leg": self.leg, "number": self.number, "connection": self.name,
                "first_frame": self.first_frame, "packets": self.packets,
                "problems": self.problems, "findings": [f.as_json() for f in self.findings]}


@dataclass
class PairResult:
    """Cross-leg findings of one client-leg/server-leg pair (either side may be missing)."""

    name: str
    how: str
    client: int | None
    server: int | None
    path: str | None
    findings: list[Finding]

    def as_json(self) -> dict[str, Any]:
        return {"pair": self.name, "how": self.how, "client_conn": self.client,
                "server_conn": self.server, "path": self.path,
                "findings": [f.as_json() for f in self.findings]}


@dataclass
class CheckReport:
    """Everything the checker concluded; ``ok`` when nothing failed."""

    client_leg: str
    server_leg: str | None
    conns: list[ConnResult] = field(default_factory=list)
    pairs: list[PairResult] = field(default_factory=list)
    info: list[Finding] = field(default_factory=list)
    """Informational findings (tshark's second opinion); never fail a check."""
    notes: list[str] = field(default_factory=list)
    packets: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    legs: dict[str, Leg] = field(default_factory=dict, repr=False)

    def findings(self) -> Iterator[Finding]:
        """Every per-leg and cross-leg finding (not the informational ones)."""
        for c in self.conns:
            yield from c.findings
        for p in self.pairs:
            yield from p.findings

    def path_classes(self) -> list[str]:
        """The path class of every paired connection that relayed bytes."""
        return [p.path for p in self.pairs if p.path and p.path != "none"]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per property, how many connections got each verdict."""
        out: dict[str, dict[str, int]] = {}
        for f in self.findings():
            d = out.setdefault(f.property, {"pass": 0, "fail": 0, "n/a": 0, "unknown": 0})
            d[f.verdict] = d.get(f.verdict, 0) + 1
        return out

    def failures(self) -> list[tuple[str, Finding]]:
        """(connection or pair name, finding) of every fail."""
        out = [(f"{c.leg} #{c.number} {c.name}", f) for c in self.conns for f in c.findings
               if f.verdict == "fail"]
        out += [(p.name, f) for p in self.pairs for f in p.findings if f.verdict == "fail"]
        return out

    @property
    def ok(self) -> bool:
        return not any(f.verdict == "fail" for f in self.findings())

    def as_json(self) -> dict[str, Any]:
        return {"client_leg": self.client_leg, "server_leg": self.server_leg, "ok": self.ok,
                "packets": self.packets, "seconds": round(self.seconds, 3),
                "counts": self.counts(), "notes": self.notes,
                "connections": [c.as_json() for c in self.conns],
                "pairs": [p.as_json() for p in self.pairs],
                "info": [f.as_json() for f in self.info]}

    def render(self, *, max_failures: int = 30) -> str:
        """A text table: per property the verdict counts, then failures and notes."""
        legs = f"client leg {self.client_leg}" + (
            f", server leg {self.server_leg}" if self.server_leg else " (no server leg)")
        npk = ", ".join(f"{k} {v}" for k, v in self.packets.items())
        lines = [f"{legs}", f"packets: {npk}; connections: "
                 + ", ".join(f"{leg} {sum(1 for c in self.conns if c.leg == leg)}"
                             for leg in self.packets) + f"; pairs: {len(self.pairs)}"
                 + f"; {self.seconds:.2f} s", ""]
        counts = self.counts()
        width = max([len(k) for k in counts] + [8])
        lines.append(f"{'property':<{width}}  {'pass':>6} {'fail':>6} {'n/a':>6} "
                     f"{'unknown':>7}  verdict")
        for pid in sorted(counts, key=_order):
            d = counts[pid]
            worst = "FAIL" if d["fail"] else "unknown" if d["unknown"] and not d["pass"] \
                else "pass" if d["pass"] else "n/a"
            lines.append(f"{pid:<{width}}  {d['pass']:>6} {d['fail']:>6} {d['n/a']:>6} "
                         f"{d['unknown']:>7}  {worst}")
        paths = self.path_classes()
        if paths:
            summary = {p: paths.count(p) for p in sorted(set(paths))}
            lines += ["", "paths: " + ", ".join(f"{k} {v}" for k, v in summary.items())]
        fails = self.failures()
        if fails:
            lines += ["", f"failures ({len(fails)}):"]
            for name, f in fails[:max_failures]:
                lines.append(f"  {f.property} {name}: {f.detail}")
            if len(fails) > max_failures:
                lines.append(f"  ... {len(fails) - max_failures} more")
        for f in self.info:
            lines += ["", f"{f.property}: {f.verdict}: {f.detail}"]
        if self.notes:
            lines += ["", "notes:"] + [f"  {n}" for n in self.notes]
        lines += ["", "RESULT: " + ("pass" if self.ok else "FAIL")]
        return "\n".join(lines)


def _order(pid: str) -> tuple[int, int, str]:
    ids = list(PROPERTIES)
    return (0 if pid.startswith("leg.") else 1, ids.index(pid) if pid in ids else 999, pid)


def _context(policy: Any, capabilities: Capabilities | None, kind: str | None) -> Context:
    if isinstance(policy, str | Path):
        from conformance.policy import load_policy  # type: ignore[import-not-found]
        policy = load_policy(Path(policy), l7=capabilities.l7 if capabilities else True)
    if capabilities is None and kind is not None:
        from conformance.properties import KINDS
        capabilities = KINDS.get(kind)
    return Context(policy=policy, capabilities=capabilities or Capabilities(), kind=kind)


def judge_leg(leg: Leg, ctx: Context) -> list[ConnResult]:
    """Per-leg findings of every connection of ``leg`` (registered leg properties)."""
    props = by_scope("leg")
    # the registered leg_checks judges each pick one finding of ``leg_checks.analyse``:
    # ask it once per connection rather than through ten calls
    pids = [getattr(p.judge, "leg_pid", None) for p in props]
    analyse = leg_checks.analyse if all(pids) else None
    out = []
    for c in leg.conns:
        if analyse is not None:
            got = analyse(c)
            findings = [got[pid] for pid in pids]
        else:
            findings = [p.judge(c, ctx) for p in props]
        for f in findings:
            if f.packets:
                f.packets = tuple((leg.leg, i) for _, i in f.packets)
        out.append(ConnResult(leg.leg, c.number, c.name, c.first_frame(), len(c.segs),
                              findings, list(c.problems)))
    return out


def check_leg(path: str | Path, leg: str = "client", *, policy: Any = None,
              capabilities: Capabilities | None = None, kind: str | None = None) -> CheckReport:
    """Per-leg judgement of one capture."""
    t0 = time.perf_counter()
    ctx = _context(policy, capabilities, kind)
    lg = read_leg(path, leg)
    rep = CheckReport(str(path) if leg == "client" else "", None)
    if leg != "client":
        rep.client_leg, rep.server_leg = "", str(path)
    rep.legs[leg] = lg
    rep.packets[leg] = lg.packets
    rep.notes += lg.notes
    rep.conns = judge_leg(lg, ctx)
    rep.seconds = time.perf_counter() - t0
    return rep


def check_pcaps(client_leg: str | Path, server_leg: str | Path | None = None,
                policy: Any = None, capabilities: Capabilities | None = None, *,
                kind: str | None = None, tshark: bool = False,
                workers: int | None = None) -> CheckReport:
    """Judge a client-leg capture and (if given) the server-leg capture of the same run.

    ``policy`` is a ``conformance.policy`` object or a path to its TOML file; without a
    server leg only the per-leg properties are judged (noted in the report). ``tshark``
    adds tshark's TCP expert analysis as an informational second opinion.

    ``workers`` (default: 2 where ``fork`` exists and this process may run on two CPUs or
    more, else 1): with 2, a forked process verifies the TCP and IPv4 checksums of the
    frames on the decoder's fast path (``conformance.flows.fast_checksums``) while this one
    decodes without them, and each status is filled in from a shared buffer of one byte per
    frame once the leg is read: the same report. A worker that dies, or does not answer in
    time, leaves the sums to this process (and a note). 3 also runs each leg's per-leg
    judges in a forked process, which copy-on-write page faults and shipping the findings
    back make about even (see ``bench/bench_checker.py``). 1 (or no ``fork``) is one process.
    """
    was = gc.isenabled()
    gc.disable()  # millions of long-lived objects: cyclic GC would rescan them all, often
    try:
        return _check_pcaps(client_leg, server_leg, policy, capabilities, kind, tshark,
                            _workers(workers))
    finally:
        if was:
            gc.enable()


def _workers(workers: int | None) -> int:
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if workers is None:
        return default_workers()
    return 1 if workers < 2 else min(workers, 3)


def default_workers() -> int:
    """Processes ``check_pcaps`` uses unless told: 2 (checksums in a worker) where ``fork``
    exists and this process may run on two CPUs or more, else 1."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 1


def _check_pcaps(client_leg: str | Path, server_leg: str | Path | None, policy: Any,
                 capabilities: Capabilities | None, kind: str | None,
                 tshark: bool, workers: int = 1) -> CheckReport:
    t0 = time.perf_counter()
    ctx = _context(policy, capabilities, kind)
    rep = CheckReport(str(client_leg), str(server_leg) if server_leg is not None else None)
    children: list[_ChildJudge] = []
    paths = [client_leg] + ([server_leg] if server_leg is not None else [])
    sums = None
    if workers > 1:
        try:
            sums = _ChecksumWorker(paths)
        except OSError as e:  # no process to be had (fork failed): the sums stay here
            rep.notes.append(f"checksum worker not started ({e}); checksums computed in "
                             "this process")
    try:
        return _check_into(rep, ctx, client_leg, server_leg, tshark, workers, children, t0,
                           sums)
    finally:
        for ch in children:
            ch.close()
        if sums is not None:
            sums.close()


def _check_into(rep: CheckReport, ctx: Context, client_leg: str | Path,
                server_leg: str | Path | None, tshark: bool, workers: int,
                children: list[_ChildJudge], t0: float,
                sums: _ChecksumWorker | None = None) -> CheckReport:
    # with three workers each leg's per-leg judges run in a child while this process reads
    # the next leg, then pairs and judges across legs
    legs = {"client": read_leg(client_leg, "client", sums and sums.statuses_of(0))}
    if workers > 2:
        children.append(_ChildJudge(legs["client"], ctx))
    if server_leg is not None:
        legs["server"] = read_leg(server_leg, "server", sums and sums.statuses_of(1))
        if workers > 2:
            children.append(_ChildJudge(legs["server"], ctx))
    rep.legs = legs
    for name, lg in legs.items():
        rep.packets[name] = lg.packets
        rep.notes += lg.notes
        if workers < 3:
            rep.conns += judge_leg(lg, ctx)
    cross = _cross()
    pairs: list[Any] = []
    if server_leg is None:
        rep.notes.append("no server leg: only per-leg properties judged")
    elif cross is None:
        rep.notes.append("cross-leg judges not available (conformance.cross_checks missing): "
                         "only per-leg properties judged")
    else:
        pairs = cross.pair(legs["client"], legs["server"], ctx)
        props = by_scope("cross")
        classify = getattr(cross, "classify", None)
        for p in pairs:
            findings = [prop.judge(p, ctx) for prop in props]
            path = _path_from(findings)
            if path is None and classify is not None:
                path = classify(p, ctx.capabilities)
            rep.pairs.append(PairResult(p.name, getattr(p, "how", ""), _num(p.client),
                                        _num(p.server), path, findings))
    for ch in children:
        rep.conns += ch.result()
    if tshark:
        from conformance import tshark as ts
        rep.info.append(ts.second_opinion(legs, pairs))
    rep.seconds = time.perf_counter() - t0
    return rep


WORKER_WAIT = 30.0
"""Seconds the checker waits for the checksum worker beyond its own reading of a leg, plus
one per 20 MB of capture; then it computes the sums itself."""


def _checksum_worker_main(paths: list[str | Path], bufs: list[mmap.mmap], send: Any) -> None:
    """The checksum worker: each capture's fast-path statuses into its shared buffer, then
    b"ok" (or b"er" and why) on ``send``, one message per capture in order."""
    for path, buf in zip(paths, bufs, strict=True):
        if not path:
            send.send_bytes(b"er" + b"checksum worker: capture left to the reader")
            continue
        try:
            cap = open_capture(path)
        except Exception as e:  # the reader raises it too, or notes why not
            send.send_bytes(b"er" + f"checksum worker: {e}".encode())
            continue
        try:
            if not isinstance(cap.data, mmap.mmap):
                send.send_bytes(b"er" + b"checksum worker: capture not memory-mapped")
                continue
            fast_checksums(cap, buf)
            send.send_bytes(b"ok")
        except Exception as e:
            send.send_bytes(b"er" + f"checksum worker: {type(e).__name__}: {e}".encode())
        finally:
            cap.close()


class _ChecksumWorker:
    """A forked process computing the checksum statuses of each capture's fast-path frames
    (``conformance.flows.fast_checksums``) into a shared anonymous mapping, one byte per
    frame, while this process decodes; nothing is pickled. Forked before any leg is read,
    so the child's copy of this process is small."""

    def __init__(self, paths: list[str | Path]) -> None:
        sizes = []
        for p in paths:
            try:
                with open(p, "rb") as f:
                    gz = f.read(2) == b"\x1f\x8b"
                    sizes.append(0 if gz else os.fstat(f.fileno()).st_size)
            except OSError:
                sizes.append(0)  # the reader raises its own error
        # a gzipped capture (not mapped: read in one process) or an unreadable one is left
        # to the reader; the worker skips it
        paths = [p if n else "" for p, n in zip(paths, sizes, strict=True)]
        self.sizes = sizes
        self.bufs = [mmap.mmap(-1, status_buffer_size(n)) for n in sizes]
        self.answers: list[tuple[bool, str]] = []
        fork = multiprocessing.get_context("fork")
        self._receive, send = fork.Pipe(duplex=False)
        self._proc = fork.Process(target=_checksum_worker_main, args=(paths, self.bufs, send),
                                  name="checker-checksums", daemon=True)
        self._proc.start()
        send.close()
        self.failed: str | None = None

    def statuses_of(self, i: int) -> Callable[[], tuple[mmap.mmap | None, str | None]]:
        return lambda: self.statuses(i)

    def statuses(self, i: int) -> tuple[mmap.mmap | None, str | None]:
        """Capture ``i``'s status buffer once the worker has filled it, or None and why
        not (the worker failed, died or did not answer in time)."""
        wait = WORKER_WAIT + self.sizes[i] / 20e6
        deadline = time.monotonic() + wait
        while len(self.answers) <= i and self.failed is None:
            left = deadline - time.monotonic()
            if left <= 0 or not self._receive.poll(left):
                self.failed = f"checksum worker did not answer in {wait:.0f} s"
                self._stop()
                break
            try:
                msg = self._receive.recv_bytes()
            except (EOFError, OSError):
                self._proc.join(5)
                self.failed = f"checksum worker died (exit code {self._proc.exitcode})"
                break
            self.answers.append((msg[:2] == b"ok", msg[2:].decode(errors="replace")))
        if len(self.answers) > i:
            ok, why = self.answers[i]
            return (self.bufs[i], None) if ok else (None, why)
        return None, self.failed

    def _stop(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(5)

    def close(self) -> None:
        self._receive.close()
        self._stop()
        for b in self.bufs:
            b.close()


class _ChildJudge:
    """The per-leg judges of one rebuilt leg, run in a forked process.

    The fork inherits the leg (copy on write), so nothing big crosses between the processes:
    only the findings come back, as plain tuples (``marshal``), while this process goes on
    reading the other leg or judging across legs. Any failure in the child is raised here.
    """

    def __init__(self, leg: Leg, ctx: Context) -> None:
        fork = multiprocessing.get_context("fork")
        self._receive, send = fork.Pipe(duplex=False)
        self.leg = leg

        def child() -> None:
            try:
                out = [(r.problems, [(f.property, f.verdict, f.detail, f.packets)
                                     for f in r.findings]) for r in judge_leg(leg, ctx)]
                send.send_bytes(b"ok" + marshal.dumps(out))
            except BaseException as e:  # every failure goes back, to be raised there
                try:
                    blob = pickle.dumps(e)
                except Exception:  # an exception that does not pickle: keep its text
                    blob = pickle.dumps(RuntimeError(f"{leg.path}: {type(e).__name__}: {e}"))
                send.send_bytes(b"er" + blob)
            finally:
                send.close()

        self._proc = fork.Process(target=child, name=f"checker-{leg.leg}-leg", daemon=True)
        self._proc.start()
        send.close()

    def result(self) -> list[ConnResult]:
        """The leg's ``ConnResult`` list, as ``judge_leg`` would return it here."""
        try:
            msg = self._receive.recv_bytes()
        except EOFError:
            self._proc.join()
            raise RuntimeError(f"the process judging {self.leg.path} died (exit code "
                               f"{self._proc.exitcode})") from None
        finally:
            self.close(kill=False)
        if msg[:2] != b"ok":
            raise pickle.loads(msg[2:])
        lg = self.leg
        out = []
        for c, (problems, found) in zip(lg.conns, marshal.loads(msg[2:]), strict=True):
            findings = [Finding(*f) for f in found]
            c.judged = {f.property: f for f in findings}
            out.append(ConnResult(lg.leg, c.number, c.name, c.first_frame(), len(c.segs),
                                  findings, problems))
        return out

    def close(self, kill: bool = True) -> None:
        """Reap the child; with ``kill`` (its result no longer wanted) without waiting."""
        self._receive.close()
        self._proc.join(timeout=0 if kill else 10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


def _path_from(findings: list[Finding]) -> str | None:
    """The class the cross.path judge already found ("spliced: ..."), not computed twice."""
    for f in findings:
        if f.property == "cross.path":
            if f.verdict == "n/a":
                return "none"
            head = f.detail.split(":", 1)[0]
            if head in ("spliced", "proxied", "handed-off"):
                return head
    return None


def _num(c: Conn | None) -> int | None:
    return c.number if c is not None else None


__all__ = ["CheckReport", "ConnResult", "PairResult", "check_leg", "check_pcaps", "judge_leg",
           "leg_checks"]

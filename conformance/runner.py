"""Run conformance cases against a gateway: lab, gateway, per case captures of both legs,
stimulus, trace check, verdict.

One lab serves the whole run (impairment nodes in place, transparent until a case sets them;
IPv6 on; veth segmentation offloads off, so captured frames are wire segments), one gateway instance
serves every case, and each case gets its own pair of captures, so a verdict is about that
case's connections only and its pcaps can be opened on their own. The ``memory`` gateway
runs the scripted cases against the reference core in memory (no root, no lab): the same
scripts, the same checker, pcaps written by the channel.

A case's verdict (see :mod:`conformance.cases`): ``error`` when the harness could not run it
(a capture that would not start, a crashed gateway); ``skip`` when the gateway lacks what it
needs; ``fail`` when the stimulus failed, any property failed on any connection, or the path
class contradicts the gateway's capabilities; else ``pass``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conformance import peers
from conformance.cases import Case, expected_path
from conformance.policy import Policy, load_policy
from conformance.properties import Capabilities, Finding
from conformance.report import CaseResult, PropertyResult, SuiteResult
from conformance.stimulus import Outcome, RealPeer, Scripted
from spec.topology import VIP, VIP6, VPORT

DEFAULT_POLICY = Path(__file__).with_name("policy.toml")
SETTLE = 0.3
"""Seconds after a stimulus before the captures stop: the last ACKs and FINs of a close are
still on the wire when the client program returns."""
RANK = {"fail": 3, "unknown": 2, "pass": 1, "n/a": 0}

Progress = Callable[[str], None]


@dataclass
class RunOptions:
    gateway: str = "reference"
    families: tuple[int, ...] = (4, 6)
    policy: Path = DEFAULT_POLICY
    pcap_dir: Path | None = None
    """Keep every case's pcaps here (else a temporary directory, removed after the run
    unless a case failed, whose pcaps are then kept and named in the report)."""
    command: Sequence[str] = ()
    gateway_kernel: str = "out"
    capabilities: Capabilities | None = None
    lab_name: str | None = None
    tshark: bool = True
    adapter_opts: dict[str, Any] = field(default_factory=dict)


def aggregate(findings: Iterable[Finding], focus: Sequence[str]) -> list[PropertyResult]:
    """Per property, the worst verdict over every connection; focus properties first."""
    worst: dict[str, PropertyResult] = {}
    for f in findings:
        cur = worst.get(f.property)
        if cur is None or RANK.get(f.verdict, 0) > RANK.get(cur.verdict, 0):
            worst[f.property] = PropertyResult(f.property, f.verdict, f.detail,
                                               list(f.packets))
        elif f.verdict == cur.verdict == "fail":
            cur.packets.extend(f.packets)
    out = list(worst.values())
    for p in out:
        p.focus = p.id in focus
    out.sort(key=lambda p: (not p.focus, p.id))
    return out


def judge_case(case: Case, family: int, outcome: Outcome, report: Any, caps: Capabilities,
               seconds: float, pcaps: dict[str, str]) -> CaseResult:
    """The verdict of one case run from its stimulus outcome and its check report."""
    findings = list(report.findings())
    props = aggregate(findings, case.focus)
    paths = list(report.path_classes())
    want = expected_path(case, caps.splices, caps.delayed_binding)
    res = CaseResult(case.id, case.name, case.title, family, "pass", "", seconds,
                     {"ok": outcome.ok, "detail": outcome.detail,
                      "problems": list(outcome.log)}, props, paths, want,
                     connections=len(paths), pcaps=pcaps, notes=list(report.notes))
    reasons = []
    if not outcome.ok:
        reasons.append(f"stimulus: {outcome.detail}")
    failed = [p for p in props if p.verdict == "fail"]
    reasons += [f"{p.id}: {p.detail}" for p in failed]
    if want is not None and paths and any(p != want for p in paths):
        other = sorted({p for p in paths if p != want})
        reasons.append(f"path: expected {want} for this gateway, saw {', '.join(other)}")
    if want is not None and not paths and outcome.ok:
        reasons.append("path: no connection of the client leg could be paired with the "
                       "server leg")
    missing = [p.id for p in props if p.focus and p.verdict == "n/a"]
    if missing:
        res.notes.append(f"focus properties not applicable here: {', '.join(missing)}")
    if reasons:
        res.verdict, res.reason = "fail", "; ".join(reasons)
    else:
        res.reason = ",".join(sorted(set(paths))) or "no paired connection"
    return res


def play_scripted(stim: Scripted, channel: Any, family: int,
                  caps: Capabilities | None = None) -> Outcome:
    """Play a ready script of :mod:`conformance.script_library` on a channel; the script's
    own expectations make the outcome, its packet log is kept for the report. A full (L7)
    proxy (``caps``: l7, no splicing) rewrites requests, so its scripted servers accept an
    HTTP-equivalent request; every other gateway must deliver the client's exact bytes. Any
    gateway that does not splice may end a connection with a FIN where a splice relays an
    RST."""
    from conformance.script import play
    from conformance.script_library import READY

    script = READY[stim.factory](family=family, **stim.kwargs)
    proxy = caps is not None and not caps.splices
    result = play(script, channel, http_equivalent=proxy and caps is not None and caps.l7,
                  proxy=proxy)
    return Outcome(result.ok, result.summary(), log=tuple(result.text().splitlines()[:400]))


def applies(case: Case, caps: Capabilities, family: int, families_ok: Sequence[int]) -> str:
    """Why the case does not apply to this gateway (empty: it does)."""
    if "l7" in case.needs and not caps.l7:
        return "needs routing on the request (l7); this gateway does not read requests"
    if isinstance(case.stimulus, Scripted) and "server" in case.stimulus.plays \
            and not caps.opens_window:
        return ("a scripted server cannot be played against a gateway whose SYN-ACK "
                "offers no window until its server side is up (a SYN proxy): the script "
                "plays the client's steps first")
    if family not in case.families:
        return case.family_note or f"the case does not run on IPv{family}"
    if family not in families_ok:
        return f"this run is not set up for IPv{family}"
    return ""



def guarded(case: Case, family: int, run: Callable[[], CaseResult]) -> CaseResult:
    """``run()``, or an "error" result naming the exception: one broken case must not hide
    the others (both runners, on the wire and in memory)."""
    try:
        return run()
    except Exception as exc:
        res = CaseResult(case.id, case.name, case.title, family, "error",
                         f"{type(exc).__name__}: {exc}")
        res.notes.append(traceback.format_exc(limit=6))
        return res

class Runner:
    """One run: set up, run the cases, tear down (also on Ctrl-C or an exception)."""

    def __init__(self, opts: RunOptions, progress: Progress | None = None) -> None:
        from conformance import adapters

        self.opts = opts
        self.progress = progress or (lambda _msg: None)
        self.policy_path = opts.policy
        if opts.gateway == "command":
            self.adapter = adapters.make_adapter(
                "command", argv=list(opts.command), gateway_kernel=opts.gateway_kernel,
                capabilities=opts.capabilities or Capabilities(False, False, False),
                **opts.adapter_opts)
        else:
            self.adapter = adapters.make_adapter(opts.gateway, **opts.adapter_opts)
        self.caps: Capabilities = opts.capabilities or self.adapter.capabilities
        self.policy: Policy = load_policy(opts.policy, l7=self.caps.l7)
        self.lab: Any = None
        self._tmp: Path | None = None
        self.pcap_dir = opts.pcap_dir

    # ---- setup and teardown ----------------------------------------------------------------
    def _work(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="fastpath-conformance-"))
        return self._tmp

    def setup(self) -> None:
        from reference.lab import Lab

        if self.pcap_dir is None:
            self.pcap_dir = self._work() / "pcaps"
        self.pcap_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.progress(f"lab: building ({self.adapter.gateway_kernel} mode, impairment nodes, "
                      f"IPv4 + IPv6)")
        self.lab = Lab(self.opts.lab_name, gateway_kernel=self.adapter.gateway_kernel,
                       impair=True, ipv6=True)
        self.lab.up()
        segmentation_offloads_off(self.lab)
        self.progress(f"lab {self.lab.name} up in {time.monotonic() - t0:.1f} s; starting "
                      f"gateway {self.adapter.name}")
        t0 = time.monotonic()
        self.adapter.start(self.lab, self.policy.config, self._work() / "gateway")
        # What the gateway really serves (an adapter may add an IPv6 twin of a service).
        self.policy = Policy(self.adapter.policy, l7=self.caps.l7, source=str(self.policy_path))
        self.progress(f"gateway {self.adapter.name} ready in {time.monotonic() - t0:.1f} s")

    def teardown(self) -> dict[str, Any] | None:
        stats = None
        with contextlib.suppress(Exception):
            stats = self.adapter.stop()
        if self.lab is not None:
            self.lab.down()
        return stats

    # ---- one case ----------------------------------------------------------------------------
    def run_case(self, case: Case, family: int) -> CaseResult:
        from conformance.checker import check_pcaps

        assert self.lab is not None and self.pcap_dir is not None
        vip = VIP6 if family == 6 else VIP
        stem = f"{case.id}-{case.name}-v{family}"
        t0 = time.monotonic()
        if not self.adapter.alive():
            return CaseResult(case.id, case.name, case.title, family, "error",
                              f"the gateway is not running: {self.adapter.log_tail()}")
        with capturing(self.lab, self.pcap_dir, stem, case.stimulus) as (legs, channel):
            outcome = self._stimulus(case, family, vip, channel)
            time.sleep(SETTLE)
            counters = legs.stop()
        seconds = time.monotonic() - t0
        pcaps = {"client": str(legs.client_pcap), "server": str(legs.server_pcap)}
        report = check_pcaps(legs.client_pcap, legs.server_pcap, policy=self.policy,
                             capabilities=self.caps, tshark=self.opts.tshark)
        res = judge_case(case, family, outcome, report, self.caps, seconds, pcaps)
        dropped = sum(c.get("dropped_by_kernel") or 0 for c in counters)
        if dropped:
            res.notes.append(f"tcpdump says the kernel dropped {dropped} frames: the traces "
                             f"are incomplete")
        return res

    def _stimulus(self, case: Case, family: int, vip: str, channel: Any) -> Outcome:
        stim = case.stimulus
        if isinstance(stim, RealPeer):
            return peers.run(self.lab, stim, vip=vip, port=VPORT, family=family,
                             work=self._work() / "bodies")
        assert isinstance(stim, Scripted) and channel is not None
        return play_scripted(stim, channel, family, self.caps)

    # ---- the whole run -------------------------------------------------------------------------
    def run(self, cases: Sequence[Case]) -> SuiteResult:
        suite = SuiteResult(self.adapter.name, asdict(self.caps))
        t0 = time.monotonic()
        runs = [(c, f) for c in cases for f in self.opts.families]
        try:
            self.setup()
            for i, (case, family) in enumerate(runs, 1):
                why = applies(case, self.caps, family, self.opts.families)
                if why:
                    res = CaseResult(case.id, case.name, case.title, family, "skip", why)
                else:
                    res = guarded(case, family, lambda c=case, f=family: self.run_case(c, f))
                suite.results.append(res)
                self.progress(f"[{i}/{len(runs)}] {res.label} {case.name}: {res.verdict}"
                              f" ({res.seconds:.1f} s)"
                              + (f" - {res.reason[:160]}" if res.verdict != "pass" else ""))
        finally:
            suite.gateway_stats = self.teardown()
            suite.seconds = time.monotonic() - t0
            self._cleanup(suite)
        return suite

    def _cleanup(self, suite: SuiteResult) -> None:
        """Temporary pcaps go unless a case failed (then the report names them)."""
        if self._tmp is None or self.opts.pcap_dir is not None:
            return
        if suite.ok:
            shutil.rmtree(self._tmp, ignore_errors=True)
            for r in suite.results:
                r.pcaps = {}
        else:
            suite.notes.append(f"pcaps of this run are kept in {self._tmp}")


@contextlib.contextmanager
def capturing(lab: Any, pcap_dir: Path, stem: str,
              stimulus: RealPeer | Scripted) -> Iterator[tuple[Any, Any]]:
    """Both legs captured, with every packet socket the case adds to the lab opened *before*
    the captures start: the lab channel that plays a scripted case, and the impairment nodes
    a real-peer case restarts with its own settings (with its client sysctls). The kernel
    serves a device's taps newest first, so tcpdump, started last, queues each arriving frame
    before a socket that shares its device can read it and answer (see
    :meth:`conformance.script_channels.LabChannel.open`). Yields ``(legs, channel)``;
    ``channel`` is None for real-peer cases. The shaping is undone after the captures stop."""
    from conformance.capture import BothLegs

    with contextlib.ExitStack() as stack:
        channel = None
        if isinstance(stimulus, Scripted):
            from conformance.script_channels import LabChannel

            channel = stack.enter_context(LabChannel(lab))
            channel.open()
        else:
            stack.enter_context(peers.shaped(lab, stimulus))
        legs = stack.enter_context(BothLegs(lab, pcap_dir, stem))
        yield legs, channel


def segmentation_offloads_off(lab: Any) -> None:
    """Scatter-gather, TSO and GSO off on every veth end: each captured frame is then one
    wire segment, as a real link would carry it (a GSO super-frame of two 524-byte segments
    would otherwise look like one 1048-byte segment above a 536-byte MSS). TX checksum
    offload stays on: with it off, every segment reaches the gateway as CHECKSUM_NONE and is
    verified in software, and the kernel's nft ``synproxy`` verifies an IPv6 SYN with the IPv4
    routine (``nf_ip_checksum``), so it drops every valid one; with it on, segments arrive
    CHECKSUM_PARTIAL and are not verified. The scripted peers send that way too
    (:func:`conformance.script_channels.offload_tcp_checksum`). Partial checksums are legal
    on veth captures."""
    from reference.lab._system import need, ns_exec

    need("ethtool")
    for ns, ifname in lab.veth_ends():
        ns_exec(ns, ["ethtool", "-K", ifname, "sg", "off", "tso", "off", "gso", "off"])


def preflight() -> str:
    """Why a lab run cannot start here (empty: it can)."""
    if os.geteuid() != 0:
        return ("the conformance lab needs root (network namespaces); run as root, or use "
                "--gateway memory for the scripted cases in memory")
    for tool in ("ip", "nft", "tcpdump", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is missing; run `bash setup.sh` to install what the lab needs"
    return ""

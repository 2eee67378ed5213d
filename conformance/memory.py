"""``fastpath conformance run --gateway memory``: the scripted cases against the reference core
in memory, without root or a lab.

The same scripts and the same trace checker as on the wire: each case gets a fresh core on the
run's policy and a :class:`~conformance.script_channels.MemoryChannel` (virtual clock, in-memory
HTTP servers where the script plays no server), and the channel's record of both legs is
written as the case's two pcaps and judged. Real-peer cases need kernel TCP stacks and are
skipped with that reason. This is how a gateway author can run the scripted half of the suite
against the reference model on a laptop, and how the suite's own tests run every scripted
case in seconds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from conformance.cases import Case
from conformance.checker import check_pcaps
from conformance.policy import load_policy
from conformance.properties import REFERENCE
from conformance.report import CaseResult, SuiteResult
from conformance.runner import (
    Progress,
    RunOptions,
    applies,
    guarded,
    judge_case,
    play_scripted,
)
from conformance.stimulus import Scripted

REAL_PEERS_SKIP = ("needs real kernel TCP peers in a lab; run it with a lab gateway "
                   "(--gateway reference, as root)")


class MemoryRunner:
    """Scripted cases on the reference core in memory; the interface of :class:`Runner`."""

    def __init__(self, opts: RunOptions, progress: Progress | None = None) -> None:
        self.opts = opts
        self.progress = progress or (lambda _msg: None)
        self.caps = REFERENCE
        self.policy = load_policy(opts.policy, l7=True)
        self.pcap_dir = opts.pcap_dir
        self._tmp: Path | None = None

    def run_case(self, case: Case, family: int, pcap_dir: Path) -> CaseResult:
        from conformance.script_channels import MemoryChannel
        from reference.gateway.gateway import Gateway

        assert isinstance(case.stimulus, Scripted)
        t0 = time.monotonic()
        channel = MemoryChannel(Gateway(self.policy.config))
        outcome = play_scripted(case.stimulus, channel, family, self.caps)
        stem = f"{case.id}-{case.name}-v{family}"
        client, server = pcap_dir / f"{stem}.client.pcap", pcap_dir / f"{stem}.server.pcap"
        _write_channel_pcaps(channel, client, server)
        report = check_pcaps(client, server, policy=self.policy, capabilities=self.caps,
                             tshark=self.opts.tshark)
        return judge_case(case, family, outcome, report, self.caps, time.monotonic() - t0,
                          {"client": str(client), "server": str(server)})

    def run(self, cases: Sequence[Case]) -> SuiteResult:
        suite = SuiteResult("memory", asdict(self.caps))
        t0 = time.monotonic()
        if self.pcap_dir is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="fastpath-conformance-"))
            pcap_dir = self._tmp
        else:
            pcap_dir = self.pcap_dir
        pcap_dir.mkdir(parents=True, exist_ok=True)
        runs = [(c, f) for c in cases for f in self.opts.families]
        for i, (case, family) in enumerate(runs, 1):
            why = REAL_PEERS_SKIP if not isinstance(case.stimulus, Scripted) else \
                applies(case, self.caps, family, self.opts.families)
            if why:
                res = CaseResult(case.id, case.name, case.title, family, "skip", why)
            else:
                res = guarded(case, family,
                              lambda c=case, f=family: self.run_case(c, f, pcap_dir))
            suite.results.append(res)
            self.progress(f"[{i}/{len(runs)}] {res.label} {case.name}: {res.verdict}"
                          + (f" - {res.reason[:160]}" if res.verdict not in ("pass", "skip")
                             else ""))
        suite.seconds = time.monotonic() - t0
        if self._tmp is not None:
            if suite.ok:
                shutil.rmtree(self._tmp, ignore_errors=True)
                for r in suite.results:
                    r.pcaps = {}
            else:
                suite.notes.append(f"pcaps of this run are kept in {self._tmp}")
        return suite


def _write_channel_pcaps(channel: object, client: Path, server: Path) -> None:
    """Every frame the memory channel saw, per leg, as classic Ethernet pcaps."""
    import dpkt

    frames = channel.frames
    for leg, path in (("client", client), ("server", server)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            w = dpkt.pcap.Writer(f, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB)
            for fr in frames:
                if fr.leg == leg:
                    w.writepkt(fr.frame, ts=fr.time)

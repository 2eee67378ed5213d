"""Captures of both legs of a conformance case: tcpdump on each link's end facing the gateway.

Where: in the suite's lab (impairment nodes on both legs), the client leg on ``ib`` in the
client-leg impairment namespace and the server leg on ``ja`` in the server-leg one: the far
ends of the gateway's own two veth pairs (``gc === ib``, ``gs === ja``). In a lab without
impairment nodes, the client leg on ``c0`` (client namespace) and the server leg on ``g0``
(the switch port facing the gateway). Why not on the gateway's own interfaces: a gateway
under test may send with PACKET_QDISC_BYPASS or from a kernel path a tap in its namespace
does not see, and a box under test has no namespace at all; the far end of each link sees
exactly what crossed the wire. Why next to the gateway rather than next to the peers: the
impairment nodes are userspace bridges, each scheduled on its own, so a frame the gateway
sent to the server could reach a tap behind them later than the client's answer to a
frame the gateway sent it afterwards. Captured where the gateway's frames arrive, each is
stamped as the gateway sends it, in the order it sends them, and each peer frame as it is
delivered to the gateway: the cross-leg checks compare the times the gateway acted on.
What the impairments did to a frame on its way to a peer is the peer's business; what
reached the gateway, and when, is what the checks judge.

Captures take full frames (``-s 0``), in immediate mode (without it, libpcap's TPACKET_V3
ring hands frames over a block at a time, and a short case can end before its first block
retires: an empty pcap), written unbuffered (``-U``) so a case's last segments are on disk
when tcpdump stops, and come out as classic pcap with Ethernet framing,
which Wireshark opens as is. The runner turns the veth segmentation offloads off
(see :mod:`conformance.runner`), so each captured frame is one wire segment; frames a kernel
sent may still carry a partial checksum (checksum offload), and captures taken elsewhere may
hold GSO super-frames: the checker accepts both as legal on veth captures.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from reference.lab import Lab
from reference.lab.topology import (
    CLIENT_IF,
    IMPAIR_CLIENT_IFS,
    IMPAIR_SERVER_IFS,
    SWITCH_GW_PORT,
)

LEG_POINTS = {"client": ("client", CLIENT_IF), "server": ("switch", SWITCH_GW_PORT)}
"""Leg -> (lab role, interface) where it is captured in a lab without impairment nodes."""
GATEWAY_FACING = {"client": IMPAIR_CLIENT_IFS[1], "server": IMPAIR_SERVER_IFS[0]}
"""Leg -> the impairment node's interface on the gateway's veth pair."""


def leg_point(lab: Lab, leg: str) -> tuple[str, str]:
    """(lab role or namespace, interface) where ``leg`` is captured (see the module doc)."""
    if lab.impair:
        return lab.impair_ns(leg), GATEWAY_FACING[leg]
    return LEG_POINTS[leg]


START_TIMEOUT = 10.0


class CaptureError(RuntimeError):
    pass


class LegCapture:
    """tcpdump on one leg, started before the stimulus and stopped (SIGINT) after it."""

    def __init__(self, lab: Lab, leg: str, pcap: Path) -> None:
        role, self.interface = leg_point(lab, leg)
        self.leg, self.pcap = leg, pcap
        self.log = pcap.with_suffix(".tcpdump.log")
        argv = ["tcpdump", "-i", self.interface, "-w", str(pcap), "-s", "0", "-U", "-n", "-p",
                "--immediate-mode", "-B", "16384", "-Z", "root"]
        with open(self.log, "wb") as err:
            self.proc = lab.popen(role, argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err,
                                  start_new_session=True)
        self.result: dict[str, Any] | None = None

    def _log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def wait_listening(self, deadline: float) -> None:
        """Traffic must not start before tcpdump listens, or the pcap misses the first SYN."""
        while time.monotonic() < deadline:
            if "listening on" in self._log_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        self.stop()
        raise CaptureError(f"tcpdump on {self.interface} ({self.leg} leg) did not start: "
                           f"{self._log_text().strip()[-300:] or '(no output)'}; check that "
                           f"tcpdump is installed (bash setup.sh)")

    def stop(self) -> dict[str, Any]:
        """SIGINT, so tcpdump flushes and prints its counters; the counters tell whether the
        kernel dropped frames, which would make the trace incomplete."""
        if self.result is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            log = self._log_text()
            nums = {key: int(m.group(1)) for key in ("captured", "dropped by kernel")
                    if (m := re.search(rf"(\d+) packets? {key}", log))}
            self.result = {"leg": self.leg, "interface": self.interface, "path": str(self.pcap),
                           "packets": nums.get("captured"),
                           "dropped_by_kernel": nums.get("dropped by kernel", 0)}
        return self.result


class BothLegs:
    """Both captures as one context: started and listening on entry, stopped on exit (also
    when the stimulus raised)."""

    def __init__(self, lab: Lab, directory: Path, stem: str) -> None:
        self.lab, self.directory, self.stem = lab, directory, stem
        self.client_pcap = directory / f"{stem}.client.pcap"
        self.server_pcap = directory / f"{stem}.server.pcap"
        self.captures: list[LegCapture] = []

    def __enter__(self) -> BothLegs:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.captures = [LegCapture(self.lab, "client", self.client_pcap),
                             LegCapture(self.lab, "server", self.server_pcap)]
            deadline = time.monotonic() + START_TIMEOUT
            for cap in self.captures:
                cap.wait_listening(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[dict[str, Any]]:
        return [cap.stop() for cap in self.captures]

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for cap in self.captures:
            with contextlib.suppress(OSError):
                cap.log.unlink()

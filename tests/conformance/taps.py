"""Which packet sockets the kernel serves first on a lab device (for the capture-order tests)."""

from __future__ import annotations

CAPTURE_FIRST = ["tpacket_rcv", "packet_rcv"]
"""tcpdump (a TPACKET ring) served before a plain packet socket (a peer or a bridge)."""


def taps(lab: object, role: str, ifname: str) -> list[str]:
    """The receive functions of ``ifname``'s ETH_P_ALL taps, in the order the kernel serves
    them (``/proc/net/ptype`` lists each device's taps in delivery order)."""
    out = lab.run(role, ["cat", "/proc/net/ptype"], capture_output=True, text=True,  # type: ignore
                  check=True).stdout
    return [f[2] for f in (line.split() for line in out.splitlines()[1:])
            if len(f) == 3 and f[0] == "ALL" and f[1] == ifname]

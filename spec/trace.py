"""Two-leg packet traces: how counterexamples and test failures are shown to people.

A gateway bug is only visible by comparing the client leg with the server leg, so a trace
keeps both legs in one timeline. It renders as packetdrill-like text (with a leg tag per
line) and writes classic Ethernet pcaps that open cleanly in Wireshark.

Sequence numbers are printed as absolute unsigned 32-bit values, never relative: most
counterexamples are about the wrap, which relative numbering would hide.

Everything here needs concrete ints. A proof's model must be evaluated first
(``model.eval(x).as_long()``); we refuse symbolic values rather than guess.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import dpkt

from spec.segment import ACK, SYN, Segment, flag_string
from spec.topology import (
    CLIENT_IP,
    CLIENT_MAC,
    CLIENT_PORT,
    GW_CLIENT_MAC,
    GW_SERVER_IP,
    GW_SERVER_MAC,
    GW_SERVER_PORT,
    SERVER_IPS,
    SERVER_MAC,
    SERVER_PORT,
    VIP,
    VPORT,
)

Leg = Literal["client", "server"]
LEGS: tuple[Leg, ...] = get_args(Leg)

PCAP_EPOCH = 1_700_000_000
"""Fixed capture start (seconds), so pcaps are byte-identical across runs."""
TICKS_PER_SECOND = 1000
"""Packets are spaced 1 ms apart; dividing an int index keeps ``t`` correctly rounded."""
FILLER = b"fastpath"
"""Stand-in payload when a segment only knows its length (as in proofs)."""
MAX_OPTION_BYTES = 40

_U8, _U16, _U32 = 0xFF, 0xFFFF, 0xFFFFFFFF
_Opt = tuple[str, tuple[int, ...]]
"""An option as (name, values); one list drives both the wire bytes and the rendering."""
_NOP: _Opt = ("nop", ())


@dataclass(frozen=True, slots=True)
class TracePacket:
    """One segment seen on one leg; ``from_gateway`` is relative to that leg's peer."""

    leg: Leg
    from_gateway: bool
    seg: Segment
    note: str = ""
    t: float = 0.0

    @property
    def tag(self) -> str:
        """``>`` points from client towards server, as the legs are drawn left to right."""
        towards_server = self.from_gateway == (self.leg == "server")
        return ("c" if self.leg == "client" else "s") + (">" if towards_server else "<")


class Trace:
    """An ordered two-leg trace; ``add`` validates eagerly so errors name the packet."""

    def __init__(self, title: str = "", server_ip: str = SERVER_IPS[0]) -> None:
        self.title = title
        self.server_ip = str(ipaddress.IPv4Address(server_ip))
        self.packets: list[TracePacket] = []

    def add(self, leg: Leg, from_gateway: bool, seg: Segment, note: str = "") -> Trace:
        """Append a packet 1 ms after the previous one; returns self for chaining."""
        index = len(self.packets)
        if leg not in LEGS:
            raise ValueError(f"packet {index}: leg must be one of {LEGS}, not {leg!r}")
        if not isinstance(from_gateway, bool):
            raise TypeError(f"packet {index}: from_gateway must be a bool")
        _validate(index, seg)
        self.packets.append(TracePacket(leg, from_gateway, seg, note, t=index / TICKS_PER_SECOND))
        return self

    def render(self) -> str:
        """The title line, then one packetdrill-like line per packet."""
        lines = [f"# {self.title or 'trace'} (server {self.server_ip})"]
        lines += [_render_line(p) for p in self.packets]
        return "\n".join(lines)

    __str__ = render

    def write_pcap(self, path: str | Path, legs: Iterable[Leg] = LEGS) -> Path:
        """Write the packets of ``legs``, in trace order, as one classic Ethernet pcap."""
        wanted = set(legs)
        if not wanted <= set(LEGS):
            raise ValueError(f"legs must be drawn from {LEGS}, not {sorted(wanted)}")
        path = Path(path)
        with path.open("wb") as f:
            writer = dpkt.pcap.Writer(f, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB)
            for index, p in enumerate(self.packets):
                if p.leg in wanted:
                    writer.writepkt(self._frame(index, p), ts=PCAP_EPOCH + p.t)
        return path

    def write_pcaps(self, directory: str | Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>-client.pcap`` and ``<stem>-server.pcap``: one flow per file."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        client = self.write_pcap(directory / f"{stem}-client.pcap", ("client",))
        server = self.write_pcap(directory / f"{stem}-server.pcap", ("server",))
        return client, server

    def _frame(self, index: int, p: TracePacket) -> bytes:
        """Ethernet/IPv4/TCP bytes; the IP id is the trace index so split pcaps match."""
        if p.leg == "client":
            peer, gw = (CLIENT_MAC, CLIENT_IP, CLIENT_PORT), (GW_CLIENT_MAC, VIP, VPORT)
        else:
            peer = (SERVER_MAC, self.server_ip, SERVER_PORT)
            gw = (GW_SERVER_MAC, GW_SERVER_IP, GW_SERVER_PORT)
        (smac, sip, sport), (dmac, dip, dport) = (gw, peer) if p.from_gateway else (peer, gw)
        seg = p.seg
        opts = _encode_options(_layout_options(seg)[0])
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seg.seq, ack=seg.ack, flags=seg.flags,
                           win=seg.window, opts=opts, data=_payload(seg))
        tcp.off = 5 + len(opts) // 4
        ip = dpkt.ip.IP(src=_ip(sip), dst=_ip(dip), p=dpkt.ip.IP_PROTO_TCP, ttl=64,
                        id=(index + 1) & _U16, data=tcp)
        ip.df = 1
        eth = dpkt.ethernet.Ethernet(src=_mac(smac), dst=_mac(dmac),
                                     type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        return bytes(eth)  # checksums are zero here, so dpkt computes both


def _ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _check_int(index: int, name: str, value: Any, limit: int) -> None:
    """Reject symbolic or non-int values (TypeError) and out-of-range ones (ValueError)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"packet {index}: {name} is a {type(value).__name__}, but a trace needs "
                        "concrete ints (convert with model.eval(x).as_long() first)")
    if not 0 <= value <= limit:
        raise ValueError(f"packet {index}: {name} = {value} is out of range 0..{limit}")


def _validate(index: int, seg: Segment) -> None:
    """Check every field that reaches the wire, so encoding can never silently truncate."""
    for name, limit in (("seq", _U32), ("ack", _U32), ("flags", _U8), ("window", _U16),
                        ("length", _U16)):
        _check_int(index, name, getattr(seg, name), limit)
    for name, limit in (("mss", _U16), ("wscale", _U8), ("tsval", _U32), ("tsecr", _U32)):
        if getattr(seg, name) is not None:
            _check_int(index, name, getattr(seg, name), limit)
    for i, block in enumerate(seg.sack):
        for j, edge in enumerate(block):
            _check_int(index, f"sack[{i}][{j}]", edge, _U32)
    if not isinstance(seg.sack_permitted, bool):
        raise TypeError(f"packet {index}: sack_permitted must be a concrete bool")
    if seg.payload is not None and len(seg.payload) != seg.length:
        raise ValueError(f"packet {index}: length = {seg.length} but the payload has "
                         f"{len(seg.payload)} bytes")
    if seg.tsecr is not None and seg.tsval is None:
        raise ValueError(f"packet {index}: tsecr without tsval cannot be encoded")
    options = len(_encode_options(_layout_options(seg)[0]))
    if 20 + 20 + options + seg.length > _U16:
        raise ValueError(f"packet {index}: length = {seg.length} overflows the IPv4 packet")


def _layout_options(seg: Segment) -> tuple[list[_Opt], int]:
    """Options in Linux's order and alignment; returns them and the SACK blocks left out.

    Like real stacks, SACK gets what room is left of the 40 option bytes, so a segment
    with timestamps carries at most three blocks.
    """
    opts: list[_Opt] = []
    if seg.mss is not None:
        opts.append(("mss", (seg.mss,)))
    ts: _Opt | None = None
    if seg.tsval is not None:
        ts = ("TS", (seg.tsval, seg.tsecr if seg.tsecr is not None else 0))
    if ts and seg.sack_permitted:
        opts += [("sackOK", ()), ts]
    elif ts:
        opts += [_NOP, _NOP, ts]
    elif seg.sack_permitted:
        opts += [_NOP, _NOP, ("sackOK", ())]
    if seg.wscale is not None:
        opts += [_NOP, ("wscale", (seg.wscale,))]
    room = (MAX_OPTION_BYTES - len(_encode_options(opts)) - 4) // 8
    fit = seg.sack[:max(room, 0)]
    if fit:
        opts += [_NOP, _NOP, ("sack", tuple(edge for block in fit for edge in block))]
    while len(_encode_options(opts)) % 4:
        opts.append(_NOP)
    return opts, len(seg.sack) - len(fit)


def _encode_options(opts: list[_Opt]) -> bytes:
    out = b""
    for name, values in opts:
        if name == "nop":
            out += b"\x01"
        elif name == "mss":
            out += b"\x02\x04" + values[0].to_bytes(2, "big")
        elif name == "wscale":
            out += b"\x03\x03" + values[0].to_bytes(1, "big")
        elif name == "sackOK":
            out += b"\x04\x02"
        elif name == "sack":
            out += bytes((5, 2 + 4 * len(values))) + b"".join(v.to_bytes(4, "big")
                                                                for v in values)
        else:  # "TS"
            out += b"\x08\x0a" + values[0].to_bytes(4, "big") + values[1].to_bytes(4, "big")
    return out


def _render_option(opt: _Opt) -> str:
    name, values = opt
    if name == "TS":
        return f"TS val {values[0]} ecr {values[1]}"
    if name == "sack":
        return "sack " + " ".join(f"{a}:{b}" for a, b in zip(values[::2], values[1::2],
                                                              strict=True))
    return " ".join([name, *map(str, values)])


def _payload(seg: Segment) -> bytes:
    """The real payload, or filler anchored to the sequence space.

    Anchoring makes overlapping retransmissions carry the same bytes, so Wireshark's
    analysis does not report spurious data mismatches (2^32 is a multiple of its length).
    """
    if seg.payload is not None:
        return seg.payload
    first = seg.seq + (1 if seg.flags & SYN else 0)
    start = first % len(FILLER)
    return (FILLER * (2 + seg.length // len(FILLER)))[start:start + seg.length]


def _render_line(p: TracePacket) -> str:
    seg = p.seg
    end = (seg.seq + seg.length) & _U32
    line = f"{p.tag} {p.t:.3f} {flag_string(seg.flags)} {seg.seq}:{end}({seg.length})"
    if seg.flags & ACK:
        line += f" ack {seg.ack}"
    line += f" win {seg.window}"
    opts, dropped = _layout_options(seg)
    if opts:
        line += " <" + ",".join(map(_render_option, opts)) + ">"
    if dropped:
        line += f" [{dropped} sack block(s) did not fit]"
    if p.note:
        line += "  # " + " ".join(p.note.splitlines())
    return line

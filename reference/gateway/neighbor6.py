"""IPv6 Neighbor Discovery for the raw-socket driver: what ARP is to IPv4 (RFC 4861 §4.3-4.4,
§7).

The driver answers Neighbor Solicitations for the gateway's own IPv6 addresses (and VIPs) and
resolves next hops (the servers, or a client it has not heard from) with solicitations of its
own. This module only turns messages into bytes and back, so it is tested without sockets;
retries, queues and the neighbour table live in :mod:`reference.gateway.driver`.

Only what the gateway needs: Neighbor Solicitation and Advertisement with the source/target
link-layer address options, in a bare IPv6 header (ND messages carry no extension headers in
practice, and a message with one is not recognised here, so it reaches the core, which drops
it as not TCP). Router Solicitations, Advertisements and Redirects are recognised so the driver
can count and ignore them: the gateway is configured, not autoconfigured.

Validation is RFC 4861 §7.1.1/§7.1.2: hop limit 255 (proof that no router forwarded the
message), a valid ICMPv6 checksum, code 0, enough length, a non-multicast target, options of
non-zero length; a solicitation from the unspecified address (duplicate address detection)
goes to a solicited-node group and carries no source link-layer option; an advertisement to a
multicast group is not "solicited".
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from reference.gateway._checksum import fold, word_sum

ICMPV6 = 58
ND_RS, ND_RA, ND_NS, ND_NA, ND_REDIRECT = 133, 134, 135, 136, 137
ND_TYPES = frozenset((ND_RS, ND_RA, ND_NS, ND_NA, ND_REDIRECT))
OPT_SOURCE_LLADDR, OPT_TARGET_LLADDR = 1, 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20
"""Flag bits of the first octet after an advertisement's checksum."""
HOP_LIMIT = 255
UNSPECIFIED = bytes(16)
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
_IP6 = struct.Struct("!IHBB16s16s")
"""Version/class/flow, payload length, next header, hop limit, source, destination."""
_MIN_LEN = {ND_RS: 8, ND_RA: 16, ND_NS: 24, ND_NA: 24, ND_REDIRECT: 40}
"""Smallest ICMPv6 length of each message (RFC 4861 §6.1.1, §6.1.2, §7.1.1, §7.1.2, §8.1)."""


class NdError(ValueError):
    """Not a valid Neighbor Discovery message; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NdMessage:
    """A validated ND message. ``target`` and ``lladdr`` are set for NS/NA only (``lladdr``:
    the source link-layer option of a solicitation, the target one of an advertisement, None
    if absent); ``flags`` is the advertisement's R/S/O octet."""

    type: int
    src: bytes
    dst: bytes
    target: bytes | None = None
    lladdr: bytes | None = None
    flags: int = 0


def is_nd(packet: bytes | bytearray | memoryview) -> bool:
    """Whether a raw IPv6 packet is an ICMPv6 ND message (no extension headers), judged by its
    next header and ICMPv6 type only: cheap enough for every frame."""
    return len(packet) > 40 and packet[6] == ICMPV6 and packet[40] in ND_TYPES


def icmpv6_checksum(src: bytes, dst: bytes, message: bytes | bytearray | memoryview) -> int:
    """RFC 4443 §2.3 checksum over the pseudo-header (RFC 8200 §8.1) and ``message``; 0 when
    ``message`` already holds a valid checksum."""
    pseudo = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + len(message) + ICMPV6
    return ~fold(word_sum(message) + pseudo) & 0xFFFF


def solicited_node(addr: bytes) -> bytes:
    """The solicited-node multicast group of ``addr``: ff02::1:ff00:0/104 + its low 24 bits
    (RFC 4291 §2.7.1)."""
    return bytes.fromhex("ff0200000000000000000001ff") + addr[13:16]


def multicast_mac(group: bytes) -> bytes:
    """The Ethernet address of an IPv6 multicast group: 33:33 + its low 32 bits (RFC 2464 §7)."""
    return b"\x33\x33" + group[12:16]


def _packet(src: bytes, dst: bytes, icmp: bytearray) -> bytes:
    icmp[2:4] = icmpv6_checksum(src, dst, icmp).to_bytes(2, "big")
    return _IP6.pack(6 << 28, len(icmp), ICMPV6, HOP_LIMIT, src, dst) + bytes(icmp)


def _lladdr_option(kind: int, mac: bytes) -> bytes:
    return bytes((kind, 1)) + mac  # length in units of 8 octets: 2 + 6


def build_ns(src: bytes, target: bytes, mac: bytes, dst: bytes | None = None) -> bytes:
    """A Neighbor Solicitation for ``target`` from ``src`` (our address; link-layer ``mac`` in
    the source option), to ``target``'s solicited-node group unless ``dst`` is given (a
    unicast reachability probe). Never from the unspecified address: that would be duplicate
    address detection, which the gateway does not do."""
    if src == UNSPECIFIED:
        raise ValueError("a solicitation from :: is duplicate address detection; give the "
                         "gateway an IPv6 address on this link")
    icmp = bytearray(struct.pack("!BBHI16s", ND_NS, 0, 0, 0, target))
    icmp += _lladdr_option(OPT_SOURCE_LLADDR, mac)
    return _packet(src, dst if dst is not None else solicited_node(target), icmp)


def build_na(target: bytes, dst: bytes, mac: bytes, *, solicited: bool, router: bool = True,
             override: bool = True) -> bytes:
    """A Neighbor Advertisement that ``target`` (our address, also the source) is at ``mac``,
    sent to ``dst``: the solicitor, or all-nodes when answering duplicate address detection
    (then ``solicited`` must be False, RFC 4861 §7.2.4)."""
    flags = (NA_ROUTER if router else 0) | (NA_SOLICITED if solicited else 0) | \
        (NA_OVERRIDE if override else 0)
    icmp = bytearray(struct.pack("!BBHB3x16s", ND_NA, 0, 0, flags, target))
    icmp += _lladdr_option(OPT_TARGET_LLADDR, mac)
    return _packet(target, dst, icmp)


def _options(icmp: memoryview | bytes, at: int, want: int) -> bytes | None:
    """The 6-octet link-layer address of option ``want`` (Ethernet), checking every option's
    length on the way (a zero length would loop forever: RFC 4861 §4.6 says discard)."""
    found = None
    for _ in range(len(icmp)):
        if at >= len(icmp):
            return found
        if at + 2 > len(icmp):
            raise NdError("bad_nd_option", f"option header cut at octet {at}")
        kind, units = icmp[at], icmp[at + 1]
        if units == 0:
            raise NdError("bad_nd_option", f"option {kind} at octet {at} has length 0")
        if at + 8 * units > len(icmp):
            raise NdError("bad_nd_option", f"option {kind} at octet {at} runs past the end")
        if kind == want and found is None:
            found = bytes(icmp[at + 2:at + 8])
        at += 8 * units
    return found


def parse_nd(packet: bytes | bytearray | memoryview) -> NdMessage:
    """Validate and decode one raw IPv6 packet holding an ND message (:func:`is_nd` true);
    raise :class:`NdError` for anything RFC 4861 says to discard."""
    p = memoryview(packet)
    if len(p) < 40 or p[0] >> 4 != 6:
        raise NdError("bad_nd", "not an IPv6 packet")
    _, plen, nh, hops, src, dst = _IP6.unpack_from(p)
    if nh != ICMPV6:
        raise NdError("bad_nd", f"next header {nh}, not ICMPv6")
    if plen > len(p) - 40:
        raise NdError("bad_nd", f"payload length {plen} but {len(p) - 40} octets follow")
    icmp = p[40:40 + plen]
    if len(icmp) < 4 or icmp[0] not in ND_TYPES:
        raise NdError("bad_nd", "not a Neighbor Discovery message")
    kind = icmp[0]
    if hops != HOP_LIMIT:
        raise NdError("bad_nd_hop_limit", f"hop limit {hops}, not 255: it crossed a router")
    if icmp[1] != 0:
        raise NdError("bad_nd", f"code {icmp[1]}, not 0")
    if len(icmp) < _MIN_LEN[kind]:
        raise NdError("bad_nd", f"{len(icmp)} octets, type {kind} needs {_MIN_LEN[kind]}")
    if icmpv6_checksum(src, dst, icmp) != 0:
        raise NdError("bad_nd_checksum", "ICMPv6 checksum does not verify")
    if kind not in (ND_NS, ND_NA):
        return NdMessage(kind, src, dst)
    target = bytes(icmp[8:24])
    if target[0] == 0xFF:
        raise NdError("bad_nd", f"target {_text(target)} is multicast")
    lladdr = _options(icmp, 24, OPT_SOURCE_LLADDR if kind == ND_NS else OPT_TARGET_LLADDR)
    if kind == ND_NS:
        if src == UNSPECIFIED and (dst[:13] != solicited_node(target)[:13] or lladdr):
            raise NdError("bad_nd", "solicitation from :: not to a solicited-node group or "
                          "with a source link-layer option")
        return NdMessage(kind, src, dst, target, lladdr)
    flags = icmp[4]
    if dst[0] == 0xFF and flags & NA_SOLICITED:
        raise NdError("bad_nd", "solicited advertisement to a multicast address")
    return NdMessage(kind, src, dst, target, lladdr, flags)


def _text(addr: bytes) -> str:
    return str(ipaddress.IPv6Address(addr))

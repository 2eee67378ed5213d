"""The raw-socket driver: moves Ethernet frames between two interfaces and the sans-I/O core.

One AF_PACKET socket per leg (``client`` and ``server``), one thread, one ``poll``. The driver
owns only what the core cannot see: Ethernet framing, neighbour resolution (ARP for IPv4, and
Neighbor Discovery for IPv6 through :mod:`reference.gateway.neighbor6`: answering for the
gateway's addresses and VIPs, resolving next hops with the same bounded queue and retries),
the socket options that make a veth's offloads safe, the clock and the signals. Every TCP
decision stays in :class:`~reference.gateway.gateway.Gateway`, for IPv4 (EtherType 0x0800)
and IPv6 (0x86DD) alike.

The addresses a leg answers for: the config's own address of that side (``client_address``;
``server_address`` and ``server_address6``), the interface's addresses (its primary IPv4
address, every IPv6 address in ``/proc/net/if_inet6``) and, on the client leg, every VIP.

Why ``PACKET_VNET_HDR`` by default: veths leave TX checksum offload and TSO on, so the peers'
frames arrive with CHECKSUM_PARTIAL TCP checksums (the field holds only the pseudo-header sum)
and as GSO super-frames of up to 64 KiB. The virtio_net_hdr in front of each frame says so;
the driver completes a partial checksum in place (the core's incremental rewrites need a real
one), except on packets longer than both MTUs, whose field ``_gso`` overwrites on the way out
anyway, and hands the super-frame over whole, so the peer's kernel segments nothing and one
receive carries ~40 frames' worth of payload. Without it (``vnet_hdr=False``) the lab's veth
offloads must be off (``Lab.set_offload(False)``), which caps bulk transfers at the driver's
frames/s (perf-probe: ~31 MB/s against ~840 MB/s). Emitted packets carry valid checksums and
leave with an all-zero header, except those longer than the interface MTU: the core cuts a
super-frame to the peer's MSS without subtracting TCP options (1460 + 12 bytes of timestamps
make 1512-byte packets), so those go out as GSO frames and the kernel finishes the cut.

Keeping the gateway's own kernel out is the namespace's job (the lab's netdev ingress drop);
AF_PACKET taps still see every frame. ``PACKET_IGNORE_OUTGOING`` hides our own sends.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reference.gateway._checksum import Buffer
from reference.gateway.actions import Action, Emit, Leg
from reference.gateway.codec import internet_checksum
from reference.gateway.gateway import Gateway
from reference.gateway.neighbor6 import (
    ALL_NODES,
    ICMPV6,
    ND_NA,
    ND_NS,
    ND_TYPES,
    UNSPECIFIED,
    NdError,
    build_na,
    build_ns,
    multicast_mac,
    parse_nd,
    solicited_node,
)

ETH_P_ALL, ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0003, 0x0800, 0x0806, 0x86DD
SOL_PACKET, PACKET_STATISTICS, PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING = 263, 6, 15, 23
VNET = struct.Struct("=BBHHHH")
"""struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (host
order, which is what packet sockets use on little-endian machines)."""
VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID = 1, 2
GSO_TCPV4, GSO_TCPV6 = 1, 4
VNET_ZERO = bytes(VNET.size)
SIOCGIFADDR, SIOCGIFMTU = 0x8915, 0x8921
CLONE_NEWNET = 0x40000000
MAX_FRAME = VNET.size + 14 + 65535
BATCH = 64
"""Frames read from one socket per wake-up, so one busy leg cannot starve the other."""
SOCKET_BUFFER = 16 << 20
ARP_QUEUE, ARP_PENDING, ARP_TRIES, ARP_RETRY = 8, 256, 3, 1.0
"""Packets queued per unresolved address, unresolved addresses, requests sent, seconds apart.
IPv6 uses the same bounds: RFC 4861 §10 also sends 3 solicitations (MAX_MULTICAST_SOLICIT),
1 s apart (RETRANS_TIMER)."""
IF_INET6 = "/proc/net/if_inet6"
"""The IPv6 addresses of this network namespace's interfaces (per namespace, like all of
/proc/self/net)."""
NEIGHBOURS = 4096
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")


class DriverError(RuntimeError):
    """The driver cannot run; the message says what to do."""


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def enter_netns(name: str) -> None:
    """Move this process into network namespace ``name`` (``ip netns`` style, /run/netns).

    Python 3.11 has no ``os.setns``, hence libc; only the network namespace changes, so /sys
    still shows the old one (the driver never reads it).
    """
    try:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DriverError(f"network namespace {name!r} does not exist; see `ip netns list`"
                          ) from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise DriverError(f"cannot enter network namespace {name!r}: {os.strerror(err)}; "
                              f"run as root (setns needs CAP_SYS_ADMIN)")
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Pending:
    """Packets waiting for an ARP reply or Neighbor Advertisement (bounded), and when to ask
    again; each packet with its ``Emit.segment_size``."""

    packets: deque[tuple[bytes, int]] = field(default_factory=deque)
    tries: int = 0
    next_try: float = 0.0


@dataclass(slots=True)
class _Port:
    """One leg: its socket, MAC, the IPv4 addresses it answers ARP for, its neighbours (both
    families: 4- and 16-byte keys), and the IPv6 addresses it answers solicitations for
    (``addrs6``, the first being the source of its own solicitations)."""

    leg: Leg
    ifname: str
    sock: socket.socket
    mac: bytes
    addrs: list[bytes]
    mtu: int
    neigh: dict[bytes, bytes] = field(default_factory=dict)
    pending: dict[bytes, _Pending] = field(default_factory=dict)
    kernel_drops: int = 0
    addrs6: list[bytes] = field(default_factory=list)
    frames_in: int = 0
    """Per-frame counters live here as plain ints (the hottest lines of the driver); the
    rest are in ``Driver.counters``; ``stats_json`` shows them together."""
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0


def _counters() -> dict[str, Counter[str]]:
    names = ("arp", "nd", "offload", "drops")
    return {n: Counter() for n in names}


class Driver:
    """Runs ``gateway`` on interfaces ``client_if`` and ``server_if`` of this namespace:
    :meth:`open`, then :meth:`run` (returns on a signal or after ``duration``), then
    :meth:`close`. ``clock`` is the time every ``now`` passed to the core comes from."""

    def __init__(self, gateway: Gateway, client_if: str, server_if: str, *,
                 vnet_hdr: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.gateway, self.vnet_hdr, self.clock = gateway, vnet_hdr, clock
        self.ifnames: dict[Leg, str] = {"client": client_if, "server": server_if}
        self.ports: dict[Leg, _Port] = {}
        self.counters = _counters()
        self._buf = bytearray(MAX_FRAME + 1)
        self._view = memoryview(self._buf)
        self._gso_above = MAX_FRAME
        """IP packets longer than this leave only as GSO frames, on either leg (the larger
        MTU; set by :meth:`open`)."""
        self._stop = self._dump = False

    # ---- setup ------------------------------------------------------------------------------
    def open(self) -> None:
        """Open and bind both sockets; DriverError with the reason (no root, no interface)."""
        cfg = self.gateway.config
        vips = [socket.inet_aton(s.vip) for s in cfg.services if ":" not in s.vip]
        vips6 = [socket.inet_pton(socket.AF_INET6, s.vip) for s in cfg.services if ":" in s.vip]
        mine = [cfg.client_address] if cfg.client_address else []
        own = {"client": [a for a in mine if ":" not in a], "server": [cfg.server_address]}
        own6 = {"client": [a for a in mine if ":" in a],
                "server": [cfg.server_address6] if cfg.server_address6 else []}
        try:
            for leg, ifname in self.ifnames.items():
                sock = self._socket(ifname)
                self.ports[leg] = _Port(leg, ifname, sock, sock.getsockname()[4], [],
                                        _if_mtu(ifname))
                addrs = [socket.inet_aton(a) for a in own[leg]]
                addrs += [a for a in (_if_addr(ifname), *(vips if leg == "client" else ()))
                          if a is not None and a not in addrs]
                self.ports[leg].addrs = addrs
                # The source of our solicitations comes first: the configured address, else
                # the interface's (global before link-local), a VIP only as a last resort.
                addrs6 = [socket.inet_pton(socket.AF_INET6, a) for a in own6[leg]]
                for a in (*_if_addrs6(ifname), *(vips6 if leg == "client" else ())):
                    if a not in addrs6:
                        addrs6.append(a)
                self.ports[leg].addrs6 = addrs6
            self._gso_above = max(p.mtu for p in self.ports.values())
        except BaseException:
            self.close()
            raise

    def _socket(self, ifname: str) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise DriverError(f"permission denied opening a raw AF_PACKET socket for {ifname} "
                              f"(uid {os.geteuid()}); run as root (needs CAP_NET_RAW)") from None
        try:
            # Before Linux 4.20 this fails and our own frames come back: harmless, since no
            # frame we send is addressed to our own MAC (the _frame check drops them).
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            if self.vnet_hdr:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            for opt, fallback in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # *FORCE
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, fallback, SOCKET_BUFFER)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise DriverError(f"interface {ifname!r} does not exist in this network "
                                  f"namespace; pass --netns or the right --client-if/--server-if"
                                  ) from None
            raise DriverError(f"cannot set up the socket on {ifname}: {exc}") from None
        return sock

    def close(self) -> None:
        for port in self.ports.values():
            port.sock.close()

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, *, duration: float | None = None, signals: bool = True,
            on_stats: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Serve until SIGINT/SIGTERM (or ``duration`` seconds); SIGUSR1 calls ``on_stats``.

        Signal handlers only set flags; ``set_wakeup_fd`` wakes the poll so they act at once.
        """
        rfd, wfd = os.pipe()
        for fd in (rfd, wfd):
            os.set_blocking(fd, False)
        saved: dict[int, Any] = {}
        old_wakeup = -1
        if signals:
            old_wakeup = signal.set_wakeup_fd(wfd)
            for sig, fn in ((signal.SIGINT, self.stop), (signal.SIGTERM, self.stop),
                            (signal.SIGUSR1, self._request_dump)):
                saved[sig] = signal.signal(sig, lambda _s, _f, fn=fn: fn())
        poller = select.poll()
        by_fd = {p.sock.fileno(): p for p in self.ports.values()}
        for fd in (*by_fd, rfd):
            poller.register(fd, select.POLLIN)
        end = None if duration is None else self.clock() + duration
        try:
            while not self._stop:
                now = self.clock()
                if end is not None and now >= end:
                    break
                due = [t for t in (self.gateway.next_deadline(), self._arp_due(), end)
                       if t is not None]
                wait = min(1.0, max(0.0, min(due) - now)) if due else 1.0
                for fd, _ in poller.poll(math.ceil(wait * 1000)):
                    if fd == rfd:
                        with contextlib.suppress(OSError):
                            os.read(rfd, 512)
                    else:
                        self._drain(by_fd[fd])
                now = self.clock()
                deadline = self.gateway.next_deadline()
                if deadline is not None and now >= deadline - 0.001:
                    self._apply(self.gateway.handle_timer(now=max(now, deadline)), now)
                self._arp_tick(now)
                if self._dump:
                    self._dump = False
                    (on_stats or _print_stats)(self.stats_json())
        finally:
            if signals:
                signal.set_wakeup_fd(old_wakeup)
                for sig, old in saved.items():
                    signal.signal(sig, old)
            os.close(rfd)
            os.close(wfd)

    def stop(self) -> None:
        self._stop = True

    def _request_dump(self) -> None:
        self._dump = True

    def _drain(self, port: _Port) -> None:
        now = self.clock()
        for _ in range(BATCH):
            try:
                n = port.sock.recv_into(self._buf)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENODEV, errno.ENXIO):
                    raise DriverError(f"interface {port.ifname} went away: {exc}") from None
                self.counters["drops"]["recv_error"] += 1
                return
            self._frame(port, n, now)

    # ---- receive ----------------------------------------------------------------------------
    def _frame(self, port: _Port, n: int, now: float) -> None:
        c, buf, v = self.counters, self._buf, self._view
        leg, e = port.leg, VNET.size if self.vnet_hdr else 0
        port.frames_in += 1
        port.bytes_in += n
        if n < e + 14 or n > MAX_FRAME:
            c["drops"]["bad_length"] += 1
            return
        etype = buf[e + 12] << 8 | buf[e + 13]
        if etype == ETH_P_ARP:
            self._arp(port, bytes(buf[e + 14:n]))
            return
        if etype == ETH_P_IPV6 and n > e + 54 and buf[e + 20] == ICMPV6 and \
                buf[e + 54] in ND_TYPES:
            self._nd(port, n)  # before the MAC check: solicitations go to multicast
            return
        if buf[e:e + 6] != port.mac:
            c["drops"]["not_for_us"] += 1
            return
        ip = e + 14
        if etype == ETH_P_IP and n >= ip + 20:
            src, end = bytes(buf[ip + 12:ip + 16]), ip + (buf[ip + 2] << 8 | buf[ip + 3])
        elif etype == ETH_P_IPV6 and n >= ip + 40:
            src = bytes(buf[ip + 8:ip + 24])
            end = ip + 40 + (buf[ip + 4] << 8 | buf[ip + 5])
        else:
            c["drops"]["not_ip"] += 1
            return
        verified = False
        if e:
            flags, gso, _, _, start, offset = VNET.unpack_from(buf, 0)
            if gso:
                c["offload"]["gso_frames"] += 1
            if flags & VNET_F_NEEDS_CSUM:
                # The field holds the pseudo-header sum: summing from csum_start over the
                # field itself and storing the complement gives the real checksum.
                start, at = e + start, e + start + offset
                if not (ip < start <= at and at + 2 <= end <= n):
                    c["drops"]["bad_vnet_hdr"] += 1
                    return
                c["offload"]["partial_checksums"] += 1
                if end - ip > self._gso_above:
                    # Every packet made of these bytes is longer than both MTUs, so it leaves
                    # through _gso, which overwrites the field with the pseudo-header sum:
                    # completing it here (a sum over ~64 KiB, most of the bulk path's CPU)
                    # would be thrown away. The core rewrites the field incrementally, which
                    # is harmless on any value.
                    c["offload"]["partial_checksums_left"] += 1
                else:
                    buf[at:at + 2] = internet_checksum(v[start:end]).to_bytes(2, "big")
                verified = True
            elif flags & VNET_F_DATA_VALID:
                verified = True
        if port.neigh.get(src) != buf[e + 6:e + 12] and len(port.neigh) < NEIGHBOURS:
            port.neigh[src] = bytes(buf[e + 6:e + 12])
        try:
            packet = v[ip:end] if ip < end <= n else v[ip:n]  # Ethernet padding off
            actions = self.gateway.handle(leg, packet, now=now, checksum_verified=verified)
        except Exception:  # the core promises not to raise; a bug must not stop the gateway
            c["drops"]["core_exception"] += 1
            if c["drops"]["core_exception"] == 1:
                traceback.print_exc()
            return
        self._apply(actions, now)

    def _arp(self, port: _Port, arp: bytes) -> None:
        if len(arp) < _ARP.size:
            self.counters["drops"]["bad_arp"] += 1
            return
        htype, ptype, hlen, plen, op, sha, spa, _, tpa = _ARP.unpack_from(arp)
        if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) or op not in (1, 2):
            self.counters["drops"]["bad_arp"] += 1
            return
        mine = tpa in port.addrs
        if spa != bytes(4) and (mine or spa in port.neigh or spa in port.pending):
            port.neigh[spa] = sha
            self.counters["arp"]["learned"] += 1
            waiting = port.pending.pop(spa, None)
            for packet, seg in waiting.packets if waiting else ():
                self._send(port, sha, packet, seg)
        if op == 1 and mine:
            self._arp_send(port, 2, sha, tpa, sha, spa)
            self.counters["arp"]["replies_sent"] += 1

    def _arp_send(self, port: _Port, op: int, dst: bytes, spa: bytes, tha: bytes,
                  tpa: bytes) -> None:
        body = _ARP.pack(1, ETH_P_IP, 6, 4, op, port.mac, spa, tha, tpa)
        frame = dst + port.mac + ETH_P_ARP.to_bytes(2, "big") + body
        self._tx(port, VNET_ZERO, (frame, bytes(max(0, 60 - len(frame)))))

    def _nd(self, port: _Port, n: int) -> None:
        """One Neighbor Discovery frame (``n`` bytes in the buffer): learn from it as
        :meth:`_arp` does, answer a solicitation for one of ``port.addrs6``."""
        c, buf, e = self.counters, self._buf, VNET.size if self.vnet_hdr else 0
        ip = e + 14
        if e:
            flags, _, _, _, start, offset = VNET.unpack_from(buf, 0)
            if flags & VNET_F_NEEDS_CSUM:  # the kernel checksums ND itself, but be safe
                start, at = e + start, e + start + offset
                end = ip + 40 + (buf[ip + 4] << 8 | buf[ip + 5])
                if not (ip < start <= at and at + 2 <= end <= n):
                    c["drops"]["bad_vnet_hdr"] += 1
                    return
                buf[at:at + 2] = internet_checksum(self._view[start:end]).to_bytes(2, "big")
        try:
            msg = parse_nd(bytes(buf[ip:n]))
        except NdError as exc:
            c["drops"][exc.reason] += 1
            return
        if msg.type not in (ND_NS, ND_NA):
            c["nd"]["ignored"] += 1  # router messages and redirects: we are configured
            return
        assert msg.target is not None
        eth_src = bytes(buf[e + 6:e + 12])
        if msg.type == ND_NS:
            c["nd"]["solicitations_in"] += 1
            mine = msg.target in port.addrs6
            if msg.src != UNSPECIFIED and (mine or msg.src in port.neigh
                                           or msg.src in port.pending):
                self._learn(port, msg.src, msg.lladdr or eth_src)
            if not mine:
                return
            if msg.src == UNSPECIFIED:  # someone's DAD probe for our address: defend it
                dst, mac, solicited = ALL_NODES, multicast_mac(ALL_NODES), False
            else:
                dst, mac, solicited = msg.src, msg.lladdr or eth_src, True
            self._tx(port, VNET_ZERO, (mac + port.mac + ETH_P_IPV6.to_bytes(2, "big") +
                                       build_na(msg.target, dst, port.mac,
                                                solicited=solicited),))
            c["nd"]["replies_sent"] += 1
            return
        c["nd"]["advertisements_in"] += 1
        if msg.target in port.neigh or msg.target in port.pending:
            self._learn(port, msg.target, msg.lladdr or eth_src)

    def _learn(self, port: _Port, addr: bytes, mac: bytes) -> None:
        """``addr`` is at ``mac``: remember it and send what waited for it."""
        port.neigh[addr] = mac
        self.counters["arp" if len(addr) == 4 else "nd"]["learned"] += 1
        waiting = port.pending.pop(addr, None)
        for packet, seg in waiting.packets if waiting else ():
            self._send(port, mac, packet, seg)

    # ---- transmit ---------------------------------------------------------------------------
    def _apply(self, actions: list[Action], now: float) -> None:
        for a in actions:
            if isinstance(a, Emit):
                self._emit(self.ports[a.leg], a.packet, now, a.segment_size)

    def _emit(self, port: _Port, packet: bytes, now: float, seg: int = 0) -> None:
        """Send towards the packet's destination, which must be on-link (no routing table)."""
        v4 = packet[0] >> 4 == 4
        dst = packet[16:20] if v4 else packet[24:40]
        mac = port.neigh.get(dst)
        if mac is not None:
            self._send(port, mac, packet, seg)
        else:
            self._resolve(port, dst, packet, now, seg)

    def _send(self, port: _Port, mac: bytes, packet: bytes, seg: int = 0) -> None:
        vnet = VNET_ZERO
        body: tuple[Buffer, ...] = (packet,)
        if len(packet) > port.mtu:
            gso = _gso(packet, port.mtu, seg) if self.vnet_hdr else None
            if gso is None:
                self.counters["drops"]["oversize"] += 1
                return
            vnet, body = gso
            self.counters["offload"]["gso_sent"] += 1
        etype = b"\x08\x00" if packet[0] >> 4 == 4 else b"\x86\xdd"
        self._tx(port, vnet, (mac + port.mac + etype, *body))

    def _tx(self, port: _Port, vnet: bytes, parts: tuple[Buffer, ...]) -> None:
        """Send one frame given in pieces: ``sendmsg`` gathers them, so a 64 KiB super-frame
        is never copied in Python to put a header in front of it."""
        try:
            port.sock.sendmsg((vnet, *parts) if self.vnet_hdr else parts)
        except OSError as exc:
            self.counters["drops"][f"send:{errno.errorcode.get(exc.errno or 0, exc)}"] += 1
            return
        port.frames_out += 1
        port.bytes_out += sum(map(len, parts))

    def _resolve(self, port: _Port, dst: bytes, packet: bytes, now: float, seg: int = 0
                 ) -> None:
        kind = "arp" if len(dst) == 4 else "nd"
        if kind == "nd" and not port.addrs6:
            # No IPv6 address on this leg: a solicitation from :: would be DAD.
            self.counters["drops"]["nd_unresolved"] += 1
            return
        waiting = port.pending.get(dst)
        if waiting is None:
            if len(port.pending) >= ARP_PENDING:
                self.counters["drops"][f"{kind}_table_full"] += 1
                return
            waiting = port.pending[dst] = _Pending(next_try=now)
            self._arp_tick(now)
        if len(waiting.packets) >= ARP_QUEUE:
            waiting.packets.popleft()
            self.counters["drops"][f"{kind}_queue_full"] += 1
        waiting.packets.append((packet, seg))

    def _arp_tick(self, now: float) -> None:
        """(Re)send due ARP requests and Neighbor Solicitations; give up on an address after
        ARP_TRIES of them."""
        for port in self.ports.values():
            for dst, waiting in list(port.pending.items()):
                if now < waiting.next_try:
                    continue
                kind = "arp" if len(dst) == 4 else "nd"
                if waiting.tries >= ARP_TRIES:
                    del port.pending[dst]
                    self.counters["drops"][f"{kind}_unresolved"] += len(waiting.packets)
                    continue
                if kind == "arp":
                    spa = port.addrs[0] if port.addrs else bytes(4)
                    self._arp_send(port, 1, BROADCAST, spa, bytes(6), dst)
                else:
                    self._tx(port, VNET_ZERO, (multicast_mac(solicited_node(dst)) + port.mac
                                               + ETH_P_IPV6.to_bytes(2, "big")
                                               + build_ns(port.addrs6[0], dst, port.mac),))
                self.counters[kind]["requests_sent"] += 1
                waiting.tries += 1
                waiting.next_try = now + ARP_RETRY

    def _arp_due(self) -> float | None:
        times = [w.next_try for p in self.ports.values() for w in p.pending.values()]
        return min(times) if times else None

    # ---- stats ------------------------------------------------------------------------------
    def stats_json(self) -> dict[str, Any]:
        """The driver's counters (plus the sockets' kernel drops) and the core's stats."""
        driver: dict[str, Any] = {k: dict(v) for k, v in self.counters.items()}
        for name in ("frames_in", "frames_out", "bytes_in", "bytes_out"):
            driver[name] = {p.leg: getattr(p, name) for p in self.ports.values()
                            if getattr(p, name)}
        for port in self.ports.values():
            with contextlib.suppress(OSError):  # PACKET_STATISTICS resets on every read
                port.kernel_drops += struct.unpack(
                    "II", port.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]
        driver["kernel_drops"] = {p.leg: p.kernel_drops for p in self.ports.values()}
        driver["vnet_hdr"] = self.vnet_hdr
        driver["interfaces"] = {p.leg: {"name": p.ifname, "mac": mac_str(p.mac),
                                        "addresses": [socket.inet_ntoa(a) for a in p.addrs],
                                        "addresses6": [socket.inet_ntop(socket.AF_INET6, a)
                                                       for a in p.addrs6],
                                        "neighbours": {socket.inet_ntop(
                                            socket.AF_INET if len(k) == 4 else socket.AF_INET6,
                                            k): mac_str(m) for k, m in p.neigh.items()}}
                                for p in self.ports.values()}
        return {"driver": driver, "gateway": self.gateway.stats_json()}


def _gso(packet: bytes, mtu: int, seg: int = 0
         ) -> tuple[bytes, tuple[Buffer, ...]] | None:
    """A virtio_net_hdr asking the kernel to cut an oversize TCP packet to ``mtu`` (and to
    checksum each piece), and the packet as pieces to send after it, its checksum field
    replaced by the pseudo-header sum that NEEDS_CSUM expects (views, not a copy); None if
    it is not TCP over IPv4/IPv6 without extension headers.
    ``seg`` (the core's ``Emit.segment_size``: the receiver's MSS less this segment's options)
    caps the pieces' payload when it is smaller than what the MTU allows.
    """
    if packet[0] >> 4 == 4:
        ip, kind, proto, addrs = (packet[0] & 15) * 4, GSO_TCPV4, packet[9], packet[12:20]
    else:
        ip, kind, proto, addrs = 40, GSO_TCPV6, packet[6], packet[8:40]
    if proto != 6 or len(packet) < ip + 20:
        return None
    head = ip + (packet[ip + 12] >> 4) * 4
    if mtu - head < 8 or len(packet) <= head:
        return None
    pseudo = int.from_bytes(addrs, "big") + 6 + len(packet) - ip
    field = ((pseudo - 1) % 0xFFFF + 1).to_bytes(2, "big")
    size = min(mtu - head, seg) if seg > 0 else mtu - head
    view = memoryview(packet)
    return (VNET.pack(VNET_F_NEEDS_CSUM, kind, 14 + head, size, 14 + ip, 16),
            (view[:ip + 16], field, view[ip + 18:]))


def _if_mtu(ifname: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        res = fcntl.ioctl(s.fileno(), SIOCGIFMTU, struct.pack("256s", ifname.encode()[:15]))
    return int.from_bytes(res[16:20], sys.byteorder)


def _if_addr(ifname: str) -> bytes | None:
    """The interface's primary IPv4 address (SIOCGIFADDR), None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    return res[20:24]


def _if_addrs6(ifname: str) -> list[bytes]:
    """The interface's IPv6 addresses (``/proc/net/if_inet6``), global scope before the
    rest; [] if it has none or IPv6 is off."""
    found: list[tuple[bool, bytes]] = []
    with contextlib.suppress(OSError), open(IF_INET6) as f:
        for line in f.read().splitlines()[:4096]:
            parts = line.split()
            if len(parts) == 6 and parts[5] == ifname and len(parts[0]) == 32:
                with contextlib.suppress(ValueError):
                    found.append((int(parts[3], 16) != 0, bytes.fromhex(parts[0])))
    return [addr for _, addr in sorted(found, key=lambda f: f[0])]


def _print_stats(stats: dict[str, Any]) -> None:
    print(json.dumps(stats, sort_keys=True), file=sys.stderr, flush=True)

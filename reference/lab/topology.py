"""The lab's topology: client, gateway, switch and server namespaces joined by veth pairs.

::

    <name>-c (client)         <name>-g (gateway)        <name>-sw (switch)  <name>-sK (server K)
    c0 198.51.100.2/24 ====== gc 198.51.100.1/24
    default via .1            gs 203.0.113.1/24 ======= g0 -- br0 -- pK === eth0 203.0.113.1K/24
                                                                          default via .1
                                                                          httpserver :80

``====`` is a veth pair; the servers share one L2 segment, a bridge ``br0`` in a namespace of its
own. Why a switch namespace rather than a bridge in the gateway: the gateway keeps exactly two
plain veth interfaces, ``gc`` and ``gs``, so an AF_PACKET socket on ``gs`` sees the frames as
the servers sent them, and the netdev ingress drop below applies to ``gs`` alone (a bridge port
in the gateway would put the bridge's own forwarding between the servers and the gateway's tap).

Addresses come from :mod:`spec.topology` (TEST-NET only) and MACs are fixed: ``c0``
:data:`~spec.topology.CLIENT_MAC`, ``gc`` :data:`~spec.topology.GW_CLIENT_MAC`, ``gs``
:data:`~spec.topology.GW_SERVER_MAC`, server K ``02:00:00:00:01:KK`` (hex), so a driver and its
pcaps see the same MACs in every run. Server K is 203.0.113.(10 + K): K = 1..3 are
:data:`~spec.topology.SERVER_IPS`. The client and gateway namespaces get ``tcp_tw_reuse=1``
and ports 1024-65535, since connection-per-request runs otherwise run out of ephemeral ports
in TIME_WAIT.

IPv6 (``ipv6=True``; off by default): the client, gateway and server namespaces get IPv6 as
well, on a /64 per leg from :mod:`spec.topology` (documentation prefix 2001:db8::/32): ``c0``
2001:db8:1::2, ``gc`` 2001:db8:1::1, ``gs`` 2001:db8:2::1, server K 2001:db8:2::(10 + K), the
VIP6 2001:db8::10 in a /64 of its own on no link (like the IPv4 VIP, reached through the
default route). Default routes and permanent neighbour entries mirror IPv4. To keep the veths
quiet and the addresses usable at once there is no DAD (``accept_dad=0``, ``nodad``), no
router solicitation and no RA processing; the switch turns MLD snooping off so solicited-node
multicast always reaches its server. Without ``ipv6`` (and always in the switch and
impairment namespaces) IPv6 is disabled, which keeps router solicitations and neighbour
discovery off the veths.

Gateway kernel modes (``gateway_kernel``):

* ``"out"`` (default), for the user-space gateway: an nftables ``netdev`` table in the gateway
  namespace drops every frame at ingress of ``gc`` and ``gs`` (AF_PACKET taps run before that
  hook, so the gateway still sees them; the kernel's IP stack never does, so it sends no RST
  or ICMP of its own), ``ip_forward=0``, the VIP on no interface. The drop also eats ARP (and
  IPv6 neighbour discovery), so the client has a permanent neighbour entry 198.51.100.1 (and
  2001:db8:1::1) -> ``gc``'s MAC and every server 203.0.113.1 (and 2001:db8:2::1) -> ``gs``'s
  MAC; the gateway namespace gets none (the gateway answers for itself).
* ``"routing"``, for kernel baselines (DNAT, HAProxy): no nftables table, ``ip_forward=1`` and
  the VIP 192.0.2.10/32 on the gateway's ``lo`` (with IPv6: IPv6 forwarding on and the VIP6
  2001:db8::10/128 on ``lo`` too); the client then reaches the servers directly through the
  gateway, and whatever listens on the VIP in the gateway namespace.

Offloads stay on (veth defaults): the driver is to use ``PACKET_VNET_HDR``, which carries the
partial checksums and GSO sizes through; :meth:`Lab.set_offload` turns TX checksum, SG, TSO and
GSO off or on for every veth end when a test needs plain frames.

Privilege: named namespaces are bind mounts under /run/netns, which needs CAP_SYS_ADMIN in the
initial user namespace, i.e. root. Without root the lab works only inside one private shell,
``unshare --user --map-root-user --mount --net sh -c 'mount -t tmpfs tmpfs /run && exec
bash'`` (when the kernel allows unprivileged user namespaces): there ``ip netns``, veth,
bridges, nftables and sysctls all work, but the namespaces are visible only to processes
started inside that shell and vanish with it. :class:`Lab` therefore just requires root
(uid 0, which that shell provides) and says so, with what it found, in the error.

Impairment nodes (``impair=True``): a namespace ``<name>-ic`` sits on the client leg
(``c0 === ia [ic] ib === gc``) and ``<name>-is`` on the server leg (``gs === ja [is] jb ===
g0``). In each, :mod:`reference.lab.impair` bridges the two interfaces at L2 through AF_PACKET
sockets (seeded loss, duplication, reordering, delay; see :meth:`Lab.set_impairment`), while an
nftables netdev ingress drop-all keeps the node's own kernel out of the traffic; the node has
no addresses. The end interfaces keep their MACs, so the static neighbour entries still hold.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

from reference.lab._system import (
    SERVER_MODULE,
    LabError,
    alive,
    ip,
    is_missing,
    links,
    need,
    netns_inode,
    netns_names,
    ns_exec,
    own_children,
    remember_child,
    server_processes,
    stop_processes,
    sysctl_get,
    userns_support,
)
from spec.topology import (
    CLIENT_IP,
    CLIENT_IP6,
    CLIENT_MAC,
    GW_CLIENT_IP6,
    GW_CLIENT_MAC,
    GW_SERVER_IP,
    GW_SERVER_IP6,
    GW_SERVER_MAC,
    PREFIX_LEN6,
    SERVER_IPS,
    SERVER_IPS6,
    SERVER_PORT,
    VIP,
    VIP6,
)

GatewayKernel = Literal["out", "routing"]
GATEWAY_KERNELS: tuple[str, ...] = get_args(GatewayKernel)

GW_CLIENT_IP = "198.51.100.1"
"""The gateway's address on the client leg, the client's default route."""
PREFIX_LEN = 24
CLIENT_IF, GW_CLIENT_IF, GW_SERVER_IF, SERVER_IF = "c0", "gc", "gs", "eth0"
BRIDGE, SWITCH_GW_PORT = "br0", "g0"
IMPAIR_CLIENT_IFS, IMPAIR_SERVER_IFS = ("ia", "ib"), ("ja", "jb")
"""The impairment nodes' interfaces: (towards the client side, towards the server side)."""
IMPAIR_MODULE = "reference.lab.impair"
IMPAIR_TABLE = "fastpath_impair"
"""The impairment namespaces' netdev table (ingress drop-all)."""
LEGS = ("client", "server")
LOSS_TABLE = "fastpath_loss"
"""The nftables table of :meth:`Lab.set_loss`."""
NFT_TABLE = "fastpath_lab"
"""The gateway namespace's netdev table (``"out"`` mode)."""
MAX_SERVERS = 64
READY_TIMEOUT = 15.0
"""Seconds for every server of a lab to start listening."""
RUN_DIR = Path(os.environ.get("FASTPATH_LAB_DIR", "/run/fastpath-lab"))
"""Server logs live in RUN_DIR/<name>/ (tmpfs, like /run/netns, so both vanish on reboot)."""
PROJECT_ROOT = Path(__file__).resolve().parents[2]

_NAME = re.compile(r"[a-z][a-z0-9]{0,9}")
"""At most 10 characters, so even ``<name>-s64`` fits the 15 characters of an interface name."""
_ROLE_ALIASES = {"client": "c", "c": "c", "gateway": "g", "g": "g", "switch": "sw", "sw": "sw",
                 "impair_client": "ic", "ic": "ic", "impair_server": "is", "is": "is"}
_ROLE_NAMES = {"c": "client", "g": "gateway", "sw": "switch", "ic": "impair_client",
               "is": "impair_server"}


def server_ip(k: int) -> str:
    """Server K's address: 203.0.113.(10 + K)."""
    addr = str(ipaddress.IPv4Address("203.0.113.10") + k)
    assert k > len(SERVER_IPS) or addr == SERVER_IPS[k - 1]
    return addr


def server_ip6(k: int) -> str:
    """Server K's IPv6 address: 2001:db8:2::(10 + K) written in hex digits as decimal
    (2001:db8:2::11 for K = 1), so it reads like the IPv4 one; K = 1..3 are
    :data:`~spec.topology.SERVER_IPS6`."""
    addr = str(ipaddress.IPv6Address(f"2001:db8:2::{10 + k}"))
    assert k > len(SERVER_IPS6) or addr == SERVER_IPS6[k - 1]
    return addr


def _v6_host(addr: str, dev: str, gateway: str, gateway_mac: str) -> list[str]:
    """``ip -batch`` lines for a host's IPv6 side: its address (no DAD), a default route via
    ``gateway``, and a permanent neighbour entry for it (the gateway namespace's ingress drop
    eats Neighbor Solicitations in ``"out"`` mode, as it eats ARP)."""
    return [f"addr replace {addr}/{PREFIX_LEN6} dev {dev} nodad",
            f"route replace ::/0 via {gateway} dev {dev}",
            f"neigh replace {gateway} lladdr {gateway_mac} dev {dev} nud permanent"]


def server_mac(k: int) -> str:
    return f"02:00:00:00:01:{k:02x}"


def random_name() -> str:
    """``fpl`` + 4 hex digits of the pid + 2 random ones: unique enough for parallel labs."""
    return f"fpl{os.getpid() & 0xFFFF:04x}{secrets.token_hex(1)}"


def privilege_error(detail: str = "") -> LabError:
    """The error for a missing privilege, with what user namespaces offer here."""
    why = f" ({detail})" if detail else ""
    return LabError(f"run as root (network namespaces need CAP_SYS_ADMIN){why}; user "
                    f"namespaces: {userns_support()}")


class Lab:
    """A client, a gateway, a switch and ``servers`` HTTP servers, each in its own network
    namespace ``<name>-c``, ``<name>-g``, ``<name>-sw``, ``<name>-s1`` ... (see the module).

    Two labs with different names coexist: every address repeats, but only inside its own
    namespaces. :meth:`up` is idempotent and converges an existing lab to this object's
    settings; :meth:`down` removes everything and never fails for pieces already gone. As a
    context manager the lab is up inside the block and down after it, also on exceptions.
    ``ipv6=True`` gives client, gateway and servers IPv6 as well (see the module); changing
    it and calling :meth:`up` again converges the lab either way.
    """

    def __init__(self, name: str | None = None, servers: int = 3,
                 gateway_kernel: GatewayKernel = "out", impair: bool = False,
                 ipv6: bool = False) -> None:
        name = random_name() if name is None else name
        if not _NAME.fullmatch(name):
            raise LabError(f"lab name {name!r} is not 1-10 lowercase letters or digits "
                           f"starting with a letter; pick one such as 'lab1'")
        if not 1 <= servers <= MAX_SERVERS:
            raise LabError(f"a lab has 1 to {MAX_SERVERS} servers, not {servers}; "
                           f"pick a number in that range")
        if gateway_kernel not in GATEWAY_KERNELS:
            raise LabError(f"gateway_kernel {gateway_kernel!r} is unknown; use 'out' or "
                           f"'routing'")
        self.name = name
        self.servers = servers
        self.gateway_kernel: GatewayKernel = gateway_kernel
        self.impair = impair
        self.ipv6 = ipv6
        self._impair_procs: dict[str, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return (f"Lab(name={self.name!r}, servers={self.servers}, "
                f"gateway_kernel={self.gateway_kernel!r}, impair={self.impair!r}"
                f"{', ipv6=True' if self.ipv6 else ''})")

    # ----------------------------------------------------------------- names

    @property
    def client_ns(self) -> str:
        return f"{self.name}-c"

    @property
    def gateway_ns(self) -> str:
        return f"{self.name}-g"

    @property
    def switch_ns(self) -> str:
        return f"{self.name}-sw"

    def server_ns(self, k: int) -> str:
        return f"{self.name}-s{k}"

    def impair_ns(self, leg: str) -> str:
        """The impairment namespace of ``leg`` (client or server): ``<name>-ic``/``-is``."""
        if leg not in LEGS:
            raise LabError(f"unknown leg {leg!r}; use 'client' or 'server'")
        return f"{self.name}-i{leg[0]}"

    @property
    def netns(self) -> dict[str, str]:
        """Role -> namespace name: ``client``, ``gateway``, ``switch``, ``s1`` ... ``sN``."""
        roles = {"client": self.client_ns, "gateway": self.gateway_ns, "switch": self.switch_ns}
        if self.impair:
            roles.update({f"impair_{leg}": self.impair_ns(leg) for leg in LEGS})
        roles.update({f"s{k}": self.server_ns(k) for k in range(1, self.servers + 1)})
        return roles

    @property
    def server_addresses(self) -> list[str]:
        return [server_ip(k) for k in range(1, self.servers + 1)]

    @property
    def server_addresses6(self) -> list[str]:
        """The servers' IPv6 addresses (configured only when ``ipv6`` is on)."""
        return [server_ip6(k) for k in range(1, self.servers + 1)]

    @property
    def run_dir(self) -> Path:
        return RUN_DIR / self.name

    def ns(self, role: str) -> str:
        """The namespace of ``role``: client/c, gateway/g, switch/sw, sK, or a full name."""
        if role in _ROLE_ALIASES:
            return f"{self.name}-{_ROLE_ALIASES[role]}"
        if re.fullmatch(r"s[1-9][0-9]*", role):
            return f"{self.name}-{role}"
        if self._ns_pattern().fullmatch(role):
            return role
        raise LabError(f"unknown role {role!r}; use client, gateway, switch, s1..sN or a "
                       f"namespace name starting with {self.name}-")

    def _ns_pattern(self) -> re.Pattern[str]:
        return re.compile(rf"{re.escape(self.name)}-(c|g|sw|ic|is|s[1-9][0-9]*)")

    def existing_namespaces(self) -> list[str]:
        """This lab's namespaces that exist now (whatever ``servers`` says), client first."""
        order = {"c": -5, "ic": -4, "g": -3, "is": -2, "sw": -1}

        def rank(ns: str) -> int:
            tail = ns.rpartition("-")[2]
            return order[tail] if tail in order else int(tail[1:])

        return sorted((ns for ns in netns_names() if self._ns_pattern().fullmatch(ns)), key=rank)

    # ----------------------------------------------------------------- running things

    def _exec_argv(self, role: str, argv: Sequence[str]) -> list[str]:
        return [need("ip"), "netns", "exec", self.ns(role), *argv]

    def run(self, role: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` of ``argv`` inside ``role``'s namespace (``ip netns exec``);
        keyword arguments go to ``subprocess.run``, with a 60 s timeout unless given."""
        kw.setdefault("timeout", 60.0)
        return subprocess.run(self._exec_argv(role, argv), **kw)

    def popen(self, role: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen`` of ``argv`` inside ``role``'s namespace; the caller stops it
        (and must, before :meth:`down`, or the namespace lives on in that process)."""
        return subprocess.Popen(self._exec_argv(role, argv), **kw)

    # ----------------------------------------------------------------- up

    def up(self) -> Lab:
        """Build the lab, or repair and reconfigure an existing one; returns ``self``.

        Each step checks what exists and adds only what is missing, so a second ``up()``
        reuses running servers. On any failure (or Ctrl-C) the lab is taken down before the
        exception propagates, so nothing half-built stays behind.
        """
        if os.geteuid() != 0:
            raise privilege_error(f"uid {os.geteuid()}")
        nft = self.gateway_kernel == "out" or self.impair
        for tool in ("ip", "sysctl", *(("nft",) if nft else ())):
            need(tool)
        try:
            self._namespaces()
            self._sysctls()
            self._wire()
            self._ipv6_interfaces()
            self._configure()
            self._gateway_mode()
            self._impair_mode()
            self._start_servers()
            self._start_impairers()
        except BaseException:
            with contextlib.suppress(Exception):
                self.down()
            raise
        return self

    def _namespaces(self) -> None:
        """Create missing namespaces, remove server namespaces beyond ``servers``."""
        wanted = self.netns.values()
        existing = self.existing_namespaces()
        extra = [ns for ns in existing if ns not in wanted]
        if extra:
            gone = {ns.rpartition("-")[2] for ns in extra}
            stop_processes([p.pid for p in server_processes(self.name) if p.name in gone])
            stop_processes([pid for pid, leg in self.impair_pids().items()
                            if f"i{leg[:1]}" in gone])
            for ns in extra:
                # Namespaces die asynchronously: delete their links (and so the veth peers
                # elsewhere) now, so that _wire() sees the lab as it will be.
                for dev in links(ns):
                    if dev != "lo":
                        ip("link", "del", "dev", dev, ns=ns, check=False)
                ip("netns", "del", ns, check=False)
        for ns in wanted:
            if ns in existing:
                continue
            res = ip("netns", "add", ns, check=False)
            if res.returncode != 0:
                err = res.stderr.strip()
                if "permission denied" in err.lower() or "not permitted" in err.lower():
                    raise privilege_error(f"`ip netns add {ns}`: {err}")
                raise LabError(f"`ip netns add {ns}` failed: {err}; remove whatever holds "
                               f"that name (`ip netns del {ns}`) and retry")

    def _ipv6_roles(self) -> set[str]:
        """Roles whose namespace runs IPv6: client, gateway and servers when ``ipv6`` is on;
        the switch and the impairment nodes only move frames, so theirs stays off."""
        if not self.ipv6:
            return set()
        return {"client", "gateway", *(f"s{k}" for k in range(1, self.servers + 1))}

    def _sysctls(self) -> None:
        quiet = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
        # Usable at once and silent: no DAD (addresses would stay tentative ~1 s and send
        # NS), no router solicitations or advertisements acted on. The defaults apply to
        # the interfaces _wire() creates next; _ipv6_interfaces() then turns IPv6 on for the
        # ones that exist (lo, or a re-used lab's veths) after giving them the same settings.
        v6 = [f"net.ipv6.conf.{c}.{k}=0" for c in ("default", "all")
              for k in ("accept_dad", "accept_ra", "router_solicitations")]
        v6 += ["net.ipv6.conf.default.disable_ipv6=0"]
        ports = ["net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65535"]
        forward = f"net.ipv4.ip_forward={int(self.gateway_kernel == 'routing')}"
        forward6 = f"net.ipv6.conf.all.forwarding={int(self.gateway_kernel == 'routing')}"
        ipv6 = self._ipv6_roles()
        for role, ns in self.netns.items():
            keys = (v6 if role in ipv6 else quiet) + \
                (ports if role in ("client", "gateway") else [])
            keys += [forward] if role == "gateway" else []
            keys += [forward6] if role == "gateway" and self.ipv6 else []
            ns_exec(ns, ["sysctl", "-q", "-e", "-w", *keys])

    def _ipv6_interfaces(self) -> None:
        """The quiet IPv6 settings on every interface that already exists in an IPv6
        namespace (a lab first built without IPv6 keeps its veths; their settings were
        copied from ``default`` when they were created)."""
        for role in sorted(self._ipv6_roles()):
            ns = self.netns[role]
            keys = [f"net.ipv6.conf.{dev}.{k}=0" for dev in links(ns)
                    for k in ("accept_dad", "accept_ra", "router_solicitations",
                              "disable_ipv6")]
            ns_exec(ns, ["sysctl", "-q", "-e", "-w", *keys,
                         "net.ipv6.conf.all.disable_ipv6=0"])

    def _veth(self, have: dict[str, set[str]], a: tuple[str, str, str | None],
              b: tuple[str, str, str | None]) -> None:
        """A veth pair between (namespace, interface, MAC) ``a`` and ``b``, if not there."""
        (ns_a, if_a, mac_a), (ns_b, if_b, mac_b) = a, b
        if if_a in have[ns_a] and if_b in have[ns_b]:
            return
        for ns, ifname in (a[:2], b[:2]):  # a lone end (peer lost): start over
            if ifname in have[ns]:
                ip("link", "del", ifname, ns=ns, check=False)
        mac_args_a = ["address", mac_a] if mac_a else []
        mac_args_b = ["address", mac_b] if mac_b else []
        ip("link", "add", "name", if_a, *mac_args_a, "type", "veth",
           "peer", "name", if_b, *mac_args_b, "netns", ns_b, ns=ns_a)

    def _wire(self) -> None:
        """The veth pairs and the bridge."""
        have = {ns: set(links(ns)) for ns in self.netns.values()}
        c, g, sw = self.client_ns, self.gateway_ns, self.switch_ns
        if self.impair:
            ic, is_ = self.impair_ns("client"), self.impair_ns("server")
            (ia, ib), (ja, jb) = IMPAIR_CLIENT_IFS, IMPAIR_SERVER_IFS
            self._veth(have, (c, CLIENT_IF, CLIENT_MAC), (ic, ia, None))
            self._veth(have, (ic, ib, None), (g, GW_CLIENT_IF, GW_CLIENT_MAC))
            self._veth(have, (g, GW_SERVER_IF, GW_SERVER_MAC), (is_, ja, None))
            self._veth(have, (is_, jb, None), (sw, SWITCH_GW_PORT, None))
        else:
            self._veth(have, (c, CLIENT_IF, CLIENT_MAC), (g, GW_CLIENT_IF, GW_CLIENT_MAC))
            self._veth(have, (g, GW_SERVER_IF, GW_SERVER_MAC), (sw, SWITCH_GW_PORT, None))
        for k in range(1, self.servers + 1):
            self._veth(have, (self.server_ns(k), SERVER_IF, server_mac(k)), (sw, f"p{k}", None))
        if BRIDGE not in have[sw]:
            ip("link", "add", "name", BRIDGE, "type", "bridge", "stp_state", "0", ns=sw)

    def _batch(self, ns: str, lines: list[str]) -> None:
        """Several ``ip`` commands in one process; an error names the failing line."""
        res = ip("-n", ns, "-batch", "-", stdin="\n".join(lines) + "\n", check=False)
        if res.returncode != 0:
            raise LabError(f"configuring namespace {ns} failed: {res.stderr.strip()} "
                           f"(commands: {'; '.join(lines)}); run `fastpath lab down "
                           f"--name {self.name}` and retry")

    def _configure(self) -> None:
        """Links up, addresses, routes and the static neighbours towards the gateway."""
        gw_links = links(self.gateway_ns)
        gc_mac = gw_links.get(GW_CLIENT_IF, {}).get("address", GW_CLIENT_MAC)
        gs_mac = gw_links.get(GW_SERVER_IF, {}).get("address", GW_SERVER_MAC)
        self._batch(self.client_ns, [
            "link set dev lo up", f"link set dev {CLIENT_IF} up",
            f"addr replace {CLIENT_IP}/{PREFIX_LEN} dev {CLIENT_IF}",
            f"route replace default via {GW_CLIENT_IP} dev {CLIENT_IF}",
            f"neigh replace {GW_CLIENT_IP} lladdr {gc_mac} dev {CLIENT_IF} nud permanent",
            *(_v6_host(CLIENT_IP6, CLIENT_IF, GW_CLIENT_IP6, gc_mac) if self.ipv6 else ())])
        gw = ["link set dev lo up", f"link set dev {GW_CLIENT_IF} up",
              f"link set dev {GW_SERVER_IF} up",
              f"addr replace {GW_CLIENT_IP}/{PREFIX_LEN} dev {GW_CLIENT_IF}",
              f"addr replace {GW_SERVER_IP}/{PREFIX_LEN} dev {GW_SERVER_IF}"]
        lo_addrs = {a.get("local") for a in gw_links.get("lo", {}).get("addr_info", [])}
        if self.gateway_kernel == "routing":
            gw.append(f"addr replace {VIP}/32 dev lo")
        elif VIP in lo_addrs:
            gw.append(f"addr del {VIP}/32 dev lo")
        if self.ipv6:
            gw += [f"addr replace {GW_CLIENT_IP6}/{PREFIX_LEN6} dev {GW_CLIENT_IF} nodad",
                   f"addr replace {GW_SERVER_IP6}/{PREFIX_LEN6} dev {GW_SERVER_IF} nodad"]
            if self.gateway_kernel == "routing":
                gw.append(f"addr replace {VIP6}/128 dev lo")
            elif VIP6 in lo_addrs:
                gw.append(f"addr del {VIP6}/128 dev lo")
        self._batch(self.gateway_ns, gw)
        if self.impair:
            for leg, ifs in zip(LEGS, (IMPAIR_CLIENT_IFS, IMPAIR_SERVER_IFS), strict=True):
                self._batch(self.impair_ns(leg), [
                    "link set dev lo up",
                    *(f"link set dev {dev} promisc on up" for dev in ifs)])
        ports = [SWITCH_GW_PORT, *(f"p{k}" for k in range(1, self.servers + 1))]
        # IPv6: no MLD snooping, so a Neighbor Solicitation to a solicited-node group
        # reaches its server whether or not the bridge heard that server's MLD report.
        snoop = [f"link set dev {BRIDGE} type bridge mcast_snooping 0"] if self.ipv6 else []
        self._batch(self.switch_ns, ["link set dev lo up", *snoop, f"link set dev {BRIDGE} up",
                                     *(f"link set dev {p} master {BRIDGE} up" for p in ports)])
        for k in range(1, self.servers + 1):
            self._batch(self.server_ns(k), [
                "link set dev lo up", f"link set dev {SERVER_IF} up",
                f"addr replace {server_ip(k)}/{PREFIX_LEN} dev {SERVER_IF}",
                f"route replace default via {GW_SERVER_IP} dev {SERVER_IF}",
                f"neigh replace {GW_SERVER_IP} lladdr {gs_mac} dev {SERVER_IF} nud permanent",
                *(_v6_host(server_ip6(k), SERVER_IF, GW_SERVER_IP6, gs_mac)
                  if self.ipv6 else ())])

    def _gateway_mode(self) -> None:
        """The nftables ingress drop in ``"out"`` mode, none in ``"routing"`` mode."""
        if self.gateway_kernel == "out":
            chains = "".join(
                f"  chain in_{dev} {{ type filter hook ingress device \"{dev}\" priority 0; "
                f"policy drop; counter; }}\n" for dev in (GW_CLIENT_IF, GW_SERVER_IF))
            # Declaring, deleting and redefining in one transaction makes this idempotent.
            ruleset = (f"table netdev {NFT_TABLE}\ndelete table netdev {NFT_TABLE}\n"
                       f"table netdev {NFT_TABLE} {{\n{chains}}}\n")
            ns_exec(self.gateway_ns, ["nft", "-f", "-"], stdin=ruleset)
        elif shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin"):
            ns_exec(self.gateway_ns, ["nft", "delete", "table", "netdev", NFT_TABLE],
                    check=False)

    def _impair_mode(self) -> None:
        """The impairment namespaces' ingress drop-all: only AF_PACKET sees their frames."""
        if not self.impair:
            return
        for leg, ifs in zip(LEGS, (IMPAIR_CLIENT_IFS, IMPAIR_SERVER_IFS), strict=True):
            chains = "".join(
                f"  chain in_{dev} {{ type filter hook ingress device \"{dev}\" priority 0; "
                f"policy drop; counter; }}\n" for dev in ifs)
            ruleset = (f"table netdev {IMPAIR_TABLE}\ndelete table netdev {IMPAIR_TABLE}\n"
                       f"table netdev {IMPAIR_TABLE} {{\n{chains}}}\n")
            ns_exec(self.impair_ns(leg), ["nft", "-f", "-"], stdin=ruleset)

    # ----------------------------------------------------------------- impairment

    def impair_pids(self) -> dict[int, str]:
        """Live impairment processes of this lab (pid -> leg), found in /proc by their
        ``--lab`` marker, plus the ones this object started."""
        found: dict[int, str] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdecimal():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            except OSError:
                continue
            if "-m" not in argv[:-1] or argv[argv.index("-m") + 1] != IMPAIR_MODULE:
                continue
            opts = {argv[i]: argv[i + 1] for i in range(len(argv) - 1)
                    if argv[i] in ("--lab", "--leg")}
            pid = int(entry.name)
            if opts.get("--lab") == self.name and alive(pid):
                found[pid] = opts.get("--leg", "?")
        for leg, proc in self._impair_procs.items():
            if proc.poll() is None:
                found.setdefault(proc.pid, leg)
        return found

    def _start_impairers(self) -> None:
        """A transparent (unimpaired) node on each leg whose node is not running yet."""
        if not self.impair:
            return
        running = set(self.impair_pids().values())
        for leg in LEGS:
            if leg not in running:
                self.set_impairment(leg)

    def set_impairment(self, leg: str, *, seed: int = 1, loss: float = 0.0,
                       duplicate: float = 0.0, reorder: float = 0.0, delay_ms: float = 0.0,
                       jitter_ms: float = 0.0, reorder_delay_ms: float = 2.0) -> None:
        """(Re)start ``leg``'s impairment node (``"client"`` or ``"server"``) with these
        parameters: per frame, drop with probability ``loss``, send twice with ``duplicate``,
        hold back ``reorder_delay_ms`` with ``reorder``; every frame waits ``delay_ms`` plus
        uniform [0, ``jitter_ms``]. All from ``random.Random(seed)``. Needs ``impair=True``."""
        if not self.impair:
            raise LabError(f"lab {self.name} has no impairment nodes; create it with "
                           f"Lab(..., impair=True) and run up()")
        ns = self.impair_ns(leg)
        for name, p in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise LabError(f"{name} {p} is not a probability in [0, 1]")
        for name, v in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms),
                        ("reorder_delay_ms", reorder_delay_ms)):
            if not 0.0 <= v <= 10_000.0:
                raise LabError(f"{name} {v} is not in [0, 10000] ms")
        if ns not in netns_names():
            raise LabError(f"namespace {ns} does not exist; run up() first")
        stop_processes([pid for pid, lg in self.impair_pids().items() if lg == leg])
        a, b = IMPAIR_CLIENT_IFS if leg == "client" else IMPAIR_SERVER_IFS
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PROJECT_ROOT),
                                                          env.get("PYTHONPATH"))))
        argv = [sys.executable, "-m", IMPAIR_MODULE, "--a", a, "--b", b, "--seed", str(seed),
                "--loss", repr(float(loss)), "--duplicate", repr(float(duplicate)),
                "--reorder", repr(float(reorder)), "--delay", repr(float(delay_ms)),
                "--jitter", repr(float(jitter_ms)),
                "--reorder-delay", repr(float(reorder_delay_ms)),
                "--lab", self.name, "--leg", leg]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._impair_log(leg)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(self._exec_argv(ns, argv), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=log, env=env,
                                    cwd=PROJECT_ROOT, start_new_session=True)
        remember_child(self.name, proc)
        self._impair_procs[leg] = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline() if ready else b""
        proc.stdout.close()
        if not line.startswith(b"ready"):
            stop_processes([proc.pid])
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] \
                if log_path.exists() else []
            raise LabError(f"impairment node on the {leg} leg ({ns}) did not start: "
                           f"{tail[0] if tail else '(no output)'}; see {log_path}")

    def _impair_log(self, leg: str) -> Path:
        return self.run_dir / f"impair-{leg}.log"

    def impair_counters(self, leg: str, timeout: float = 5.0) -> dict[str, Any]:
        """The counters of ``leg``'s running impairment node (SIGUSR1, then its JSON line):
        ``frames``/``forwarded`` per direction, ``dropped``, ``duplicated``, ``reordered``,
        ``overflow``, ``send_errors``."""
        pids = [pid for pid, lg in self.impair_pids().items() if lg == leg]
        if not pids:
            raise LabError(f"no impairment node runs on the {leg} leg of lab {self.name}")
        log_path = self._impair_log(leg)
        size = log_path.stat().st_size if log_path.exists() else 0
        # `ip netns exec` execs python, so the pid is the node itself.
        os.kill(pids[0], signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with open(log_path, "rb") as f:
                    f.seek(size)
                    new = f.read()
                if new.endswith(b"\n"):
                    for line in reversed(new.decode(errors="replace").splitlines()):
                        if line.startswith("{"):
                            return dict(json.loads(line))
            time.sleep(0.02)
        raise LabError(f"the {leg} leg's impairment node printed no counters within "
                       f"{timeout:g} s; see {log_path}")

    def _start_servers(self) -> None:
        """One httpserver per server namespace; running ones are kept, strays stopped."""
        wanted = {f"s{k}": netns_inode(self.server_ns(k)) for k in range(1, self.servers + 1)}
        keep: dict[str, int] = {}
        strays = []
        for proc in server_processes(self.name):
            if wanted.get(proc.name) == proc.netns_inode and proc.name not in keep:
                keep[proc.name] = proc.pid
            else:
                strays.append(proc.pid)
        stop_processes(strays)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        starting = {k: self._spawn(k) for k in range(1, self.servers + 1)
                    if f"s{k}" not in keep}
        self._await_listening(starting)

    def _spawn(self, k: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PROJECT_ROOT),
                                                          env.get("PYTHONPATH"))))
        argv = [sys.executable, "-m", SERVER_MODULE, "--name", f"s{k}",
                "--port", str(SERVER_PORT), "--lab", self.name]
        with open(self.run_dir / f"s{k}.log", "ab") as log:
            # A new session: the servers outlive `fastpath lab up` and ignore its Ctrl-C.
            proc = subprocess.Popen(self._exec_argv(f"s{k}", argv), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=log, env=env,
                                    cwd=PROJECT_ROOT, start_new_session=True)
        remember_child(self.name, proc)
        return proc

    def _await_listening(self, starting: dict[int, subprocess.Popen[bytes]]) -> None:
        """Wait (at most READY_TIMEOUT s) for each new server's ``listening`` line."""
        deadline = time.monotonic() + READY_TIMEOUT
        pending = {p.stdout.fileno(): (k, p) for k, p in starting.items() if p.stdout}
        seen = {fd: b"" for fd in pending}
        for _ in range(10_000):
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            ready, _, _ = select.select(list(pending), [], [], left)
            for fd in ready:
                k, proc = pending[fd]
                data = os.read(fd, 4096)
                seen[fd] += data
                if b"\n" in seen[fd]:
                    del pending[fd]
                    assert proc.stdout is not None
                    proc.stdout.close()
                elif not data:
                    raise LabError(f"server s{k} in {self.server_ns(k)} exited before "
                                   f"listening: {self._log_tail(k)}; fix that and retry")
        if pending:
            names = ", ".join(f"s{k}" for k, _ in pending.values())
            raise LabError(f"server(s) {names} did not listen within {READY_TIMEOUT:g} s; "
                           f"see the logs in {self.run_dir}")

    def _log_tail(self, k: int) -> str:
        with contextlib.suppress(OSError):
            lines = (self.run_dir / f"s{k}.log").read_text(errors="replace").strip()
            if lines:
                return lines.splitlines()[-1]
        return "(no output)"

    # ----------------------------------------------------------------- down

    def down(self) -> None:
        """Stop this lab's servers and delete its namespaces (and with them every veth and
        the bridge). Idempotent: missing pieces are skipped, only real failures raise."""
        pids = {p.pid for p in server_processes(self.name)} | set(own_children(self.name))
        pids |= set(self.impair_pids())
        survivors = stop_processes(sorted(pids))
        problems = [f"server pid(s) {', '.join(map(str, survivors))} did not stop"] \
            if survivors else []
        for ns in reversed(self.existing_namespaces()):
            res = ip("netns", "del", ns, check=False)
            if res.returncode != 0 and not is_missing(res):
                problems.append(f"`ip netns del {ns}`: {res.stderr.strip()}")
        shutil.rmtree(self.run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # only if no other lab still uses it
            self.run_dir.parent.rmdir()
        if problems:
            if os.geteuid() != 0:
                raise privilege_error("; ".join(problems))
            raise LabError(f"lab {self.name} was not fully removed ({'; '.join(problems)}); "
                           f"retry `fastpath lab down --name {self.name}`")

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    # ----------------------------------------------------------------- offloads

    def veth_ends(self) -> list[tuple[str, str]]:
        """Every (namespace, interface) that is an end of one of the lab's veth pairs."""
        ends = [(self.client_ns, CLIENT_IF), (self.gateway_ns, GW_CLIENT_IF),
                (self.gateway_ns, GW_SERVER_IF), (self.switch_ns, SWITCH_GW_PORT)]
        if self.impair:
            ends += [(self.impair_ns("client"), dev) for dev in IMPAIR_CLIENT_IFS]
            ends += [(self.impair_ns("server"), dev) for dev in IMPAIR_SERVER_IFS]
        for k in range(1, self.servers + 1):
            ends += [(self.switch_ns, f"p{k}"), (self.server_ns(k), SERVER_IF)]
        return ends

    def set_offload(self, on: bool) -> None:
        """TX checksum, scatter-gather, TSO and GSO on or off on every veth end (ethtool -K).

        On (the default) the gateway must use PACKET_VNET_HDR: frames then carry partial
        checksums and may be up to 64 KiB. Off, every frame is complete and at most one MTU,
        at a large cost in bulk throughput.
        """
        need("ethtool")
        state = "on" if on else "off"
        for ns, ifname in self.veth_ends():
            ns_exec(ns, ["ethtool", "-K", ifname, "tx", state, "sg", state, "tso", state,
                         "gso", state])

    def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % of the frames in each direction on both legs (0 removes it).

        This kernel has no netem, so loss is an nftables ``numgen`` drop on the outer end of
        each leg: the client's veth (both directions of the client leg) and the switch's port
        towards the gateway (both directions of the server leg). The gateway namespace is not
        touched, so the user-space gateway sees exactly what the wire delivers. With offloads
        on, one dropped frame can be a whole GSO super-frame (up to 64 KiB of segments).
        """
        if not 0 <= percent < 100:
            raise LabError(f"loss {percent}% is not in [0, 100)")
        need("nft")
        for ns, dev in ((self.client_ns, CLIENT_IF), (self.switch_ns, SWITCH_GW_PORT)):
            reset = f"table netdev {LOSS_TABLE}\ndelete table netdev {LOSS_TABLE}\n"
            if percent == 0:
                ns_exec(ns, ["nft", "-f", "-"], stdin=reset)
                continue
            cut = round(percent * 100)
            chains = "".join(
                f"  chain {hook} {{ type filter hook {hook} device \"{dev}\" priority 0; "
                f"numgen random mod 10000 < {cut} counter drop; }}\n"
                for hook in ("ingress", "egress"))
            ns_exec(ns, ["nft", "-f", "-"],
                    stdin=reset + f"table netdev {LOSS_TABLE} {{\n{chains}}}\n")

    def loss_drops(self) -> int:
        """Frames dropped so far by :meth:`set_loss` (both legs, both directions)."""
        total = 0
        for ns in (self.client_ns, self.switch_ns):
            res = ns_exec(ns, ["nft", "list", "table", "netdev", LOSS_TABLE], check=False)
            total += sum(int(m) for m in re.findall(r"counter packets (\d+)", res.stdout or ""))
        return total

    # ----------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """What exists now (JSON-able): namespaces with interfaces and addresses, the
        gateway's kernel mode, and each server process. Reads the system, so it also
        describes a lab that another process brought up with other settings."""
        existing = self.existing_namespaces()
        if existing and os.geteuid() != 0:
            raise privilege_error("reading the lab's namespaces")
        namespaces: dict[str, Any] = {}
        for ns in existing:
            role = ns[len(self.name) + 1:]
            role = _ROLE_NAMES.get(role, role)
            namespaces[role] = {"netns": ns, "interfaces": {
                name: {"mac": info.get("address"), "state": info.get("operstate"),
                       "addresses": [f"{a['local']}/{a['prefixlen']}"
                                     for a in info.get("addr_info", [])]}
                for name, info in links(ns).items()}}

        def has(role: str, addr: str) -> bool:
            return any(a.partition("/")[0] == addr
                       for ifc in namespaces.get(role, {}).get("interfaces", {}).values()
                       for a in ifc["addresses"])

        servers = []
        procs = server_processes(self.name)
        for ns in existing:
            tail = ns.rpartition("-")[2]
            if not re.fullmatch(r"s[0-9]+", tail):
                continue
            k = int(tail[1:])
            ino = netns_inode(ns)
            mine = [p.pid for p in procs if p.name == tail and p.netns_inode == ino]
            servers.append({"name": tail, "netns": ns, "address": server_ip(k),
                            "address6": server_ip6(k) if has(tail, server_ip6(k)) else None,
                            "port": SERVER_PORT, "pid": mine[0] if mine else None,
                            "alive": bool(mine) and alive(mine[0]),
                            "log": str(self.run_dir / f"{tail}.log")})
        gateway = self._gateway_status() if self.gateway_ns in existing else None
        core = all(ns in existing for ns in (self.client_ns, self.gateway_ns, self.switch_ns))
        return {"name": self.name, "exists": bool(existing),
                "up": core and bool(servers) and all(s["alive"] for s in servers),
                "gateway_kernel": gateway["mode"] if gateway else None,
                "namespaces": namespaces, "gateway": gateway, "servers": servers,
                "vip": f"{VIP}:80",
                "vip6": f"[{VIP6}]:80" if has("client", CLIENT_IP6) else None}

    def _gateway_status(self) -> dict[str, Any]:
        forward = sysctl_get(self.gateway_ns, "net.ipv4.ip_forward")
        drops: dict[str, int] | None = None
        if shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin"):
            res = ns_exec(self.gateway_ns, ["nft", "list", "table", "netdev", NFT_TABLE],
                          check=False)
            if res.returncode == 0:
                drops = {m[0]: int(m[1]) for m in re.findall(
                    r"chain in_(\w+) \{.*?counter packets (\d+)", res.stdout, re.S)}
        lo = links(self.gateway_ns).get("lo", {}).get("addr_info", [])
        mode = "out" if drops is not None else "routing" if forward == "1" else "unknown"
        forward6 = sysctl_get(self.gateway_ns, "net.ipv6.conf.all.forwarding")
        return {"mode": mode, "ip_forward": forward == "1" if forward else None,
                "ingress_drop_packets": drops,
                "vip_on_lo": any(a.get("local") == VIP for a in lo),
                "ipv6_forwarding": forward6 == "1" if forward6 else None,
                "vip6_on_lo": any(a.get("local") == VIP6 for a in lo)}

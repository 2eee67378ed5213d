"""The fixed addresses of the two legs, shared by the model, the gateway, traces and tests.

All from the documentation ranges (RFC 5737 TEST-NET, locally administered MACs) so that a
trace or pcap can never be mistaken for, or leak, real traffic.
"""

from __future__ import annotations

CLIENT_IP = "198.51.100.2"
"""The client (TEST-NET-2)."""
CLIENT_PORT = 40000
"""The client's ephemeral port."""
VIP = "192.0.2.10"
"""The service address the client connects to, owned by the gateway (TEST-NET-1)."""
VPORT = 80
"""The service port on the VIP."""
GW_SERVER_IP = "203.0.113.1"
"""The gateway's source address towards servers (TEST-NET-3)."""
GW_SERVER_PORT = 40000
"""The gateway's source port towards servers."""
SERVER_IPS = ("203.0.113.11", "203.0.113.12", "203.0.113.13")
"""The back-end servers (TEST-NET-3)."""
SERVER_PORT = 80
"""The port every server listens on."""

CLIENT_MAC = "02:00:00:00:00:01"
"""The client's NIC."""
GW_CLIENT_MAC = "02:00:00:00:00:02"
"""The gateway's client-side NIC."""
GW_SERVER_MAC = "02:00:00:00:00:03"
"""The gateway's server-side NIC."""
SERVER_MAC = "02:00:00:00:00:04"
"""The servers' NIC (next hop on the server leg)."""

# IPv6 (RFC 3849 documentation prefix 2001:db8::/32). Each IPv4 network has a /64 of its own,
# numbered as the scenarios' IPv6 config already is (reference/gateway/scenarios.py), so
# simulated and lab traces carry the same addresses.
CLIENT_IP6 = "2001:db8:1::2"
"""The client, on the client leg's /64 2001:db8:1::/64 (the IPv6 twin of 198.51.100.0/24)."""
GW_CLIENT_IP6 = "2001:db8:1::1"
"""The gateway on the client leg, the client's IPv6 default route."""
VIP6 = "2001:db8::10"
"""The IPv6 service address, owned by the gateway; its /64 (2001:db8::/64) is on no link, so
like the IPv4 VIP the client reaches it only through its default route."""
GW_SERVER_IP6 = "2001:db8:2::1"
"""The gateway's IPv6 source towards servers, on the server leg's /64 2001:db8:2::/64."""
SERVER_IPS6 = ("2001:db8:2::11", "2001:db8:2::12", "2001:db8:2::13")
"""The back-end servers over IPv6, one per entry of :data:`SERVER_IPS`, in the same order."""
PREFIX_LEN6 = 64
"""Prefix length of the two IPv6 legs."""

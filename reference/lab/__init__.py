"""The network-namespace lab: a client, the gateway, a switch and HTTP servers, each in its own
network namespace on TEST-NET addresses, for running the real gateway against real TCP stacks.

``with Lab() as lab:`` builds it and removes it afterwards; ``fastpath lab up|down|status``
does the same from the shell. :mod:`reference.lab.topology` describes the topology, the
gateway kernel modes and why root is needed; :mod:`reference.lab.httpserver` the servers.
"""

from reference.lab._system import LabError
from reference.lab.topology import GATEWAY_KERNELS, GatewayKernel, Lab

__all__ = ["GATEWAY_KERNELS", "GatewayKernel", "Lab", "LabError"]

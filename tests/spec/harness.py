"""An in-memory system for the model: virtual client, gateway model, virtual server and four
one-way links (client->gateway, gateway->client, gateway->server, server->gateway).

Links hold segments in flight; tests deliver any of them (reordering), deliver a copy
(duplication) or drop one (loss). Time is simulated: it only moves when a test says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spec.models import Emitted, FastPathModel, TcpPeer
from spec.records import Owner
from spec.segment import RST, SYN, Segment

LINKS = ("c2g", "g2c", "g2s", "s2g")


@dataclass
class System:
    client: TcpPeer
    server: TcpPeer
    gw: FastPathModel
    request: bytes
    response: bytes
    now: float = 0.0
    links: dict[str, list[Segment]] = field(default_factory=lambda: {k: [] for k in LINKS})
    synacks_to_client: list[int] = field(default_factory=list)
    rsts_to_client: int = 0
    owners: list[Owner] = field(default_factory=list)

    @classmethod
    def start(cls, *, client_iss: int, server_iss: int, gw_isn_client: int,
              gw_isn_server: int, client_mss: int, request: bytes, response: bytes) -> System:
        client = TcpPeer(iss=client_iss, mss=client_mss)
        client.outgoing += request
        server = TcpPeer(iss=server_iss)
        server.outgoing += response
        sysm = cls(client, server, FastPathModel(gw_isn_client, gw_isn_server), request,
                   response)
        sysm.links["c2g"] += client.connect(0.0)
        sysm.owners.append(sysm.gw.owner)
        return sysm

    def in_flight(self) -> list[tuple[str, int]]:
        return [(k, i) for k in LINKS for i in range(len(self.links[k]))]

    def _from_gateway(self, out: Emitted) -> None:
        self.links["g2c"] += out.to_client
        self.links["g2s"] += out.to_server

    def deliver(self, link: str, i: int, *, keep: bool = False, fragment: bool = False) -> None:
        seg = self.links[link][i] if keep else self.links[link].pop(i)
        if link == "c2g":
            self._from_gateway(self.gw.from_client(seg, self.now, fragment=fragment))
        elif link == "s2g":
            self._from_gateway(self.gw.from_server(seg, self.now))
        elif link == "g2c":
            if seg.flags & SYN:
                self.synacks_to_client.append(seg.seq)
            if seg.flags & RST:
                self.rsts_to_client += 1
            self.links["c2g"] += self.client.on_segment(seg, self.now)
        else:
            self.links["s2g"] += self.server.on_segment(seg, self.now)
        self.owners.append(self.gw.owner)

    def drop(self, link: str, i: int) -> None:
        self.links[link].pop(i)

    def next_deadline(self) -> float | None:
        times = [t for t in (self.client.timer, self.server.timer, self.gw.next_deadline())
                 if t is not None]
        return min(times) if times else None

    def tick(self) -> None:
        """Jump to the earliest deadline and fire every timer due."""
        d = self.next_deadline()
        if d is None:
            return
        self.now = max(self.now, d)
        self.links["c2g"] += self.client.on_timer(self.now)
        self.links["s2g"] += self.server.on_timer(self.now)
        self._from_gateway(self.gw.on_timer(self.now))
        self.owners.append(self.gw.owner)

    def run_until_quiet(self, max_events: int = 20_000) -> None:
        """Deliver everything in order, firing timers when idle, until nothing moves
        (bounded: it stops after ``max_events`` deliveries whatever happens)."""
        for _ in range(max_events):
            flight = self.in_flight()
            if flight:
                self.deliver(*flight[0])
            elif self.next_deadline() is not None:
                self.tick()
            else:
                return

    def done(self) -> bool:
        return (bytes(self.server.received) == self.request
                and bytes(self.client.received) == self.response)

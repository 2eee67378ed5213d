"""Tests of the conformance suite; ``Trace`` crafts one-connection captures for them."""

from __future__ import annotations

from pathlib import Path

from conformance.pcapio import write_pcap
from reference.gateway import codec

ETH_V4 = bytes.fromhex("020000000002" "020000000001" "0800")
ETH_V6 = bytes.fromhex("020000000002" "020000000001" "86dd")
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class Trace:
    """Frames of one connection on one leg, written with relative sequence numbers.

    ``c``/``s`` add a segment from the client/server; ``seq``/``ack`` are relative to the
    sender's/receiver's ISN (0 is the SYN), so tests read like packetdrill scripts.
    """

    def __init__(self, *, v6: bool = False, isn_c: int = 1000, isn_s: int = 5000,
                 ts: bool = True, sack: bool = True, ws: int | None = 7,
                 mss_c: int | None = 1460, mss_s: int | None = 1460,
                 cport: int = 40000) -> None:
        self.v6 = v6
        self.ca = codec.addr_bytes("2001:db8:1::2" if v6 else "198.51.100.2")
        self.sa = codec.addr_bytes("2001:db8::10" if v6 else "192.0.2.10")
        self.cport, self.sport = cport, 80
        self.isn_c, self.isn_s = isn_c, isn_s
        self.ts, self.sack, self.ws, self.mss_c, self.mss_s = ts, sack, ws, mss_c, mss_s
        self.frames: list[tuple[float, bytes]] = []
        self.tsval = [100, 9000]  # server, client
        self.t = 1_700_000_000.0

    def raw(self, from_client: bool, seq: int, ack: int, flags: int, payload: bytes = b"",
            window: int = 1000, **kw: object) -> bytes:
        src, dst = (self.ca, self.sa) if from_client else (self.sa, self.ca)
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        return codec.build(version=6 if self.v6 else 4, src=src, dst=dst, sport=sp, dport=dp,
                           seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF if flags & ACK else 0,
                           flags=flags, window=window, payload=payload, **kw)  # type: ignore[arg-type]

    def add_raw(self, packet: bytes) -> Trace:
        self.t += 0.001
        self.frames.append((self.t, (ETH_V6 if self.v6 else ETH_V4) + packet))
        return self

    def seg(self, from_client: bool, rseq: int, rack: int, flags: int = ACK,
            payload: bytes = b"", window: int = 1000, ts: bool | None = None,
            tsval: int | None = None, **kw: object) -> Trace:
        isn, peer = (self.isn_c, self.isn_s) if from_client else (self.isn_s, self.isn_c)
        use_ts = self.ts if ts is None else ts
        if use_ts:
            self.tsval[from_client] += 1
            kw.setdefault("tsval", self.tsval[from_client] if tsval is None else tsval)
            kw.setdefault("tsecr", self.tsval[not from_client] if flags & ACK else 0)
        return self.add_raw(self.raw(from_client, isn + rseq, peer + rack, flags, payload,
                                     window, **kw))

    def c(self, rseq: int, rack: int, flags: int = ACK, payload: bytes = b"",
          **kw: object) -> Trace:
        return self.seg(True, rseq, rack, flags, payload, **kw)

    def s(self, rseq: int, rack: int, flags: int = ACK, payload: bytes = b"",
          **kw: object) -> Trace:
        return self.seg(False, rseq, rack, flags, payload, **kw)

    def handshake(self, synack_ack: int = 1) -> Trace:
        self.c(0, 0, SYN, mss=self.mss_c, wscale=self.ws, sack_permitted=self.sack)
        self.s(0, synack_ack, SYN | ACK, mss=self.mss_s, wscale=self.ws,
               sack_permitted=self.sack)
        return self.c(1, 1)

    def conversation(self, request: bytes = b"GET / HTTP/1.1\r\n\r\n",
                     response: bytes = b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 2000) -> Trace:
        """A complete good exchange: handshake, request, response in two segments, FINs."""
        self.handshake()
        q = len(request)
        self.c(1, 1, PSH | ACK, request)
        self.s(1, 1 + q)
        half = len(response) // 2
        self.s(1, 1 + q, ACK, response[:half])
        self.s(1 + half, 1 + q, PSH | ACK, response[half:])
        n = len(response)
        self.c(1 + q, 1 + n)
        self.s(1 + n, 1 + q, FIN | ACK)
        self.c(1 + q, 2 + n, FIN | ACK)
        return self.s(2 + n, 2 + q)

    def write(self, path: Path) -> Path:
        return write_pcap(path, self.frames)

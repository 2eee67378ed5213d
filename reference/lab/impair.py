"""A seeded impairment node: a transparent L2 bridge between two interfaces that drops,
duplicates, reorders and delays frames (this kernel has no netem).

::

    python -m reference.lab.impair --a ia --b ib --seed 1 --loss 0.02 --duplicate 0.01 \\
        --reorder 0.05 --delay 1 --jitter 1

Run inside a namespace whose kernel stays out of the traffic (the lab puts an nftables
netdev ingress drop on both interfaces; AF_PACKET taps see the frames before that hook). Two
AF_PACKET ``SOCK_RAW`` sockets (``ETH_P_ALL``, ``PACKET_IGNORE_OUTGOING``, ``PACKET_VNET_HDR``)
forward every frame a->b and b->a; the virtio-net header is passed on as received, so GSO
super-frames and partial checksums cross untouched. Every decision comes from one
``random.Random(seed)``: drop with probability ``loss``, send twice with ``duplicate``, hold
back by ``reorder-delay`` ms with ``reorder`` (later frames overtake it); every frame waits
``delay`` ms plus uniform ``[0, jitter]`` ms in a time-ordered heap (bounded: frames beyond
``--max-queue`` are dropped and counted as ``overflow``).

Prints ``ready`` on stdout once both sockets are open; SIGUSR1 prints the counters as one
JSON line on stderr; SIGTERM (or SIGINT) prints them too and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import random
import select
import signal
import socket
import sys
import time
from typing import Any

ETH_P_ALL = 0x0003
SOL_PACKET, PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING = 263, 15, 23
MAX_FRAME = 10 + 14 + 65535 + 64
"""virtio-net header + Ethernet header + the largest GSO super-frame, with some slack."""
BATCH = 64
"""Frames read from one socket per wake-up, so neither direction starves the other."""
MAX_WAIT = 0.5
"""Longest poll timeout, so a stop request is never missed for long."""
SOCKET_BUFFER = 4 << 20


def _open(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        sock.bind((ifname, ETH_P_ALL))
    except BaseException:
        sock.close()
        raise
    return sock


class Impairer:
    """The forwarding state: sockets, the random source, the delay heap and the counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.delay = args.delay / 1000.0
        self.jitter = args.jitter / 1000.0
        self.reorder_delay = args.reorder_delay / 1000.0
        self.heap: list[tuple[float, int, int, bytes]] = []
        self.seq = 0
        self.counters: dict[str, Any] = {
            "frames": {"a_to_b": 0, "b_to_a": 0}, "forwarded": {"a_to_b": 0, "b_to_a": 0},
            "dropped": 0, "duplicated": 0, "reordered": 0, "overflow": 0, "send_errors": 0,
            "bytes": 0}
        self.socks: list[socket.socket] = []

    def report(self) -> None:
        line = {"a": self.args.a, "b": self.args.b, "seed": self.args.seed,
                "queued": len(self.heap), **self.counters}
        sys.stderr.write(json.dumps(line) + "\n")
        sys.stderr.flush()

    def _send(self, out: int, frame: bytes) -> None:
        try:
            self.socks[out].send(frame)
            self.counters["forwarded"]["a_to_b" if out == 1 else "b_to_a"] += 1
        except OSError:
            self.counters["send_errors"] += 1

    def _queue(self, due: float, out: int, frame: bytes) -> None:
        if len(self.heap) >= self.args.max_queue:
            self.counters["overflow"] += 1
            return
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, out, frame))

    def handle(self, src: int, frame: bytes, now: float) -> None:
        """One frame received on socket ``src`` (0 = a, 1 = b), leaving on the other."""
        out = 1 - src
        self.counters["frames"]["a_to_b" if src == 0 else "b_to_a"] += 1
        self.counters["bytes"] += len(frame)
        rng = self.rng
        if rng.random() < self.args.loss:
            self.counters["dropped"] += 1
            return
        copies = 1
        if rng.random() < self.args.duplicate:
            self.counters["duplicated"] += 1
            copies = 2
        extra = 0.0
        if rng.random() < self.args.reorder:
            self.counters["reordered"] += 1
            extra = self.reorder_delay
        for _ in range(copies):
            wait = self.delay + (rng.uniform(0.0, self.jitter) if self.jitter else 0.0) + extra
            if wait <= 0.0 and not self.heap:
                self._send(out, frame)
            else:
                self._queue(now + wait, out, frame)

    def flush_due(self, now: float) -> None:
        for _ in range(len(self.heap)):
            if not self.heap or self.heap[0][0] > now:
                break
            _, _, out, frame = heapq.heappop(self.heap)
            self._send(out, frame)

    def run(self, stop: list[bool], usr1: list[bool], wake_fd: int) -> None:
        self.socks = [_open(self.args.a), _open(self.args.b)]
        try:
            print("ready", flush=True)
            poller = select.poll()
            for sock in self.socks:
                poller.register(sock.fileno(), select.POLLIN)
            poller.register(wake_fd, select.POLLIN)
            fd_index = {sock.fileno(): i for i, sock in enumerate(self.socks)}
            deadline = (time.monotonic() + self.args.duration) if self.args.duration else None
            while not stop[0]:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wait = MAX_WAIT
                if self.heap:
                    wait = min(wait, max(0.0, self.heap[0][0] - now))
                events = poller.poll(wait * 1000.0)
                for fd, _ in events:
                    if fd == wake_fd:
                        with contextlib.suppress(OSError):
                            os.read(wake_fd, 512)
                        continue
                    src = fd_index[fd]
                    for _ in range(BATCH):
                        try:
                            frame = self.socks[src].recv(MAX_FRAME, socket.MSG_DONTWAIT)
                        except (BlockingIOError, InterruptedError):
                            break
                        self.handle(src, frame, time.monotonic())
                self.flush_due(time.monotonic())
                if usr1[0]:
                    usr1[0] = False
                    self.report()
        finally:
            for sock in self.socks:
                sock.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def prob(text: str) -> float:
        value = float(text)
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
        return value

    def ms(text: str) -> float:
        value = float(text)
        if not 0.0 <= value <= 10_000.0:
            raise argparse.ArgumentTypeError(f"{text} ms is not in [0, 10000]")
        return value

    p = argparse.ArgumentParser(prog="python -m reference.lab.impair",
                                description="Seeded L2 impairment between two interfaces.")
    p.add_argument("--a", required=True, help="first interface")
    p.add_argument("--b", required=True, help="second interface")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loss", type=prob, default=0.0, help="drop probability per frame")
    p.add_argument("--duplicate", type=prob, default=0.0, help="duplicate probability")
    p.add_argument("--reorder", type=prob, default=0.0, help="hold-back probability")
    p.add_argument("--reorder-delay", type=ms, default=2.0,
                   help="ms a reordered frame is held back (default 2)")
    p.add_argument("--delay", type=ms, default=0.0, help="ms every frame waits")
    p.add_argument("--jitter", type=ms, default=0.0, help="extra uniform [0, jitter] ms")
    p.add_argument("--max-queue", type=int, default=8192,
                   help="frames held at most; beyond it they are dropped (overflow)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="exit after this many seconds (0: until SIGTERM)")
    p.add_argument("--lab", default="", help="marker: the lab this node belongs to")
    p.add_argument("--leg", default="", help="marker: client or server")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop, usr1 = [False], [False]

    def on_stop(_sig: int, _frame: object) -> None:
        stop[0] = True

    def on_usr1(_sig: int, _frame: object) -> None:
        usr1[0] = True

    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_usr1)
    node = Impairer(args)
    try:
        node.run(stop, usr1, rfd)
    except OSError as exc:
        print(f"impair: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.set_wakeup_fd(-1)
        os.close(rfd)
        os.close(wfd)
    node.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())

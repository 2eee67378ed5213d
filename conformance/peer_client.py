"""The conformance suite's Python HTTP client, run as a real kernel TCP peer in the lab's client
namespace: ``python -m conformance.peer_client SPEC_JSON``.

Why not curl for everything: the cases need control over how the bytes reach the socket (a
request cut at chosen offsets with TCP_NODELAY, pipelining, a half-close after the request, an
abortive close with SO_LINGER 0 part way through a response, TCP_MAXSEG). Standard library
only, so it runs with any Python in any namespace. Prints one JSON list: per connection, per
request ``{"status", "server", "length", "sha256", "error"}``; it never raises.

SPEC_JSON: ``{"host", "port", "family", "pause", "timeout", "maxseg", "parallel",
"connections": [{"requests": [{"method", "target", "host", "body", "version", "close"}],
"split_at": [..], "pipeline", "half_close", "abort_after"}]}``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import sys
import threading
import time
from typing import Any

MAX_HEAD = 65536


class _Reader:
    """Buffered reads off a blocking socket with one overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline, self.buf, self.eof = sock, deadline, bytearray(), False

    def _fill(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            self.eof = True
        self.buf += chunk

    def head(self) -> bytes:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if self.eof or len(self.buf) > MAX_HEAD:
                raise ConnectionError(f"connection closed before a response head "
                                      f"({len(self.buf)} bytes)")
            self._fill()
        out = bytes(self.buf[:end + 4])
        del self.buf[:end + 4]
        return out

    def body(self, n: int, digest: Any, stop_after: int | None) -> int:
        got = 0
        while got < n:
            if stop_after is not None and got >= stop_after:
                return got
            if not self.buf:
                if self.eof:
                    raise ConnectionError(f"closed after {got} of {n} body bytes")
                self._fill()
                continue
            take = min(len(self.buf), n - got)
            digest.update(self.buf[:take])
            del self.buf[:take]
            got += take
        return got

    def at_eof(self) -> bool:
        """True when the peer closed with nothing more to read (after the last response)."""
        while not self.buf and not self.eof:
            self._fill()
        return not self.buf


def _request_bytes(r: dict[str, Any], host: str, last: bool) -> bytes:
    close = r.get("close")
    close = last if close is None else close
    lines = [f"{r.get('method', 'GET')} {r['target']} {r.get('version', 'HTTP/1.1')}",
             f"Host: {r.get('host') or host}",
             f"Connection: {'close' if close else 'keep-alive'}"]
    body = b""
    if r.get("body"):
        body = bytes(i % 251 for i in range(int(r["body"])))
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:]
                                                         if h)}
    return status, hdrs


def _connect(spec: dict[str, Any], deadline: float) -> socket.socket:
    family = socket.AF_INET6 if spec.get("family") == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if spec.get("maxseg"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, int(spec["maxseg"]))
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    sock.connect((spec["host"], int(spec["port"])))
    return sock


def run_connection(spec: dict[str, Any], conn: dict[str, Any]) -> list[dict[str, Any]]:
    reqs = conn["requests"]
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + float(spec.get("timeout", 60))
    sock: socket.socket | None = None
    aborted = False
    try:
        sock = _connect(spec, deadline)
        reader = _Reader(sock, deadline)
        host = spec["host"] if spec.get("family") != 6 else f"[{spec['host']}]"
        wires = [_request_bytes(r, host, i == len(reqs) - 1) for i, r in enumerate(reqs)]
        if conn.get("pipeline"):
            sock.sendall(b"".join(wires))
            wires = [b""] * len(wires)
        for i, r in enumerate(reqs):
            data = wires[i]
            cuts = (conn.get("split_at") or []) if i == 0 else []
            start = 0
            for cut in cuts:
                sock.sendall(data[start:cut])
                start = cut
                time.sleep(float(spec.get("pause", 0.2)))
            if data[start:]:
                sock.sendall(data[start:])
            if conn.get("half_close") and i == len(reqs) - 1:
                sock.shutdown(socket.SHUT_WR)
            head = reader.head()
            status, hdrs = _parse_head(head)
            digest = hashlib.sha256()
            n = 0 if r.get("method") == "HEAD" else int(hdrs.get("content-length", "0"))
            stop = conn.get("abort_after")
            got = reader.body(n, digest, stop)
            res: dict[str, Any] = {"target": r["target"], "status": status,
                                   "server": hdrs.get("x-server"), "length": got,
                                   "content_length": n, "sha256": digest.hexdigest()}
            if stop is not None and got < n:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                aborted = True
                res["aborted"] = True
                out.append(res)
                return out
            last = i == len(reqs) - 1
            closing = hdrs.get("connection", "").lower() == "close"
            if last and (closing or r.get("close", True) is not False) and not reader.at_eof():
                res["error"] = "data after the last response"
            out.append(res)
    except (OSError, ValueError, IndexError, ConnectionError, TimeoutError) as exc:
        out += [{"target": r["target"], "error": f"{type(exc).__name__}: {exc}"}
                for r in reqs[len(out):]]
    finally:
        if sock is not None and not aborted:
            sock.close()
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    conns = spec["connections"]
    results: list[list[dict[str, Any]]] = [[] for _ in conns]

    def work(i: int) -> None:
        results[i] = run_connection(spec, conns[i])

    if spec.get("parallel", True):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(conns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for i in range(len(conns)):
            work(i)
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

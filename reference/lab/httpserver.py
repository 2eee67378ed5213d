"""The lab's back-end server: a small HTTP/1.1 origin on asyncio, one process per server
namespace (``python -m reference.lab.httpserver --name s1 --port 80``).

Why not nginx: the body must be the one :func:`reference.gateway.sim.response_body` defines
(every 8-byte block is its own offset in hex), so a client can check any byte of any response
without keeping a copy, and the lab must need nothing beyond Python and iproute2.

Routes (``GET`` and ``HEAD``):

* ``/size/N``: N octets (0 <= N <= :data:`MAX_SIZE`) of that body, streamed in 64 KiB chunks so
  100 MiB costs no more memory than 1 KiB;
* ``/``: one line of text naming the server;
* anything else: 404; other methods: 405.

Every response carries ``X-Server: <name>``, whichever address family the request came over:
on the wildcard ``--host 0.0.0.0`` (the lab's case) the server also listens on ``[::]`` (an
IPv6-only socket, so the IPv4 listener is untouched), and keeps serving IPv4 alone when IPv6
is disabled in its namespace. Keep-alive is the HTTP/1.1 default;
``Connection: close`` (or HTTP/1.0 without ``Connection: keep-alive``) closes after the
response. asyncio keeps thousands of connections on one thread, well above the 200 the
benchmarks use. Once listening, the process prints ``listening HOST:PORT`` on stdout (the lab
waits for that line) and then never writes to stdout again; SIGTERM or SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator

from reference.gateway.sim import response_body

CHUNK = 1 << 16
"""Stream unit. Within a 64 KiB-aligned chunk, offsets differ only in their low 16 bits."""
MAX_SIZE = 1 << 30
"""Largest ``/size/N`` served (1 GiB), far above the 100 MiB the benchmarks need."""
MAX_LINE = 8192
"""Longest request or header line accepted."""
MAX_HEADERS = 100
MAX_BODY = 1 << 20
"""Largest request body read (and discarded); larger ones get 413."""
MAX_REQUESTS = 1_000_000
"""Requests per connection before the server says ``Connection: close`` (a bound, not a limit
any benchmark meets)."""
IDLE_TIMEOUT = 60.0
"""Seconds an idle keep-alive connection may wait for its next request."""

_BLOCKS = CHUNK // 8
_FIRST = response_body(CHUNK)
"""Chunk 0. Chunk k equals it with each block's first four hex digits set to ``k`` (mod 2^16),
since block i of chunk k says ``k * 65536 + 8 * i`` in eight hex digits."""
_FILL = {d: bytes([d]) * _BLOCKS for d in b"0123456789abcdef"}


def body_chunks(n: int) -> Iterator[bytes]:
    """``response_body(n)`` in chunks of at most :data:`CHUNK` octets, without building it.

    Each chunk is chunk 0 with four strided slice assignments, so 100 MiB takes a fraction of
    a second of CPU instead of 13 million string formats.
    """
    if n <= CHUNK:
        if n > 0:
            yield response_body(n)
        return
    buf = bytearray(_FIRST)
    for base in range(0, n, CHUNK):
        high = b"%04x" % ((base >> 16) & 0xFFFF)
        for k in range(4):
            buf[k::8] = _FILL[high[k]]
        yield bytes(buf) if n - base >= CHUNK else bytes(buf[: n - base])


class _BadRequest(Exception):
    """The request cannot be parsed; answer 400 (or ``status``) and close."""

    def __init__(self, status: int = 400) -> None:
        super().__init__(status)
        self.status = status


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Content Too Large", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 505: "HTTP Version Not Supported"}


async def _read_line(reader: asyncio.StreamReader, timeout: float | None) -> bytes:
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.LimitOverrunError:
        raise _BadRequest(431) from None
    if len(line) > MAX_LINE:
        raise _BadRequest(431)
    return line


async def _read_request(reader: asyncio.StreamReader
                        ) -> tuple[str, str, str, dict[str, str]] | None:
    """(method, target, version, headers with lower-case names), or None on a clean EOF or
    idle timeout before a request starts."""
    line = b""
    for _ in range(4):  # RFC 9112 §2.2: ignore at least one empty line before a request
        try:
            line = await _read_line(reader, IDLE_TIMEOUT)
        except (asyncio.IncompleteReadError, TimeoutError):
            return None
        if line.strip():
            break
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise _BadRequest()
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(505 if version.startswith("HTTP/") else 400)
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = await _read_line(reader, IDLE_TIMEOUT)
        if not line.strip():
            return method, target, version, headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest()
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise _BadRequest(431)


def _wants_close(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


def _head(status: int, name: str, length: int, ctype: str, close: bool,
          extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} {_REASONS[status]}\r\nServer: fastpath-lab\r\n"
            f"X-Server: {name}\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n{extra}\r\n").encode()


def _size(target: str) -> int | None:
    """N of ``/size/N`` (query ignored), or None if the target is not of that form."""
    path = target.partition("?")[0]
    if not path.startswith("/size/"):
        return None
    digits = path[len("/size/"):]
    if not digits.isdecimal() or not digits.isascii() or len(digits) > 12:
        return None
    n = int(digits)
    return n if n <= MAX_SIZE else None


class Server:
    """One origin server: its name (for ``X-Server``) and the connection handler."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection until it closes, asks to, or errs."""
        self.connections += 1
        try:
            for count in range(1, MAX_REQUESTS + 1):
                if not await self._one(reader, writer, last=count == MAX_REQUESTS):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   last: bool) -> bool:
        """Answer one request; True to keep the connection open."""
        try:
            request = await _read_request(reader)
            if request is None:
                return False
            method, target, version, headers = request
            close = last or _wants_close(version, headers)
            await self._discard_body(reader, headers)
        except _BadRequest as exc:
            text = f"{exc.status} {_REASONS[exc.status]}\n".encode()
            writer.write(_head(exc.status, self.name, len(text), "text/plain", True) + text)
            await writer.drain()
            return False
        if method not in ("GET", "HEAD"):
            text = b"only GET and HEAD\n"
            writer.write(_head(405, self.name, len(text), "text/plain", close,
                               "Allow: GET, HEAD\r\n") + text)
            await writer.drain()
            return not close
        n = _size(target)
        if n is not None:
            writer.write(_head(200, self.name, n, "application/octet-stream", close))
            chunks: Iterator[bytes] = iter(()) if method == "HEAD" else body_chunks(n)
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
        else:
            status = 200 if target.partition("?")[0] == "/" else 404
            text = (f"fastpath-tcp lab server {self.name}\n" if status == 200
                    else "not found; try /size/N or /\n").encode()
            writer.write(_head(status, self.name, len(text), "text/plain; charset=utf-8",
                               close) + (b"" if method == "HEAD" else text))
        await writer.drain()
        return not close

    @staticmethod
    async def _discard_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
        if "transfer-encoding" in headers:
            raise _BadRequest(501)
        length = headers.get("content-length", "0")
        if not length.isdecimal():
            raise _BadRequest()
        if int(length) > MAX_BODY:
            raise _BadRequest(413)
        if int(length):
            await asyncio.wait_for(reader.readexactly(int(length)), IDLE_TIMEOUT)


def _v6_socket(host6: str, port: int) -> socket.socket:
    """A bound, IPv6-only TCP socket: with IPV6_V6ONLY the IPv4 listener on the same port
    keeps IPv4 to itself, whatever ``net.ipv6.bindv6only`` says."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host6, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve(name: str, host: str, port: int, host6: str | None = None) -> None:
    """Listen (on ``host6`` too if given), announce ``listening HOST:PORT`` on stdout, serve
    until SIGTERM or SIGINT. An IPv6 listener that cannot be set up is reported on stderr
    and skipped: IPv4 is what every lab needs."""
    server = Server(name)
    listener = await asyncio.start_server(server.handle, host, port, backlog=4096,
                                          limit=MAX_LINE * 2, reuse_address=True)
    bound = listener.sockets[0].getsockname()
    listeners = [listener]
    if host6:
        try:
            listeners.append(await asyncio.start_server(
                server.handle, sock=_v6_socket(host6, bound[1]), backlog=4096,
                limit=MAX_LINE * 2))
        except OSError as exc:
            print(f"httpserver {name}: no IPv6 listener on [{host6}]:{bound[1]}: "
                  f"{exc.strerror or exc}", file=sys.stderr, flush=True)
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    # Nothing else goes to stdout: the reader may have closed its end of the pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for one in listeners:
            await stack.enter_async_context(one)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference.lab.httpserver",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="this server's name, sent as X-Server")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    parser.add_argument("--port", type=int, default=80, help="port (80; 0 = any free port)")
    parser.add_argument("--host6", default=None,
                        help="IPv6 address to listen on as well, same port ('' for none; "
                             "default '::' when --host is 0.0.0.0, else none)")
    parser.add_argument("--lab", default="", help="the lab that owns this process (a marker "
                                                  "in the command line, so the lab finds it)")
    args = parser.parse_args(argv)
    try:
        host6 = ("::" if args.host == "0.0.0.0" else "") if args.host6 is None else args.host6
        asyncio.run(serve(args.name, args.host, args.port, host6 or None))
    except OSError as exc:
        print(f"httpserver {args.name}: cannot listen on {args.host}:{args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ready scripts: the stimuli kernels will not produce on demand, one function each.

Every function returns a fresh :class:`~conformance.script.Script`; its ``expects`` says the
least a correct gateway must do for the script to pass (the trace checker judges the rest
from the pcaps). Client-only scripts let the lab's real servers (or the memory channel's
servers) answer ``GET /size/N``; scripts with a scripted server answer with
:func:`~conformance.script.http_response`, so :meth:`Script.expect_http` checks both alike.

``READY`` maps each name to its function (all take ``seed`` and ``family`` keywords).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from conformance.script import (
    Script,
    ScriptError,
    default_addresses,
    http_request,
    http_response,
)

SIZE = 1000
"""Default response size: one segment, so the interesting part is the request side."""


def _request(family: int, size: int, *, close: bool = True) -> bytes:
    return http_request(size, host=default_addresses(family).vip, close=close)


def _open(s: Script, **syn: object) -> None:
    c = s.client
    c.syn(**syn)  # type: ignore[arg-type]
    c.expect_synack(bind="G")
    c.ack()


def _finish_client(s: Script, sizes: list[int]) -> Script:
    """Read the response to the server's FIN, close, and check the bytes."""
    c = s.client
    c.receive(until_fin=True)
    c.fin()
    c.expect_ack()
    s.expect_http(sizes)
    return s


def _serve(s: Script, req: bytes, *, mss: int | None = 1460, wscale: int | None = 7,
           sack: bool = True, ts: bool = True, rst_ok: bool = False) -> None:
    srv = s.server
    srv.expect_syn(bind="GS")
    srv.synack(mss=mss, wscale=wscale, sack=sack, ts=ts)
    srv.expect_request(req, rst_ok=rst_ok)


# --------------------------------------------------------------------------- client only


def get(*, size: int = SIZE, seed: int = 1, family: int = 4) -> Script:
    """Baseline: the whole request in one segment."""
    s = Script("get", seed=seed, family=family,
               expects="the response arrives byte-exact and the connection closes")
    _open(s)
    s.client.send(_request(family, size))
    return _finish_client(s, [size])


def split_request(*, splits: tuple[int, ...] = (9,), size: int = SIZE, seed: int = 1,
                  family: int = 4) -> Script:
    """The request in several segments, cut at the byte offsets ``splits`` (9 cuts
    ``GET /size`` from the rest: no complete request line in the first segment)."""
    s = Script("split-request", seed=seed, family=family,
               expects="the response arrives byte-exact (the request reassembled)")
    _open(s)
    req = _request(family, size)
    cuts = [0, *sorted(splits), len(req)]
    if any(not 0 < c < len(req) for c in splits):
        raise ScriptError(f"split offsets {splits} must lie inside the {len(req)}-byte "
                          "request")
    for a, b in pairwise(cuts):
        s.client.send(req[a:b])
    return _finish_client(s, [size])


def out_of_order_first_data(*, split: int = 9, size: int = SIZE, seed: int = 1,
                            family: int = 4) -> Script:
    """The request's second part arrives before its first (the first data is out of order)."""
    s = Script("out-of-order-first-data", seed=seed, family=family,
               expects="the response arrives byte-exact (the request reordered)")
    _open(s)
    req = _request(family, size)
    s.client.send(req[split:], at=split)
    s.client.send(req[:split], at=0)
    return _finish_client(s, [size])


def overlapping_retransmission(*, first: int = 20, overlap: int = 10, size: int = SIZE,
                               seed: int = 1, family: int = 4) -> Script:
    """The request's first ``first`` bytes, then the rest retransmitted from ``overlap``
    bytes earlier (the overlap must reach the server once)."""
    s = Script("overlapping-retransmission", seed=seed, family=family,
               expects="the response arrives byte-exact (overlap delivered once)")
    _open(s)
    req = _request(family, size)
    s.client.send(req[:first])
    s.client.send(req[first - overlap:], at=first - overlap)
    return _finish_client(s, [size])


def ip_fragments(*, fragment_size: int = 40, size: int = SIZE, seed: int = 1,
                 family: int = 4) -> Script:
    """The request segment as IP fragments of ``fragment_size`` bytes (IPv4 only: the
    reference does not reassemble IPv6 fragments)."""
    if family != 4:
        raise ScriptError("ip_fragments is IPv4 only (IPv6 fragments of TCP are dropped by "
                          "the reference gateway)")
    s = Script("ip-fragments", seed=seed, family=family,
               expects="the response arrives byte-exact (fragments reassembled)")
    _open(s)
    s.client.fragments(_request(family, size), fragment_size)
    return _finish_client(s, [size])


def unsupported_option(*, kind: int = 253, data: bytes = b"\x12\x34", size: int = SIZE,
                       seed: int = 1, family: int = 4) -> Script:
    """The request carries a TCP option the gateway does not know (253: RFC 6994
    experimental, with a 2-byte ExID)."""
    s = Script("unsupported-option", seed=seed, family=family,
               expects="the response arrives byte-exact despite the unknown option")
    _open(s)
    s.client.send(_request(family, size), options=[(kind, data)])
    return _finish_client(s, [size])


def zero_window(*, pause: float = 1.0, size: int = SIZE, seed: int = 1,
                family: int = 4) -> Script:
    """The request goes out with a zero receive window; after ``pause`` s the window
    opens. The response must wait for the window, then arrive."""
    s = Script("zero-window", seed=seed, family=family,
               expects="no data beyond the zero window is needed; after the window opens "
                       "the response arrives byte-exact")
    _open(s)
    s.client.send(_request(family, size), window=0)
    s.client.window(0)
    s.wait(pause)
    s.client.window(262144)
    return _finish_client(s, [size])


def sack_holes(*, size: int = 20000, holes: tuple[int, ...] = (2, 5), seed: int = 1,
               family: int = 4) -> Script:
    """A multi-segment response where the client 'loses' data segments ``holes`` once, so
    its ACKs carry SACK blocks with holes until the sender retransmits."""
    s = Script("sack-holes", seed=seed, family=family,
               expects="the response arrives byte-exact after the holes are retransmitted")
    _open(s)
    s.client.send(_request(family, size))
    s.client.receive(until_fin=True, sack_holes=holes, timeout=10.0)
    s.client.fin()
    s.client.expect_ack()
    s.expect_http([size])
    return s


def keepalive(*, sizes: tuple[int, int] = (SIZE, 2000), seed: int = 1,
              family: int = 4) -> Script:
    """Two requests on one connection (the first keep-alive, the second closes)."""
    s = Script("keep-alive", seed=seed, family=family,
               expects="both responses arrive byte-exact, in order, on one connection")
    _open(s)
    c = s.client
    c.send(_request(family, sizes[0], close=False))
    c.receive(responses=1)
    c.send(_request(family, sizes[1]))
    return _finish_client(s, list(sizes))


def duplicate_syn(*, size: int = SIZE, seed: int = 1, family: int = 4) -> Script:
    """The SYN twice (a retransmission, same ISN) before the handshake completes."""
    s = Script("duplicate-syn", seed=seed, family=family,
               expects="every SYN-ACK carries the same ISN; the response arrives byte-exact")
    c = s.client
    c.syn()
    c.syn()
    c.expect_synack(bind="G")
    c.ack()
    c.send(_request(family, size))
    return _finish_client(s, [size])


def request_with_fin(*, size: int = SIZE, seed: int = 1, family: int = 4) -> Script:
    """The whole request and the client's FIN in one segment."""
    s = Script("request-with-fin", seed=seed, family=family,
               expects="the response arrives byte-exact and the client's FIN is acknowledged")
    _open(s)
    c = s.client
    c.send(_request(family, size), fin=True)
    c.receive(until_fin=True)
    c.expect_ack()
    s.expect_http([size])
    return s


# --------------------------------------------------------------------------- scripted server


def rst_in_window(*, size: int = SIZE, seed: int = 1, family: int = 4) -> Script:
    """After part of the response, the client resets with an exact (RCV.NXT) sequence
    number."""
    s = Script("rst-in-window", seed=seed, family=family,
               expects="the client's RST reaches the server inside the server's window")
    _open(s)
    req = _request(family, size)
    s.client.send(req)
    _serve(s, req)
    resp = http_response(size)
    part = resp.index(b"\r\n\r\n") + 4 + 100  # the head and 100 body bytes: a proxy
    s.server.respond(resp[:part])              # relays nothing before a complete head
    s.client.receive(nbytes=1)
    s.client.rst(in_window=True)
    s.server.respond_if_proxy(resp[part:])
    s.server.expect_rst()
    return s


def rst_out_of_window(*, size: int = SIZE, survive: bool = False, seed: int = 1,
                      family: int = 4) -> Script:
    """The client sends an RST 2^30 beyond its SND.NXT (a blind-reset attempt).

    Minimal (default): the server must not receive an acceptable RST. ``survive=True`` also
    demands the connection outlives it: the server's response then reaches the client.
    """
    s = Script("rst-out-of-window", seed=seed, family=family,
               expects="no acceptable RST reaches the server"
               + ("; the response still arrives byte-exact" if survive else ""))
    _open(s)
    req = _request(family, size)
    s.client.send(req)
    _serve(s, req)
    s.client.rst(in_window=False)
    s.server.expect_no_rst(0.5)
    if not survive:
        s.client.rst(in_window=True)  # tidy up: the script is over
        return s
    s.server.respond(http_response(size), close=True)
    s.client.receive(until_fin=True)
    s.client.fin()
    s.server.expect_fin()
    s.client.expect_ack()
    s.expect_http([size])
    return s


def fin_race(*, size: int = SIZE, seed: int = 1, family: int = 4) -> Script:
    """After the response, client and server send their FINs at the same time (each before
    seeing the other's): a simultaneous close through the gateway."""
    s = Script("fin-race", seed=seed, family=family,
               expects="each side gets the other's FIN and an ACK of its own; the response "
                       "arrives byte-exact")
    _open(s)
    req = _request(family, size)
    resp = http_response(size, close=False)
    c, srv = s.client, s.server
    c.send(req)
    _serve(s, req)
    srv.respond(resp)
    c.receive(responses=1)  # a whole response; a proxy may relay a rewritten head
    c.fin()
    srv.fin()
    srv.expect_fin()
    c.expect_fin()
    c.expect_ack()
    srv.expect_ack()
    s.expect_http([size])
    return s


def server_resets_after_request(*, size: int = SIZE, seed: int = 1,
                                family: int = 4) -> Script:
    """The server takes the request, then resets instead of answering."""
    s = Script("server-resets", seed=seed, family=family,
               expects="the server's RST reaches the client inside the client's window")
    _open(s)
    req = _request(family, size)
    s.client.send(req)
    _serve(s, req)
    s.server.rst()
    s.client.expect_rst()
    return s


def _server_options(name: str, expects: str, *, size: int, seed: int, family: int,
                    wscale: int | None = 7, sack: bool = True, ts: bool = True) -> Script:
    s = Script(name, seed=seed, family=family, expects=expects)
    _open(s)
    req = _request(family, size)
    s.client.send(req)
    _serve(s, req, wscale=wscale, sack=sack, ts=ts, rst_ok=not ts)
    s.server.respond(http_response(size), close=True)
    s.client.receive(until_fin=True, rst_ok=not ts)
    s.client.fin()
    s.server.expect_fin()
    s.client.expect_ack()
    s.server.expect_ack()
    s.expect_http([size])
    return s


def server_window_scale(*, wscale: int = 2, size: int = 30000, seed: int = 1,
                        family: int = 4) -> Script:
    """The server answers with another window scale than the gateway offered the client
    (2 against the client's 7) and sends a multi-segment response."""
    return _server_options("server-window-scale", f"with server window scale {wscale}, the "
                           "response arrives byte-exact", size=size, seed=seed, family=family,
                           wscale=wscale)


def server_no_sack(*, size: int = 30000, seed: int = 1, family: int = 4) -> Script:
    """The server refuses SACK although the client offered it."""
    return _server_options("server-no-sack", "without SACK on the server leg, the response "
                           "arrives byte-exact", size=size, seed=seed, family=family,
                           sack=False)


def server_no_timestamps(*, size: int = SIZE, seed: int = 1, family: int = 4) -> Script:
    """The server refuses timestamps the client offered (and the gateway may have promised)."""
    return _server_options("server-no-timestamps", "either the response arrives byte-exact, "
                           "or the gateway refuses cleanly: an RST to both sides",
                           size=size, seed=seed, family=family, ts=False)


READY: dict[str, Callable[..., Script]] = {
    "get": get,
    "split-request": split_request,
    "out-of-order-first-data": out_of_order_first_data,
    "overlapping-retransmission": overlapping_retransmission,
    "ip-fragments": ip_fragments,
    "unsupported-option": unsupported_option,
    "zero-window": zero_window,
    "rst-in-window": rst_in_window,
    "rst-out-of-window": rst_out_of_window,
    "sack-holes": sack_holes,
    "fin-race": fin_race,
    "keep-alive": keepalive,
    "duplicate-syn": duplicate_syn,
    "server-resets": server_resets_after_request,
    "server-window-scale": server_window_scale,
    "server-no-sack": server_no_sack,
    "server-no-timestamps": server_no_timestamps,
    "request-with-fin": request_with_fin,
}
"""Every ready script by name (the name its Script carries)."""

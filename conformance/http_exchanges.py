"""HTTP/1.x messages in a reassembled byte stream, and whether a full proxy relayed them
faithfully.

A full (L7) proxy terminates HTTP on both legs: it may re-case field names, drop hop-by-hop
fields, change the framing (chunked <-> Content-Length), the version, and add fields of its
own. Byte identity cannot judge such a gateway; RFC 9110 semantics can: the same method and
target (or status), the same decoded body, and every end-to-end field of the sender with the
same value (§5.1: names are case-insensitive; §5.5: OWS around a value is not part of it;
§5.3: several field lines of one name are one comma-joined list). Hop-by-hop fields (§7.6.1)
and framing (Content-Length, Transfer-Encoding) are the proxy's own business on each hop;
fields a proxy adds (Via §7.6.3, Forwarded, X-Forwarded-*, any other) are named in the
detail, never a failure.

Offsets are stream offsets (0 = the first byte of the stream) so a judge can point at the
frame where a message starts or where two bodies first differ.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade"})
"""RFC 9110 §7.6.1 (and the obsolete Proxy-Connection): meaningful on one hop only."""
FRAMING = frozenset({"content-length"})
"""Framing of one hop (RFC 9112 §6): a proxy re-frames what it relays."""
ORIGIN_FIELDS = frozenset({"server", "date"})
"""Response fields a gateway may generate itself: towards the client it *is* the origin
server (RFC 9110 §3.7), which MAY send its own Server (§10.2.4) and MUST send its own Date
when it has a clock (§6.6.1); nginx does so by default."""
GATEWAY_ERRORS = frozenset({502, 503, 504})
"""Statuses a gateway sends itself when the server failed it (RFC 9110 §15.6)."""
MAX_HEAD = 65536
"""A head longer than this is not HTTP we can judge (bounds the search for its end)."""

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass
class Message:
    """One HTTP/1.x request or response as found in a stream."""

    start: int
    """Stream offset of its first byte."""
    head_end: int
    """Stream offset of its first body byte."""
    end: int | None
    """Stream offset after its last byte; None while incomplete."""
    version: str
    fields: list[tuple[str, str]]
    """(name as sent, value without surrounding OWS), in order."""
    body: bytes
    """The decoded body (chunked framing removed), as much as the stream holds."""
    method: str = ""
    target: str = ""
    status: int = 0
    chunked: bool = False
    problem: str = ""
    """Why it is incomplete or could not be framed."""

    @property
    def request(self) -> bool:
        return bool(self.method)

    @property
    def complete(self) -> bool:
        return self.end is not None

    def values(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.fields if k.lower() == n]

    def connection_options(self) -> set[str]:
        """Field names the Connection field makes hop-by-hop for this message (§7.6.1)."""
        return {t.strip().lower() for v in self.values("connection") for t in v.split(",")
                if t.strip()}

    @property
    def host(self) -> str:
        """The target's authority: Host, or the authority of an absolute-form target."""
        m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://([^/?#]*)", self.target)
        if m:
            return m.group(1).lower()
        hs = self.values("host")
        return hs[0].lower() if hs else ""

    @property
    def origin_target(self) -> str:
        """The target in origin-form (RFC 9112 §3.2.1): an absolute-form target sent to a
        gateway names the same resource as its path and query."""
        m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*(.*)$", self.target)
        if m:
            return m.group(1) or "/"
        return self.target

    def key(self) -> tuple[str, str, str]:
        """What identifies a request across legs: method, origin-form target, host."""
        return (self.method, self.origin_target, self.host)

    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:16]

    def label(self) -> str:
        if self.request:
            return f"{self.method} {self.target}"
        return f"{self.status}"


@dataclass
class Parsed:
    """The messages of one stream direction, and where (and why) parsing stopped."""

    messages: list[Message] = field(default_factory=list)
    rest: int = 0
    """Offset of the first byte not part of a parsed message (incomplete ones included)."""
    error: str = ""
    """Why the stream is not (or no longer) HTTP/1.x; empty when it all parsed."""

    @property
    def complete(self) -> list[Message]:
        return [m for m in self.messages if m.complete]


def _head(data: bytes, pos: int) -> tuple[list[str], int] | None:
    """The lines of the head starting at ``pos`` and the offset after its blank line, or
    None when the head is not complete in ``data``."""
    m = _HEAD_END.search(data, pos, min(len(data), pos + MAX_HEAD))
    if m is None:
        return None
    return re.split(r"\r?\n", data[pos:m.start()].decode("latin-1")), m.end()


def _fields(lines: list[str]) -> tuple[list[tuple[str, str]], str]:
    out: list[tuple[str, str]] = []
    for ln in lines:
        if ln[:1] in (" ", "\t") and out:  # obs-fold (RFC 9112 §5.2): part of the value
            name, value = out[-1]
            out[-1] = (name, (value + " " + ln.strip(" \t")).strip())
            continue
        name, sep, value = ln.partition(":")
        if not sep or not _TOKEN.match(name):
            return out, f"malformed field line {ln[:40]!r}"
        out.append((name, value.strip(" \t")))
    return out, ""


def _chunked(data: bytes, pos: int) -> tuple[bytes, int | None, str]:
    """Decode a chunked body from ``pos``: (body so far, offset after it or None, problem)."""
    body = bytearray()
    while True:
        m = _LINE.search(data, pos, min(len(data), pos + 1024))
        if m is None:
            return bytes(body), None, "chunk size line incomplete"
        size_text = data[pos:m.start()].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(body), None, f"bad chunk size {size_text[:20]!r}"
        pos = m.end()
        if size == 0:
            while True:  # trailer section, then the final blank line
                m = _LINE.search(data, pos, min(len(data), pos + MAX_HEAD))
                if m is None:
                    return bytes(body), None, "trailer section incomplete"
                line_empty = m.start() == pos
                pos = m.end()
                if line_empty:
                    return bytes(body), pos, ""
        chunk = data[pos:pos + size]
        body += chunk
        if len(chunk) < size:
            return bytes(body), None, "chunk incomplete"
        pos += size
        m = _LINE.match(data, pos)
        if m is None:
            if len(data) - pos < 2:
                return bytes(body), None, "chunk incomplete"
            return bytes(body), None, "chunk data not followed by CRLF"
        pos = m.end()


def _body(msg: Message, data: bytes, length: int | None, close_delimited: bool,
          eof: bool) -> int | None:
    """Fill ``msg.body``; the offset after the message or None (incomplete/unframable)."""
    pos = msg.head_end
    if msg.chunked:
        msg.body, end, msg.problem = _chunked(data, pos)
        return end
    if length is not None:
        msg.body = data[pos:pos + length]
        if len(msg.body) < length:
            msg.problem = f"body has {len(msg.body)} of {length} bytes"
            return None
        return pos + length
    if close_delimited:
        msg.body = data[pos:]
        if not eof:
            msg.problem = "body delimited by the close, which is not in the trace"
            return None
        return len(data)
    msg.body = b""
    return pos


def _framing(msg: Message) -> tuple[int | None, str]:
    """(Content-Length or None, problem); sets ``msg.chunked`` (RFC 9112 §6.3)."""
    te = [t.strip().lower() for v in msg.values("transfer-encoding") for t in v.split(",")]
    if te:
        msg.chunked = te[-1] == "chunked"
        return None, "" if msg.chunked or not msg.request else \
            "request Transfer-Encoding does not end in chunked"
    cls = {n.strip() for v in msg.values("content-length") for n in v.split(",")}
    if not cls:
        return None, ""
    if len(cls) > 1 or not next(iter(cls)).isdigit():
        return None, f"invalid Content-Length {sorted(cls)}"
    return int(next(iter(cls))), ""


def parse_requests(data: bytes) -> Parsed:
    """Every request in a client-to-server stream, in order."""
    return _parse(data, None, False)


def parse_responses(data: bytes, methods: Sequence[str] = (), *, eof: bool = False) -> Parsed:
    """Every response in a server-to-client stream; ``methods`` are the methods of the
    requests answered, in order (a response to HEAD has no body); ``eof``: the stream ended
    with a FIN here, which completes a response delimited by the close."""
    return _parse(data, list(methods), eof)


def _parse(data: bytes, methods: list[str] | None, eof: bool) -> Parsed:
    out = Parsed()
    pos, answered = 0, 0
    requests = methods is None
    while pos < len(data):
        while requests and (data.startswith(b"\r\n", pos) or data.startswith(b"\n", pos)):
            pos += 2 if data.startswith(b"\r\n", pos) else 1  # RFC 9112 §2.2
        if pos >= len(data):
            break
        h = _head(data, pos)
        if h is None:
            if len(data) - pos > MAX_HEAD or not _plausible_start(data[pos:pos + 16],
                                                                   requests):
                out.error = f"no HTTP/1.x message at offset {pos}"
            else:
                out.error = ""
                out.messages.append(Message(pos, len(data), None, "", [], b"",
                                            problem="head incomplete"))
            out.rest = pos
            return out
        lines, head_end = h
        start, rest = lines[0], lines[1:]
        parts = start.split(" ", 2)
        msg = Message(pos, head_end, None, "", [], b"")
        if requests:
            if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or \
                    not _TOKEN.match(parts[0]):
                out.error, out.rest = f"not an HTTP/1.x request line at offset {pos}", pos
                return out
            msg.method, msg.target, msg.version = parts
        else:
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or \
                    not (len(parts[1]) == 3 and parts[1].isdigit()):
                out.error, out.rest = f"not an HTTP/1.x status line at offset {pos}", pos
                return out
            msg.version, msg.status = parts[0], int(parts[1])
        msg.fields, problem = _fields(rest)
        if problem:
            out.error, out.rest = f"{problem} at offset {pos}", pos
            return out
        length, problem = _framing(msg)
        if problem:
            out.error, out.rest = f"{problem} at offset {pos}", pos
            return out
        close_delimited = False
        if not requests:
            assert methods is not None
            method = methods[answered] if answered < len(methods) else "GET"
            if 100 <= msg.status < 200:
                msg.chunked, length = False, 0  # interim: no body, the request still open
            else:
                answered += 1
                if method == "HEAD" or msg.status in (204, 304) or (
                        method == "CONNECT" and 200 <= msg.status < 300):
                    msg.chunked, length = False, 0
                elif not msg.chunked and length is None:
                    close_delimited = True
        msg.end = _body(msg, data, length, close_delimited, eof)
        out.messages.append(msg)
        if msg.end is None:
            out.rest = pos
            return out
        pos = msg.end
    out.rest = pos
    return out


def _plausible_start(prefix: bytes, request: bool) -> bool:
    """An incomplete head that may still become a message (not garbage)."""
    if not prefix:
        return True
    if request:
        return re.match(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,16}( |$)", prefix) is not None
    return b"HTTP/1."[:len(prefix)] == prefix[:7]


# ---------------------------------------------------------------------------- equivalence


@dataclass
class Verdict:
    """Whether what a gateway delivered is equivalent to what was sent."""

    ok: bool
    problem: str = ""
    """The first non-equivalence (empty when ok)."""
    changes: list[str] = field(default_factory=list)
    """What differs while staying equivalent (for the detail of a pass)."""
    body_offset: int | None = None
    """Stream offset (delivered side) of the first differing body byte, if any."""


def _excluded(msg: Message) -> set[str]:
    return set(HOP_BY_HOP) | FRAMING | msg.connection_options()


def _joined(values: list[str]) -> str:
    return ", ".join(v for v in values if v != "")


def equivalent(sent: Message, got: Message, *, allow_prefix: bool = False) -> Verdict:
    """Is ``got`` (delivered by the gateway) the same HTTP message as ``sent``?

    ``allow_prefix``: ``got`` may be incomplete, its body a prefix of ``sent``'s (the stream
    judges leave truncation to cross.fin_rst)."""
    v = Verdict(True)
    if sent.request != got.request:
        return Verdict(False, "a request and a response")
    if sent.request:
        if sent.method != got.method:
            return Verdict(False, f"method {sent.method} became {got.method}")
        if sent.target != got.target:
            if sent.origin_target != got.origin_target:
                return Verdict(False, f"target {sent.target!r} became {got.target!r}")
            v.changes.append(f"target {sent.target!r} as {got.target!r}")
    elif sent.status != got.status:
        return Verdict(False, f"status {sent.status} became {got.status}")
    if sent.version != got.version and got.version:
        v.changes.append(f"{sent.version} as {got.version}")
    if sent.chunked != got.chunked and got.complete:
        v.changes.append("chunked as Content-Length" if sent.chunked else
                         "Content-Length as chunked")
    # body: decoded bytes
    a, b = sent.body, got.body
    short = len(b) < len(a) and b == a[:len(b)]
    if a != b and not (short and allow_prefix and not got.complete):
        n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                 min(len(a), len(b)))
        if len(a) == len(b) or n < min(len(a), len(b)):
            what = f"body differs at body byte {n}: {a[n:n + 8]!r} became {b[n:n + 8]!r}"
        elif len(b) < len(a):
            what = f"body truncated: {len(b)} of {len(a)} bytes"
        else:
            what = f"body has {len(b) - len(a)} byte(s) more than the {len(a)} sent"
        return Verdict(False, what, v.changes,
                       got.head_end + n if not got.chunked else None)
    # fields
    drop = _excluded(sent)
    origin = ORIGIN_FIELDS if not sent.request else frozenset()
    names: dict[str, str] = {}
    for k, _ in sent.fields:
        names.setdefault(k.lower(), k)
    recased = False
    replaced = []
    for low, name in names.items():
        if low in drop:
            continue
        want, have = sent.values(low), got.values(low)
        if want == have or _joined(want) == _joined(have):
            if have and not any(k == name for k, _ in got.fields):
                recased = True
            continue
        if low in origin:
            replaced.append(name)
            continue
        if not have:
            return Verdict(False, f"end-to-end field {name} ({_joined(want)[:60]!r}) dropped",
                           v.changes)
        return Verdict(False, f"field {name} changed: {_joined(want)[:60]!r} became "
                       f"{_joined(have)[:60]!r}", v.changes)
    if recased:
        v.changes.append("field names re-cased")
    if replaced:
        v.changes.append(f"gateway's own {', '.join(replaced)}")
    gone = sorted({k for k, _ in sent.fields if k.lower() in drop})
    if gone:
        kept = {k.lower() for k, _ in got.fields}
        gone = [k for k in gone if k.lower() not in kept]
        if gone:
            v.changes.append(f"hop-by-hop/framing {', '.join(gone)} not relayed")
    got_drop = _excluded(got)
    added = []
    for k, _ in got.fields:
        low = k.lower()
        if low not in names and low not in got_drop and k not in added:
            added.append(k)
    if added:
        v.changes.append(f"added {', '.join(added)}")
    return v


@dataclass
class Comparison:
    """Sequence judgement of one direction: ``sent`` messages against ``got`` messages."""

    ok: bool
    detail: str
    index: int | None = None
    """Index of the first non-equivalent message (in ``sent``)."""
    offset: int | None = None
    """Stream offset on the delivered side where it shows."""
    prefix: bool = False
    """``got`` holds fewer (or a truncated last) message: equivalent as far as it goes."""


def compare(sent: Sequence[Message], got: Sequence[Message], what: str = "message") \
        -> Comparison:
    """Each delivered message must be equivalent to the sent one at its place; fewer
    delivered messages (or a truncated last one) is a prefix, more is a failure."""
    changes: list[str] = []
    for i, g in enumerate(got):
        if i >= len(sent):
            return Comparison(False, f"{what} #{i + 1} ({g.label()}, offset {g.start}) "
                              f"was never sent: only {len(sent)} were", i, g.start)
        s = sent[i]
        last = i == len(got) - 1
        r = equivalent(s, g, allow_prefix=last)
        if not r.ok:
            return Comparison(False, f"{what} #{i + 1} ({s.label()}): {r.problem}", i,
                              r.body_offset if r.body_offset is not None else g.start)
        for c in r.changes:
            if c not in changes:
                changes.append(c)
    n = sum(1 for m in got if m.complete)
    prefix = len(got) < len(sent) or bool(got and not got[-1].complete and
                                          sent[len(got) - 1].complete)
    text = f"HTTP-equivalent: {n} {what}(s)" + (f" ({'; '.join(changes)})" if changes else "")
    if prefix:
        text += f"; the delivered side has {n} complete of {len(sent)}"
    return Comparison(True, text, prefix=prefix)


__all__ = ["FRAMING", "GATEWAY_ERRORS", "HOP_BY_HOP", "ORIGIN_FIELDS", "Comparison",
           "Message", "Parsed", "Verdict", "compare", "equivalent", "parse_requests",
           "parse_responses"]

"""HTTP/1.x message parsing and RFC 9110 equivalence: what a full proxy may change (field
name case, hop-by-hop fields, framing, version, added fields) passes; a changed body byte, a
dropped end-to-end field, a changed status or target and a truncated body fail."""

from __future__ import annotations

from conformance.http_exchanges import compare, equivalent, parse_requests, parse_responses

REQ = (b"POST /up?x=1 HTTP/1.1\r\nHost: 192.0.2.10\r\nUser-Agent: t/1\r\nAccept: */*\r\n"
       b"Connection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 5\r\n\r\nhello")
RESP = (b"HTTP/1.1 200 OK\r\nServer: lab\r\nX-Server: s1\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 4\r\n\r\nbody")


def one(data: bytes, request: bool = True):  # type: ignore[no-untyped-def]
    p = parse_requests(data) if request else parse_responses(data, ["GET"])
    assert not p.error and len(p.messages) == 1, p
    return p.messages[0]


def test_parses_pipelined_requests_with_offsets_and_chunked_bodies() -> None:
    chunked = (b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    p = parse_requests(REQ + chunked + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [m.method for m in p.messages] == ["POST", "POST", "GET"]
    assert [m.start for m in p.messages] == [0, len(REQ), len(REQ) + len(chunked)]
    assert p.messages[1].body == b"abcde" and p.messages[1].chunked
    assert p.messages[0].body == b"hello" and p.rest == p.messages[2].end
    assert all(m.complete for m in p.messages)


def test_incomplete_and_non_http_streams() -> None:
    p = parse_requests(REQ[:-2])
    assert not p.error and not p.messages[0].complete and p.messages[0].body == b"hel"
    assert "body has 3 of 5" in p.messages[0].problem
    assert parse_requests(b"\x16\x03\x01 not http\r\n\r\n").error
    assert not parse_requests(b"GE").error  # a head still arriving is not garbage


def test_responses_to_head_and_close_delimited_bodies() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
    p = parse_responses(head + RESP, ["HEAD", "GET"])
    assert [len(m.body) for m in p.messages] == [0, 4] and all(m.complete for m in p.messages)
    close = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    assert not parse_responses(close, ["GET"]).messages[0].complete
    m = parse_responses(close, ["GET"], eof=True).messages[0]
    assert m.complete and m.body == b"until the end"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + RESP
    assert [m.status for m in parse_responses(interim, ["POST"]).messages] == [100, 200]


def test_a_proxys_rewrite_is_equivalent_and_says_what_changed() -> None:
    got = one(b"POST http://192.0.2.10/up?x=1 HTTP/1.0\r\nhost: 192.0.2.10\r\n"
              b"user-agent: t/1\r\naccept:   */*  \r\nVia: 1.1 gw\r\n"
              b"X-Forwarded-For: 198.51.100.2\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n")
    v = equivalent(one(REQ), got)
    assert v.ok, v.problem
    text = "; ".join(v.changes)
    for part in ("re-cased", "Connection", "X-Hop", "Via", "X-Forwarded-For",
                 "Content-Length as chunked", "HTTP/1.1 as HTTP/1.0", "target"):
        assert part in text, text


def test_a_gateway_may_send_its_own_server_and_date() -> None:
    got = one(RESP.replace(b"Server: lab", b"Server: nginx\r\nDate: today"), False)
    v = equivalent(one(RESP, False), got)
    assert v.ok and "gateway's own Server" in "; ".join(v.changes)
    # ...but not in a request, where Server has no such meaning
    req = one(REQ.replace(b"Accept: */*", b"Server: a"))
    assert not equivalent(req, one(REQ.replace(b"Accept: */*", b"Server: b"))).ok


def test_a_changed_body_byte_fails_with_its_offset() -> None:
    bad = one(REQ[:-1] + b"O")
    v = equivalent(one(REQ), bad)
    assert not v.ok and "body byte 4" in v.problem
    assert v.body_offset == len(REQ) - 1


def test_a_dropped_or_changed_end_to_end_field_fails() -> None:
    v = equivalent(one(REQ), one(REQ.replace(b"User-Agent: t/1\r\n", b"")))
    assert not v.ok and "User-Agent" in v.problem and "dropped" in v.problem
    v = equivalent(one(RESP, False), one(RESP.replace(b"s1", b"s2"), False))
    assert not v.ok and "X-Server" in v.problem


def test_a_changed_status_target_or_method_fails() -> None:
    assert "status 200 became 404" in equivalent(
        one(RESP, False), one(RESP.replace(b"200 OK", b"404 Not Found"), False)).problem
    assert "target" in equivalent(one(REQ), one(REQ.replace(b"/up?x=1", b"/up"))).problem
    assert "method" in equivalent(one(REQ), one(REQ.replace(b"POST", b"PUT", 1))).problem


def test_a_truncated_body_fails_unless_a_prefix_is_allowed() -> None:
    short = parse_responses(RESP[:-2], ["GET"]).messages[0]
    assert not equivalent(one(RESP, False), short).ok
    assert "truncated" in equivalent(one(RESP, False), short).problem
    assert equivalent(one(RESP, False), short, allow_prefix=True).ok
    # a complete message with a shorter body is never a prefix
    cut = one(RESP.replace(b"Content-Length: 4", b"Content-Length: 2")[:-2], False)
    assert not equivalent(one(RESP, False), cut, allow_prefix=True).ok


def test_compare_sequences() -> None:
    sent = parse_requests(REQ + REQ).messages
    assert compare(sent, sent).ok
    c = compare(sent, sent[:1])
    assert c.ok and c.prefix
    c = compare(sent[:1], sent)
    assert not c.ok and "never sent" in c.detail and c.index == 1

"""Rewriting HTTP/1.1 message heads on their way through the proxy (RFC 9110 §7.6, RFC 9112).

Pure functions over the `(name, value)` pairs httptools hands us, so they are easy to test
and cheap: one pass over the headers, one `bytes.join`. The parser (llhttp) has already
rejected malformed framing (Content-Length with Transfer-Encoding, duplicate or invalid
Content-Length, bad chunk sizes); what is left here is the proxy's own duty: drop the
hop-by-hop headers, keep the body's framing headers consistent with how we re-frame it,
and add X-Forwarded-*.
"""

from __future__ import annotations

from typing import NamedTuple

Headers = list[tuple[bytes, bytes]]

# Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the
# framing headers the proxy writes itself. Any "proxy-*" header is dropped too.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"proxy",
    b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
})
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
_REQUEST_SPECIAL = HOP_BY_HOP | {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                                 b"content-length", b"expect"}
_RESPONSE_SPECIAL = HOP_BY_HOP | {b"content-length"}


class Request(NamedTuple):
    head: bytes  # the request line and headers to send upstream, ending with the blank line
    host: bytes | None  # the Host header's value (or the authority of an absolute-form target)
    error: str | None  # set when the request must be refused with 400
    chunked: bool  # the body is chunked (we re-chunk it upstream)
    has_body: bool
    expect_continue: bool


class Response(NamedTuple):
    lines: list[bytes]  # status line and end-to-end header lines, each ending in CRLF
    te: bytes | None  # the Transfer-Encoding line when the upstream chunked the body (we re-chunk it)
    has_length: bool  # the upstream framed the body with Content-Length


def _tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def _drop_listed(lines: list[tuple[bytes, bytes]], listed: set[bytes]) -> list[tuple[bytes, bytes]]:
    """Drop the headers that a Connection header names (the rare slow path)."""
    return [(lname, line) for lname, line in lines if lname not in listed]


def request(method: bytes, target: bytes, headers: Headers, client_ip: bytes, *, upgrade: bool,
            proto: bytes = b"http") -> Request:
    """The head to send upstream for a client's request, always as HTTP/1.1."""
    host: bytes | None = None
    forwarded_for: bytes | None = None
    listed: set[bytes] | None = None
    chunked = expect = False
    length: bytes | None = None
    upgrade_value: bytes | None = None
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lname = name.lower()
        if lname not in _REQUEST_SPECIAL:
            if lname.startswith(b"proxy-"):
                continue
            kept.append((lname, name + b": " + value + b"\r\n"))
        elif lname == b"host":
            if host is not None:
                return Request(b"", None, "more than one Host header", False, False, False)
            host = value
        elif lname == b"content-length":
            length = value
            kept.append((lname, b"Content-Length: " + value + b"\r\n"))
        elif lname == b"transfer-encoding":
            # llhttp only accepts a request whose last coding is chunked; we re-chunk the
            # decoded chunks, so the codings stay true as written.
            chunked = True
            kept.append((lname, b"Transfer-Encoding: " + value + b"\r\n"))
        elif lname == b"connection":
            options = _tokens(value) - _CONNECTION_OPTIONS
            if options:
                listed = options if listed is None else listed | options
        elif lname == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
        elif lname == b"expect":
            expect = value.strip().lower() == b"100-continue"
            kept.append((lname, name + b": " + value + b"\r\n"))
        elif lname == b"upgrade":
            upgrade_value = value
        # other hop-by-hop headers and client-sent X-Forwarded-Proto/-Host are dropped
    if target[:1] not in (b"/", b"*") and b"://" in target:  # absolute-form: its authority wins (RFC 9112 §3.2.2)
        authority, _, path = target.partition(b"://")[2].partition(b"/")
        host, target = authority.rpartition(b"@")[2], b"/" + path
    if listed:
        kept = _drop_listed(kept, listed)
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    if host is not None:
        parts.append(b"Host: " + host + b"\r\n")
    parts.extend(line for _, line in kept)
    if upgrade and upgrade_value is not None:
        parts.append(b"Connection: upgrade\r\nUpgrade: " + upgrade_value + b"\r\n")
    xff = client_ip if forwarded_for is None else forwarded_for + b", " + client_ip
    parts.append(b"X-Forwarded-For: " + xff + b"\r\nX-Forwarded-Proto: " + proto + b"\r\n")
    if host is not None:
        parts.append(b"X-Forwarded-Host: " + host + b"\r\n")
    parts.append(b"\r\n")
    has_body = chunked or (length is not None and length.strip() not in (b"0", b""))
    return Request(b"".join(parts), host, None, chunked, has_body, expect)


def response(status: int, reason: bytes, headers: Headers, *, upgrade: bool) -> Response:
    """The status line and end-to-end headers of an upstream response; the caller adds framing."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    te: bytes | None = None
    has_length = False
    listed: set[bytes] | None = None
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lname = name.lower()
        if lname not in _RESPONSE_SPECIAL:
            if not lname.startswith(b"proxy-"):
                kept.append((lname, name + b": " + value + b"\r\n"))
        elif lname == b"content-length":
            has_length = True
            kept.append((lname, b"Content-Length: " + value + b"\r\n"))
        elif lname == b"transfer-encoding":
            # llhttp frames the body as chunked only when chunked is the last coding; any
            # other value means "read until close", which we re-frame ourselves.
            if value.rstrip().lower().endswith(b"chunked"):
                te = b"Transfer-Encoding: " + value + b"\r\n"
        elif lname == b"connection":
            options = _tokens(value) - _CONNECTION_OPTIONS
            if options:
                listed = options if listed is None else listed | options
        elif lname == b"upgrade" and upgrade:
            kept.append((lname, b"Connection: upgrade\r\nUpgrade: " + value + b"\r\n"))
    if listed:
        kept = _drop_listed(kept, listed)
    lines.extend(line for _, line in kept)
    return Response(lines, te, has_length)

"""Rewriting HTTP/1.1 message heads on their way through the proxy (RFC 9110 §7.6, RFC 9112).

The proxy works on raw head bytes and never splits a head into Python objects. Two paths:

- fast (`FAST_REQUEST`, `FAST_RESPONSE`): one scan over the (lower-cased) head shows that
  nothing but Host and a lone `Connection: keep-alive` needs attention; the request gets
  its X-Forwarded-* lines appended, the response goes out as it came.
- general (`request`, `response`): one regex pass finds every header the proxy acts on
  (framing, Host, hop-by-hop and the ones Connection lists, X-Forwarded-*) and the new
  head is the old one with those lines cut out and ours appended.

llhttp has parsed and accepted the same bytes first (see `server`), so what reaches these
functions is well-formed: one line per header, `name:` with no space before the colon,
CRLF line ends, at most one valid Content-Length, never Content-Length with Transfer-Encoding.

Python pays per call far more than per byte here (a regex search over a whole head costs
about what two `bytes` method calls do), so the fast paths are built from as few calls as
the checks allow.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

# Request headers the proxy acts on. Everything else passes through untouched.
_REQUEST: Final = re.compile(
    rb"\r\n(host|content-length|transfer-encoding|expect|connection|keep-alive|te|trailer|upgrade"
    rb"|proxy(?:-[^:\r\n]*)?|x-forwarded-(?:for|proto|host)):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)",
    re.IGNORECASE,
)
_RESPONSE: Final = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|keep-alive|te|trailer|upgrade"
    rb"|proxy(?:-[^:\r\n]*)?):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)",
    re.IGNORECASE,
)
_CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})
# A Connection header may list these, but dropping them would change where a message ends (or
# which env it is for) while its body still goes out: the start of request smuggling.
_NEVER_DROPPED: Final = frozenset({b"content-length", b"transfer-encoding", b"host"})
MAX_LENGTH: Final = (1 << 63) - 1  # llhttp takes up to 2**64-1; servers with signed 64-bit lengths do not
_KEPT_REQUEST: Final = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect"})

# Searched in a lower-cased head: when nothing matches (or only "Connection: keep-alive" does),
# the fast path applies.
_REQUEST_SPECIAL: Final = re.compile(
    rb"\r\n(?:c(?:onnection|ontent-length)|t(?:ransfer-encoding|e|railer):|keep-alive|upgrade|expect|proxy|x-forwarded-)")

# Response body framing.
LENGTH: Final = 0  # Content-Length (or no body at all)
CHUNKED: Final = 1
UNTIL_CLOSE: Final = 2  # the body ends when the upstream closes: the client connection must close too


class BadRequest(Exception):
    """The request is well-formed HTTP that the proxy still refuses (answered with 400)."""


class Request(NamedTuple):
    head: bytes  # what to send upstream: the request with hop-by-hop headers out and X-Forwarded-* in
    host: bytes | None  # the Host header's value (or the authority of an absolute-form target)
    length: int  # Content-Length, 0 when absent
    chunked: bool
    keep_alive: bool  # the client wants the connection kept after the response
    upgrade: bool  # Connection: upgrade with an Upgrade header
    expect_continue: bool
    is_head: bool  # the method is HEAD: the response has no body whatever its headers say
    http11: bool


_TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")  # a header name (RFC 9110 §5.6.2), lower-cased
_HEX: Final = re.compile(rb"[0-9a-fA-F]{1,16}")


def _tokens(value: bytes) -> set[bytes]:
    """The options a Connection header lists. Anything that is no header name names no header:
    `Connection: host:x` must not cut a line that starts `Host:x`."""
    return {t for t in (t.strip().lower() for t in value.split(b",")) if _TOKEN.fullmatch(t)}


def _cut(head: bytes, spans: list[tuple[int, int]], end: int) -> list[bytes]:
    """`head[:end]` without the byte ranges in `spans` (sorted by start; they may overlap or repeat).

    A header can be cut twice: `Connection: te` names a header that is hop-by-hop anyway.
    No slice here runs backwards: compiled, `head[5:3]` is an error, not b"".
    """
    parts, pos = [], 0
    for start, stop in spans:
        if start > pos:
            parts.append(head[pos:start])
        if stop > pos:
            pos = stop
    parts.append(head[pos:end])
    return parts


def _listed(head: bytes, names: set[bytes]) -> list[tuple[int, int]]:
    """Spans of the headers a Connection header names (they are hop-by-hop too)."""
    alternatives = b"|".join(re.escape(n) for n in sorted(names))
    pattern = re.compile(rb"\r\n(?:" + alternatives + rb"):[^\r\n]*(?=\r\n)", re.IGNORECASE)
    return [m.span() for m in pattern.finditer(head)]


_KEEP_ALIVE: Final = b"\r\nconnection: keep-alive\r\n"  # the one hop-by-hop header the fast paths let through
# Requests that may be sent again when a pooled connection dies before answering (RFC 9110 §9.2.2):
# the upstream may have acted on one it never answered, so a POST or PATCH is never resent.
IDEMPOTENT: Final = (b"GET ", b"HEAD ", b"OPTIONS ", b"PUT ", b"DELETE ", b"TRACE ")
ORIGIN_FORM_11: Final = re.compile(rb"[^ \r\n]+ /[^ ]* HTTP/1\.1\r\n")  # a request line the fast paths take
_HOST: Final = re.compile(rb"\r\nhost:[ \t]*([^\r\n]*)")
_AUTHORITY: Final = re.compile(rb"[^/?]*")

# The request fast path's one scan, over the lower-cased head: `findall` gives the Host value
# for a well-formed Host line and b"" for every header that needs the general path (another
# Host, framing, hop-by-hop, Expect, X-Forwarded-*). Exactly one item, and not empty: the
# request needs nothing but X-Forwarded-* appended. A lone `Connection: keep-alive` passes.
FAST_REQUEST: Final = re.compile(
    rb"\r\n(?:host:[ \t]*([^\s]+)(?=[ \t]*\r\n)|host|c(?:onnection(?!: keep-alive\r\n)|ontent-length)"
    rb"|t(?:ransfer-encoding|e|railer):|keep-alive|upgrade|expect|proxy|x-forwarded-)")

# The response fast path: an HTTP/1.1 final status line (`data[:10]` in FAST_STATUS), and a read
# in which the first match of FAST_RESPONSE is the head's end (group 1, the CRLF after the last
# header's). Any other match first means the general path: a hop-by-hop header (bar a lone
# `Connection: keep-alive`, our own option for a client connection that stays open) or a bare-LF
# blank line (the head may then end elsewhere). The search runs over the read as it came, case
# folded by the engine: it finds the end and checks the head in one pass, with no lower-cased copy.
# Such a response goes out exactly as it came. A head with other bare LFs is refused by llhttp,
# and the fast path then hands it to the general one, where `crlf_head` repairs it.
FAST_STATUS: Final = frozenset(b"HTTP/1.1 %d" % digit for digit in range(2, 6))
FAST_RESPONSE: Final = re.compile(
    rb"\n(?:\r\n()|\n|connection(?!: keep-alive\r\n)|keep-alive|t(?:e|railer):|upgrade|proxy)", re.IGNORECASE)


def request(head: bytes, client_ip: bytes, tails: dict[bytes | None, bytes] | None = None) -> Request:
    """Rewrite a request head (ending in CRLF CRLF) for the upstream. Raises `BadRequest`.

    `tails` caches the X-Forwarded-* block per Host for one client connection. Requests
    with nothing special (see `FAST_REQUEST`) only get that block appended.
    """
    low = head.lower()
    m = _REQUEST_SPECIAL.search(low)
    if m is not None:
        cut = m.start()
        if not low.startswith(_KEEP_ALIVE, cut) or _REQUEST_SPECIAL.search(low, cut + 24) is not None:
            return _request(head, client_ip, b"http")
        # A lone "Connection: keep-alive" stays: it is also the option we want towards the
        # upstream, and RFC 9110 §7.6.1 lets a proxy replace Connection with its own options.
    if ORIGIN_FORM_11.match(head) is None:
        return _request(head, client_ip, b"http")
    hosts = _HOST.findall(low)  # lower-cased: host names are case-insensitive, and it helps the route cache
    if len(hosts) != 1:
        raise BadRequest("more than one Host header" if hosts else "HTTP/1.1 request without a Host header")
    host = hosts[0].rstrip()
    tail = tails.get(host) if tails is not None else None
    if tail is None:
        tail = forwarded(host, client_ip)
        if tails is not None and len(tails) < 64:
            tails[host] = tail
    return Request(head[:-4] + tail, host, 0, False, True, False, False, head[:5] == b"HEAD ", True)


def forwarded(host: bytes | None, client_ip: bytes, proto: bytes = b"http") -> bytes:
    """The X-Forwarded-* lines that end every request head we send upstream (with the blank line)."""
    tail = b"\r\nX-Forwarded-For: " + client_ip + b"\r\nX-Forwarded-Proto: " + proto
    if host is not None:
        tail += b"\r\nX-Forwarded-Host: " + host
    return tail + b"\r\n\r\n"


def _request(head: bytes, client_ip: bytes, proto: bytes) -> Request:
    """The general case of `request`: any hop-by-hop or framing header, any request target."""
    host: bytes | None = None
    host_span = (0, 0)
    forwarded_for: bytes | None = None
    upgrade_span: tuple[int, int] | None = None
    tokens: set[bytes] = set()
    length, chunked, expect = 0, False, False
    cuts: list[tuple[int, int]] = []
    for m in _REQUEST.finditer(head):
        name = m[1].lower()
        if name in _KEPT_REQUEST:
            if name == b"host":
                if host is not None:
                    raise BadRequest("more than one Host header")
                host, host_span = m[2], m.span()
            elif name == b"content-length":
                length = int(m[2])
                if length > MAX_LENGTH:
                    raise BadRequest("Content-Length is too large")
            elif name == b"transfer-encoding":
                # llhttp made sure chunked comes last. Any other coding is refused (nginx does the same),
                # and the header goes upstream in one spelling that every server reads as chunked.
                if m[2].lower() != b"chunked":
                    raise BadRequest("a request body's only transfer coding must be chunked")
                chunked = True
                cuts.append(m.span())
            else:
                expect = m[2].lower() == b"100-continue"
            continue
        if name == b"upgrade":
            upgrade_span = m.span()
        else:
            cuts.append(m.span())
            if name == b"connection":
                tokens |= _tokens(m[2])
            elif name == b"x-forwarded-for":
                forwarded_for = m[2] if forwarded_for is None else forwarded_for + b", " + m[2]
    upgrade = upgrade_span is not None and b"upgrade" in tokens
    if upgrade_span is not None and not upgrade:
        cuts.append(upgrade_span)
    listed = tokens - _CONNECTION_OPTIONS - _NEVER_DROPPED
    if listed:
        cuts.extend(_listed(head, listed))

    line_end = head.find(b"\r\n")
    http11 = head.endswith(b" HTTP/1.1", 0, line_end)
    if not http11 and not head.endswith(b" HTTP/1.0", 0, line_end):  # llhttp takes any HTTP/d.d
        raise BadRequest("only HTTP/1.0 and HTTP/1.1 requests are served")
    space = head.find(b" ")
    if head[space + 1:space + 2] not in (b"/", b"*"):
        # absolute-form (RFC 9112 §3.2.2): route by its authority, send origin-form upstream
        last_space = head.rfind(b" ", 0, line_end)
        if last_space <= space:  # llhttp allows no such request line; never slice backwards (see _cut)
            raise BadRequest("the request line has no HTTP version")
        _, scheme_sep, rest = head[space + 1:last_space].partition(b"://")
        authority = _AUTHORITY.match(rest)[0]  # type: ignore[index]  # always matches: up to the path, or the query
        if not scheme_sep or not authority:
            raise BadRequest("the request target is neither a path nor an absolute URL")
        target = rest[len(authority):]
        if host is not None:
            cuts.append(host_span)
        host = authority.rpartition(b"@")[2]
        cuts.append((0, line_end))
        line = (head[:space + 1] + (target if target.startswith(b"/") else b"/" + target)
                + head[last_space:line_end] + b"\r\nHost: " + host)
    else:
        line = b""
    parts = _cut(head, sorted(cuts), len(head) - 4) if cuts else [head[:-4]]
    if line:
        parts.insert(0, line)

    xff = client_ip if forwarded_for is None else forwarded_for + b", " + client_ip
    tail = b"\r\nX-Forwarded-For: " + xff + b"\r\nX-Forwarded-Proto: " + proto
    if host is not None:
        tail += b"\r\nX-Forwarded-Host: " + host
    if chunked:
        tail += b"\r\nTransfer-Encoding: chunked"
    if upgrade:
        tail += b"\r\nConnection: upgrade"
    parts.append(tail + b"\r\n\r\n")
    return Request(b"".join(parts), host, length, chunked, http11 and b"close" not in tokens, upgrade, expect,
                   head.startswith(b"HEAD "), http11)


def response(head: bytes, *, bodyless: bool, keep_alive: bool, upgrade: bool) -> tuple[bytes, int, bool]:
    """Rewrite a final response head for the client.

    Returns the new head, the body's framing, and whether the client connection stays open
    afterwards (a body delimited by the upstream closing forces a close).
    """
    cuts: list[tuple[int, int]] = []
    tokens: set[bytes] = set()
    framing = UNTIL_CLOSE
    for m in _RESPONSE.finditer(head):
        name = m[1].lower()
        if name == b"content-length":
            if framing == UNTIL_CLOSE:
                framing = LENGTH
        elif name == b"transfer-encoding":
            if m[2].lower().endswith(b"chunked"):
                framing = CHUNKED
        elif not (upgrade and name == b"upgrade"):
            cuts.append(m.span())
            if name == b"connection":
                tokens |= _tokens(m[2])
    if bodyless:
        framing = LENGTH
    elif framing == UNTIL_CLOSE:
        keep_alive = False
    listed = tokens - _CONNECTION_OPTIONS - _NEVER_DROPPED
    if listed:
        cuts = sorted(cuts + _listed(head, listed))
    parts = _cut(head, cuts, len(head) - 4) if cuts else [head[:-4]]
    if head.startswith(b"HTTP/1.0"):
        parts[0] = b"HTTP/1.1" + parts[0][8:]
    if upgrade:
        parts.append(b"\r\nConnection: upgrade\r\n\r\n")
    elif keep_alive:
        parts.append(b"\r\n\r\n")
    else:
        parts.append(b"\r\nConnection: close\r\n\r\n")
    return b"".join(parts), framing, keep_alive


def interim(head: bytes) -> bytes:
    """A 1xx response (100 Continue, 103 Early Hints) on its way to the client."""
    return response(head, bodyless=True, keep_alive=True, upgrade=False)[0]


class ChunkedEnd:
    """Finds where a chunked body ends in a stream of bytes.

    llhttp validates the chunk syntax but cannot say where in a buffer a message ended;
    this scanner only finds that boundary, so pipelined requests after a chunked body
    can be split off. The server checks that llhttp completes the message exactly there.
    """

    __slots__ = ("left", "line", "state")

    _SIZE = 0
    _DATA = 1
    _TRAILER = 2
    MAX_LINE = 8192

    def __init__(self) -> None:
        self.state = self._SIZE
        self.left = 0  # data bytes (plus their CRLF) still to skip
        self.line = b""

    def scan(self, data: bytes, pos: int) -> int:
        """The offset in `data` just past the body's end, or -1 when all of `data[pos:]` is body."""
        n = len(data)
        while pos < n:
            if self.state == self._DATA:
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
                if not self.left:
                    self.state = self._SIZE
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                self.line += data[pos:]
                if len(self.line) > self.MAX_LINE:
                    raise BadRequest("chunk header or trailer line too long")
                return -1
            line, self.line = self.line + data[pos:eol], b""
            pos = eol + 1
            if self.state == self._SIZE:
                digits = line.partition(b";")[0].strip()
                if _HEX.fullmatch(digits) is None:  # int(x, 16) also takes -6, 0x5, +5 and 5_0
                    raise BadRequest("invalid chunk size")
                size = int(digits, 16)
                if size:
                    self.state, self.left = self._DATA, size + 2
                else:
                    self.state = self._TRAILER
            elif line in (b"", b"\r"):
                return pos
        return -1


_BLANK_LINE: Final = re.compile(rb"\r?\n\r?\n")
_LINE_END: Final = re.compile(rb"\r?\n")
_BARE_LF: Final = re.compile(rb"(?<!\r)\n")


def crlf_head(data: bytes, pos: int) -> bytes:
    """`data` with the line ends of the response head that starts at `pos` made CRLF.

    CGI servers (busybox httpd among them) pass a script's `Header: x\\n\\n` through as it
    is, and nginx accepts it; so do we, for responses only. Only the head is rewritten, never
    the body after it. Requests from clients stay strict: leniency there is how smuggling starts.
    """
    blank = _BLANK_LINE.search(data, pos)
    if blank is None or (blank.group() == b"\r\n\r\n" and _BARE_LF.search(data, pos, blank.start()) is None):
        return data
    head = _LINE_END.sub(b"\r\n", data[pos:blank.start()]) + b"\r\n\r\n"
    return data[:pos] + head + data[blank.end():]

"""How requests are forwarded: asyncio Protocols that move bytes between clients and upstreams.

A `ClientConnection` parses requests with httptools (llhttp) only as far as routing and
framing need, and routes each request on its own Host header, so one keep-alive
connection can reach several environments. Requests wait in a queue and are answered in
order (pipelining). Each one is forwarded on a pooled keep-alive `UpstreamConnection`,
which parses the response just enough to re-frame it and strip hop-by-hop headers.

Bodies stream in both directions and are never held whole: each side pauses reading
the other when its write buffer fills (`pause_writing` → `pause_reading`). Writes made
while handling one read are joined into one `transport.write`, which keeps syscalls and
event-loop wake-ups to about one per direction per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser, HttpResponseParser

from . import headers as h
from . import pages

if TYPE_CHECKING:
    from collections.abc import Callable

    from .counters import AccessCounter
    from .routes import Decision

log = logging.getLogger("mirage_git.proxy")

POOL_IDLE_SECONDS = 2.0  # close pooled upstream connections idle this long (below common keep-alive timeouts)
POOL_MAX_IDLE = 512  # idle connections kept per upstream port
QUEUE_LIMIT = 64 * 1024  # body bytes we hold for an upstream that is not ready, before pausing the client
PIPELINE_MAX = 32  # requests queued on one connection, before pausing the client

# Why a client's reading is paused (a bit mask: reading resumes when no reason is left).
_UPSTREAM_FULL = 1  # the upstream's write buffer is full
_QUEUED = 2  # requests or body bytes are waiting for an upstream
_UPGRADING = 4  # an upgrade request waits for the upstream's answer
_REJECTED = 8  # a malformed request was read: nothing after it will be

# How a response body travels to the client.
_AS_IS = 0  # Content-Length, or no body: bytes pass unchanged
_CHUNK = 1  # re-chunk (upstream chunked, or read-until-close towards an HTTP/1.1 client)
_UNTIL_CLOSE = 2  # raw, and the client connection closes after it (HTTP/1.0 clients)
_TUNNEL = 3  # 101 Switching Protocols: raw bytes both ways from now on


class _HeadDone(Exception):
    """Raised from a parser callback to stop llhttp after a HEAD response's head (it has no body)."""


class _Reject(Exception):
    """Raised from a parser callback when a request must be refused with 400."""


class Proxy:
    """What one worker process shares between its connections: settings, upstream pool, counters."""

    def __init__(self, loop: asyncio.AbstractEventLoop, counter: AccessCounter, *, connect_timeout: float,
                 idle_timeout: float) -> None:
        self.loop = loop
        self.counter = counter
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.pool: dict[int, list[UpstreamConnection]] = {}
        self.clients: set[ClientConnection] = set()
        self.draining = False

    def factory(self, resolve: Callable[[bytes], Decision]) -> Callable[[], ClientConnection]:
        return lambda: ClientConnection(self, resolve)

    def take(self, port: int) -> UpstreamConnection | None:
        idle = self.pool.get(port)
        while idle:
            up = idle.pop()  # the most recently used: least likely to have been closed by the upstream
            if not up.closed:
                return up
        return None

    def put(self, up: UpstreamConnection) -> None:
        idle = self.pool.setdefault(up.port, [])
        if self.draining or len(idle) >= POOL_MAX_IDLE:
            up.transport.close()
            return
        up.idle_ticks = 0
        idle.append(up)

    def sweep(self, ticks_idle: int, ticks_pool: int) -> None:
        """Close client connections idle for `ticks_idle` sweeps and pooled upstreams idle for `ticks_pool`."""
        for client in list(self.clients):
            if client.active:
                client.active = False
                client.idle_ticks = 0
            else:
                client.idle_ticks += 1
                if client.idle_ticks >= ticks_idle:
                    client.close()
        for idle in self.pool.values():
            for up in list(idle):
                up.idle_ticks += 1
                if up.idle_ticks >= ticks_pool:
                    up.transport.close()

    def drain(self) -> None:
        """Stop keeping connections: close idle clients and pooled upstreams, close the rest when done."""
        self.draining = True
        for client in list(self.clients):
            if not client.queue and client.tunnel is None:
                client.close()
        for idle in self.pool.values():
            for up in list(idle):
                up.transport.close()

    def close_all(self) -> None:
        for client in list(self.clients):
            client.close()


class Exchange:
    """One request and its response, on one client connection."""

    __slots__ = ("body", "buffered", "chunked", "decision", "expect_continue", "head", "http10", "is_head",
                 "keep_alive", "replayable", "request_done", "response_done", "retried", "started", "upgrade",
                 "upstream")

    def __init__(self, decision: Decision, head: bytes, keep_alive: bool) -> None:
        self.decision = decision
        self.head = head
        self.keep_alive = keep_alive
        self.body: list[bytes] = []  # request body bytes (framed) waiting for an upstream
        self.buffered = 0
        self.chunked = False
        self.expect_continue = False
        self.http10 = False
        self.is_head = False
        self.upgrade = False
        self.replayable = True  # no body: can be resent if a pooled connection turns out dead
        self.request_done = False
        self.response_done = False
        self.retried = False
        self.started = False
        self.upstream: UpstreamConnection | None = None


class ClientConnection(asyncio.Protocol):
    """One connection from a browser (or wrk): parses requests, answers them in order."""

    def __init__(self, proxy: Proxy, resolve: Callable[[bytes], Decision]) -> None:
        self.proxy = proxy
        self.resolve = resolve
        self.parser = HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client_ip = b""
        self.url = b""
        self.headers: h.Headers = []
        self.queue: deque[Exchange] = deque()
        self.reading: Exchange | None = None  # the exchange whose request body is being read
        self.tunnel: UpstreamConnection | None = None
        self.early: list[bytes] = []  # bytes after an upgrade request, before the upstream said yes
        self.upgrading = False
        self.pause_reasons = 0
        self.write_paused = False
        self.closed = False
        self.active = True
        self.idle_ticks = 0
        self._feeding = False
        self._advancing = False
        self._rejection: bytes | None = None
        self._out_up: UpstreamConnection | None = None
        self._out: list[bytes] = []

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]).encode() if peer else b"unknown"
        self.proxy.clients.add(self)

    def data_received(self, data: bytes) -> None:
        self.active = True
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            return
        if self.upgrading:
            self.early.append(data)
            return
        if self.closed or self._rejection is not None:
            return
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self.upgrading = True
            self._pause(_UPGRADING)
            rest = data[exc.args[0]:]
            if rest:
                self.early.append(rest)
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self.reject(str(cause))
            else:
                log.error("internal error while handling a request", exc_info=cause or exc)
                self.close()
        except HttpParserError as exc:
            self.reject(f"malformed request: {exc}")
        finally:
            self._feeding = False
            if self._out:
                self._flush()

    def eof_received(self) -> bool | None:
        if self.queue and self.reading is None:
            return True  # half-closed after its last request: answer it, then close
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.clients.discard(self)
        if self.tunnel is not None:
            self.tunnel.transport.close()
        for exch in self.queue:
            if exch.upstream is not None:
                exch.upstream.abandon()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if up is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if up is not None and not up.closed:
            up.transport.resume_reading()

    # --- httptools callbacks -------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers, self.headers = self.headers, []
        url, self.url = self.url, b""
        upgrade = parser.should_upgrade()
        method = parser.get_method()
        if method == b"CONNECT":
            raise _Reject("CONNECT is not supported by this proxy")
        req = h.request(method, url, headers, self.client_ip, upgrade=upgrade)
        if req.error:
            raise _Reject(req.error)
        http10 = parser.get_http_version() == "1.0"
        if req.host is None and not http10:
            raise _Reject("HTTP/1.1 request without a Host header")
        decision = self.resolve(req.host or b"")
        if decision.known:
            self.proxy.counter.hit(decision.host)
        exch = Exchange(decision, req.head, parser.should_keep_alive() and not self.proxy.draining)
        exch.chunked = req.chunked
        exch.replayable = not req.has_body
        exch.expect_continue = req.expect_continue
        exch.http10 = http10
        exch.is_head = method == b"HEAD"
        exch.upgrade = upgrade
        if decision.page is not None and req.expect_continue:
            exch.keep_alive = False  # the client will not send the body it announced; don't parse it as requests
        self.reading = exch
        self.queue.append(exch)
        if len(self.queue) == 1:
            self._advance()
        elif len(self.queue) > PIPELINE_MAX:
            self._pause(_QUEUED)

    def on_body(self, body: bytes) -> None:
        exch = self.reading
        if exch is None:
            return
        if exch.chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        if exch.upstream is not None:
            self._send(exch.upstream, body)
        elif not exch.response_done:
            exch.body.append(body)
            exch.buffered += len(body)
            if exch.buffered > QUEUE_LIMIT:
                self._pause(_QUEUED)
        # else: already answered (a page, or an early upstream response): the body is discarded

    def on_message_complete(self) -> None:
        exch = self.reading
        self.reading = None
        if exch is None:
            return
        if exch.chunked:
            self.headers = []  # trailers (dropped)
            if exch.upstream is not None:
                self._send(exch.upstream, b"0\r\n\r\n")
            elif not exch.response_done:
                exch.body.append(b"0\r\n\r\n")
        exch.request_done = True
        if exch.response_done and self.queue and self.queue[0] is exch:
            self._advance()

    # --- moving requests along -----------------------------------------------------------
    def _send(self, up: UpstreamConnection, data: bytes) -> None:
        """Write to an upstream; while parsing a read, gather the writes into one."""
        if not self._feeding:
            up.transport.write(data)
            return
        if self._out_up is not up:
            self._flush()
            self._out_up = up
        self._out.append(data)

    def _flush(self) -> None:
        up, out = self._out_up, self._out
        self._out = []
        if up is not None and not up.closed:
            up.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _advance(self) -> None:
        """Start the oldest unanswered request; retire the ones that are done, in order."""
        if self._advancing:  # re-entered from _start (a page is answered at once): the loop below goes on
            return
        self._advancing = True
        try:
            queue = self.queue
            while queue and not self.closed:
                exch = queue[0]
                if not exch.started:
                    exch.started = True
                    self._start(exch)
                if not (exch.request_done and exch.response_done):
                    return
                queue.popleft()
                if not exch.keep_alive:
                    self.close()
                    return
                if self.pause_reasons & _QUEUED and len(queue) <= PIPELINE_MAX and (
                        not queue or queue[0].buffered <= QUEUE_LIMIT):
                    self._resume(_QUEUED)
            if self._rejection is not None and not self.closed:
                self.transport.write(self._rejection)
                self.close()
            elif self.proxy.draining and self.reading is None:
                self.close()
        finally:
            self._advancing = False

    def _start(self, exch: Exchange) -> None:
        decision = exch.decision
        if decision.page is not None:
            self.answer(exch, decision.page)
            return
        up = self.proxy.take(decision.port)  # type: ignore[arg-type]
        if up is None:
            self.proxy.loop.create_task(self._connect(exch, decision.port))  # type: ignore[arg-type]
        else:
            up.attach(self, exch, reused=True)

    async def _connect(self, exch: Exchange, port: int) -> None:
        proxy = self.proxy
        try:
            async with asyncio.timeout(proxy.connect_timeout):
                _, up = await proxy.loop.create_connection(lambda: UpstreamConnection(proxy, port), "127.0.0.1", port)
        except TimeoutError:
            self.answer(exch, pages.gateway_timeout(exch.decision.host, proxy.connect_timeout))
            return
        except OSError as exc:
            why = "refused the connection" if isinstance(exc, ConnectionRefusedError) else f"cannot connect ({exc})"
            self.answer(exch, pages.bad_gateway(exch.decision.host, f"the environment {why}."))
            return
        if self.closed or not self.queue or self.queue[0] is not exch:
            proxy.put(up)
            return
        up.attach(self, exch, reused=False)

    def retry(self, exch: Exchange) -> None:
        """A pooled connection died before answering a request that can be resent: resend it once."""
        exch.retried = True
        exch.upstream = None
        self.proxy.loop.create_task(self._connect(exch, exch.decision.port))  # type: ignore[arg-type]

    def answer(self, exch: Exchange, page: bytes) -> None:
        """Answer `exch` with one of our own pages."""
        if self.closed:
            return
        if not exch.keep_alive:
            page = page.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        elif exch.http10:
            page = page.replace(b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n", 1)
        self.transport.write(page)
        self.response_done(exch)

    def response_done(self, exch: Exchange) -> None:
        exch.response_done = True
        exch.upstream = None
        if exch.upgrade and self.tunnel is None:
            exch.keep_alive = False  # the upstream declined the upgrade; the client may already be sending frames
        self._resume(_UPSTREAM_FULL)
        if exch.body:
            exch.body = []
            exch.buffered = 0
        if self.queue and self.queue[0] is exch:
            self._advance()

    def start_tunnel(self, up: UpstreamConnection) -> None:
        """The upstream switched protocols: from now on, bytes flow unparsed both ways."""
        self.tunnel = up
        self.queue.clear()
        early, self.early = self.early, []
        self.upgrading = False
        if early:
            up.transport.write(b"".join(early))
        self._resume(_UPGRADING | _QUEUED)

    def reject(self, why: str) -> None:
        """Answer 400 and close: after a malformed request the byte stream cannot be trusted.

        Requests before the bad one are still answered first, in order.
        """
        if self.closed or self._rejection is not None:
            return
        self._rejection = pages.bad_request(why)
        self._pause(_REJECTED)
        if self.reading is not None and self.reading in self.queue:
            self.queue.remove(self.reading)  # its request was cut short by the error
            if self.reading.upstream is not None:
                self.reading.upstream.abandon()
        self.reading = None
        if not self.queue:
            self._advance()

    # --- helpers -------------------------------------------------------------------------
    def _pause(self, reason: int) -> None:
        if not self.pause_reasons and not self.closed:
            self.transport.pause_reading()
        self.pause_reasons |= reason

    def _resume(self, reason: int) -> None:
        if self.pause_reasons & reason:
            self.pause_reasons &= ~reason
            if not self.pause_reasons and not self.closed:
                self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()


def _response_parser(protocol: object) -> HttpResponseParser:
    """A response parser that, like nginx, accepts bare LF line ends from upstreams.

    CGI servers (busybox httpd among them) pass a script's "Header: x\n\n" through as is.
    Requests from clients stay strict: leniency there is how requests get smuggled.
    """
    parser = HttpResponseParser(protocol)
    parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
    return parser


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a container's published port; serves one exchange at a time."""

    def __init__(self, proxy: Proxy, port: int) -> None:
        self.proxy = proxy
        self.port = port
        self.parser = _response_parser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: ClientConnection | None = None
        self.exch: Exchange | None = None
        self.reused = False
        self.closed = False
        self.tunnel = False
        self.idle_ticks = 0
        self.sent = False  # some of the current response reached the client
        self.eof_ends = False  # the response body is delimited by the upstream closing the connection
        self.mode = _AS_IS
        self.reason = b""
        self.headers: h.Headers = []
        self.interim = False
        self.complete = False
        self.keep_alive = True
        self.out: list[bytes] = []

    def attach(self, client: ClientConnection, exch: Exchange, *, reused: bool) -> None:
        self.client, self.exch, self.reused = client, exch, reused
        self.sent = self.complete = self.eof_ends = False
        exch.upstream = self
        data = exch.head
        if exch.body:
            data = b"".join([data, *exch.body])
            exch.body = []
            exch.buffered = 0
        client._send(self, data)
        if client.write_paused:
            self.transport.pause_reading()
        if client.pause_reasons & _QUEUED and len(client.queue) <= PIPELINE_MAX:
            client._resume(_QUEUED)

    def abandon(self) -> None:
        """The client went away mid-exchange: this connection's state is unknown, so close it."""
        self.client = self.exch = None
        self.transport.close()

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # idle in the pool: an upstream must not talk now
            self.transport.close()
            return
        client.active = True
        if self.tunnel:
            client.transport.write(data)
            return
        self.out = out = []
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            if self.mode != _TUNNEL:
                self._broken()
                return
            rest = data[exc.args[0]:]
            if rest:
                out.append(rest)
        except HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _HeadDone):
                log.error("internal error while handling a response", exc_info=exc.__context__ or exc)
                self._broken()
                return
            self.parser = _response_parser(self)
            self.complete = True
        except HttpParserError as exc:
            log.warning("upstream on port %d sent a malformed response: %s", self.port, exc)
            self._broken()
            return
        if out:
            client.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.mode == _TUNNEL:
            self.tunnel = True
            client.start_tunnel(self)
        elif self.complete:
            self._done()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        client, exch = self.client, self.exch
        self.client = self.exch = None
        if client is None or exch is None:
            idle = self.proxy.pool.get(self.port)
            if idle and self in idle:
                idle.remove(self)
            return
        if self.tunnel:
            client.close()
        elif self.eof_ends and self.mode == _CHUNK:
            client.transport.write(b"0\r\n\r\n")  # a read-until-close body, re-chunked: now it has ended
            client.response_done(exch)
        elif self.eof_ends:
            client.response_done(exch)  # exch.keep_alive is False: the client connection closes too
        elif not self.sent:
            if self.reused and exch.replayable and not exch.retried:
                client.retry(exch)
            else:
                client.answer(exch, pages.bad_gateway(exch.decision.host, "the environment closed the connection "
                                                      "without answering."))
        else:
            client.close()  # cut short: closing is the only honest signal left

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client._pause(_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client._resume(_UPSTREAM_FULL)

    # --- httptools callbacks -------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exch = self.exch
        assert exch is not None
        status = self.parser.get_status_code()
        headers, self.headers = self.headers, None  # type: ignore[assignment]  # None marks "head done"
        self.sent = True
        if status < 200 and status != 101:  # 100 Continue, 103 Early Hints: more is coming
            self.interim = True
            if not exch.http10:
                self.out.append(b"".join(h.response(status, self.reason, headers, upgrade=False).lines) + b"\r\n")
            return
        upgrade = status == 101 and exch.upgrade
        resp = h.response(status, self.reason, headers, upgrade=upgrade)
        lines = resp.lines
        if upgrade:
            self.mode = _TUNNEL
        elif exch.is_head or status in (204, 304):
            self.mode = _AS_IS
            if resp.te is not None:
                lines.append(resp.te)
        elif resp.te is None and resp.has_length:
            self.mode = _AS_IS
        else:
            self.eof_ends = resp.te is None
            if exch.http10:
                self.mode = _UNTIL_CLOSE
                exch.keep_alive = False
            else:
                self.mode = _CHUNK
                lines.append(resp.te or b"Transfer-Encoding: chunked\r\n")
        if exch.upgrade and not upgrade:
            exch.keep_alive = False
        if not exch.keep_alive:
            lines.append(b"Connection: close\r\n")
        elif exch.http10:
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self.out.append(b"".join(lines))
        if exch.is_head:
            self.keep_alive = self.parser.should_keep_alive()
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        if self.mode == _CHUNK:
            self.out.append(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.headers = []
            return
        if self.mode == _TUNNEL:
            return
        if self.mode == _CHUNK:
            self.out.append(b"0\r\n\r\n")
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True

    # --- helpers -------------------------------------------------------------------------
    def _done(self) -> None:
        client, exch = self.client, self.exch
        assert client is not None and exch is not None
        self.client = self.exch = None
        self.headers = []
        self.mode = _AS_IS
        if self.keep_alive and exch.request_done and not self.closed:
            self.transport.resume_reading()  # it may have been paused for a slow client
            self.proxy.put(self)
        else:
            self.transport.close()
        client.response_done(exch)

    def _broken(self) -> None:
        """The upstream broke HTTP: drop it, and tell the client the only way still open."""
        client, exch = self.client, self.exch
        self.client = self.exch = None
        self.transport.close()
        if client is None or exch is None:
            return
        if self.sent:
            client.close()
        else:
            client.answer(exch, pages.bad_gateway(exch.decision.host, "the environment sent an invalid response."))

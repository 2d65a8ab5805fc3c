"""How requests are forwarded: asyncio Protocols that move bytes between clients and upstreams.

A `ClientConnection` splits the client's byte stream into requests and routes each one
on its own Host header, so one keep-alive connection can reach several environments.
Requests wait in a queue and are answered in order (pipelining). Each is forwarded on
a pooled keep-alive `UpstreamConnection`, which finds the end of the response and
strips its hop-by-hop headers.

Parsing costs Python time per request, so it is kept to what routing and framing need:
a head is found with `bytes.find`, rewritten by `headers` with one regex pass, and fed
whole to llhttp (httptools), which validates it (smuggling defences live there: CL+TE,
duplicate or invalid Content-Length, bad chunk syntax → 400) and tells us, through two
cheap callbacks, whether the message ended where our framing says it must. Bodies are
never decoded or copied into new buffers: they pass through as the bytes that came in.

Bodies stream in both directions and are never held whole: each side pauses reading
the other when its write buffer fills (`pause_writing` → `pause_reading`). Writes made
while handling one read are joined into one `transport.write`, so there is about one
syscall per direction per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, HttpResponseParser

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
MAX_HEAD = 64 * 1024  # longest request or response head accepted

# Why a client's reading is paused (a bit mask: reading resumes when no reason is left).
_UPSTREAM_FULL = 1  # the upstream's write buffer is full
_QUEUED = 2  # requests or body bytes are waiting for an upstream
_UPGRADING = 4  # an upgrade request waits for the upstream's answer
_REJECTED = 8  # a malformed request was read: nothing after it will be

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
        idle = self.pool.get(up.port)
        if idle is None:
            idle = self.pool[up.port] = []
        if len(idle) >= POOL_MAX_IDLE or self.draining:
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

    __slots__ = ("body", "buffered", "decision", "head", "http10", "is_head", "keep_alive", "replayable",
                 "request_done", "response_done", "retried", "started", "upgrade", "upstream")

    def __init__(self, decision: Decision, head: bytes, keep_alive: bool, request_done: bool) -> None:
        self.decision = decision
        self.head = head
        self.keep_alive = keep_alive
        self.request_done = request_done
        self.replayable = request_done  # no body: can be resent if a pooled connection turned out dead
        self.body: tuple[bytes, ...] | list[bytes] = ()  # request body bytes waiting for an upstream
        self.buffered = 0
        self.http10 = False  # an HTTP/1.0 client: gets no 1xx responses
        self.is_head = self.upgrade = self.response_done = self.retried = self.started = False
        self.upstream: UpstreamConnection | None = None


class ClientConnection(asyncio.Protocol):
    """One connection from a browser (or wrk): splits requests, routes each, answers them in order."""

    def __init__(self, proxy: Proxy, resolve: Callable[[bytes], Decision]) -> None:
        self.proxy = proxy
        self.resolve = resolve
        self.parser = HttpRequestParser(self)  # calls only on_message_begin / on_message_complete
        self.begun = self.ended = 0  # llhttp's count of message starts and ends, for the current request
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client_ip = b""
        self.tails: dict[bytes | None, bytes] = {}  # X-Forwarded-* blocks by Host, see headers.request
        self.buf = b""  # an incomplete head
        self.reading: Exchange | None = None  # the exchange whose request body is arriving
        self.body_left = 0  # of a Content-Length body
        self.chunks: h.ChunkedEnd | None = None  # of a chunked body
        self.queue: deque[Exchange] = deque()
        self.last = False  # the last request this connection will carry has been read
        self.tunnel: UpstreamConnection | None = None
        self.upgrading = False
        self.early: list[bytes] = []  # bytes after an upgrade request, before the upstream said yes
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
        if self.buf:
            data, self.buf = self.buf + data, b""
        try:
            if data.find(b"\r\n\r\n") == len(data) - 4 and self.reading is None and not self.last and data[0] != 13:
                self._request(data)  # the common case: this read is exactly one request head
            else:
                self._feeding = True
                self._parse(data)
        except h.BadRequest as exc:
            self.reject(str(exc))
        except HttpParserError as exc:
            self.reject(f"malformed request: {exc}")
        finally:
            if self._feeding:
                self._feeding = False
                if self._out:
                    self._flush()

    def eof_received(self) -> bool | None:
        if self.queue and self.reading is None:
            self.last = True
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

    # --- llhttp callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.begun += 1

    def on_message_complete(self) -> None:
        self.ended += 1

    # --- splitting the stream into requests ----------------------------------------------
    def _parse(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            exch = self.reading
            if exch is not None:  # inside a request body
                if self.chunks is None:
                    end = pos + min(self.body_left, n - pos)
                    self.body_left -= end - pos
                    done = not self.body_left
                else:
                    end = self.chunks.scan(data, pos)
                    done = end >= 0
                    if not done:
                        end = n
                piece = data if end - pos == n else data[pos:end]
                self.parser.feed_data(piece)
                if self.ended != done:
                    raise h.BadRequest("the request body's framing is ambiguous")
                self._body(exch, piece)
                pos = end
                if done:
                    self.reading = self.chunks = None
                    exch.request_done = True
                    if exch.response_done and self.queue and self.queue[0] is exch:
                        self._advance()
                continue
            if self.last:
                return  # nothing after a "Connection: close" request is read
            if self.upgrading:
                self.early.append(data[pos:])
                return
            while data.startswith(b"\r\n", pos):  # stray CRLFs between requests are allowed
                pos += 2
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                self.buf = data[pos:]
                if len(self.buf) > MAX_HEAD:
                    raise h.BadRequest("request head too large")
                return
            end += 4
            if end - pos > MAX_HEAD:
                raise h.BadRequest("request head too large")
            self._request(data if end - pos == n else data[pos:end])
            pos = end

    def _request(self, head: bytes) -> None:
        """A complete request head: validate it, route it, queue the exchange.

        Inlined here: the common case, an HTTP/1.1 request with a Host header and no body.
        """
        self.begun = self.ended = 0
        try:
            self.parser.feed_data(head)
        except HttpParserUpgrade:
            self._request_general(head, True)
            return
        req = h.request(head, self.client_ip, self.tails)
        if req.length or req.chunked or not req.http11 or req.host is None or self.ended != 1 or self.begun != 1:
            self._request_general(head, False, req)
            return
        decision = self.resolve(req.host)
        if decision.known:
            counts = self.proxy.counter.counts
            counts[decision.host] = counts.get(decision.host, 0) + 1
        exch = Exchange(decision, req.head, req.keep_alive and not self.proxy.draining, True)
        if req.is_head:
            exch.is_head = True
        if not exch.keep_alive:
            self.last = True
        queue = self.queue
        queue.append(exch)
        if len(queue) == 1:
            exch.started = True
            self._start(exch)
        elif len(queue) > PIPELINE_MAX:
            self._pause(_QUEUED)

    def _request_general(self, head: bytes, upgraded: bool, req: h.Request | None = None) -> None:
        """Any request `_request` does not take on itself: with a body, an upgrade, HTTP/1.0, or invalid."""
        if upgraded and head.startswith(b"CONNECT "):
            raise h.BadRequest("CONNECT is not supported by this proxy")
        new_head, host, length, chunked, keep_alive, upgrade, expect, is_head, http11 = (
            req or h.request(head, self.client_ip, self.tails))
        has_body = chunked or length > 0
        if self.begun != 1 or self.ended == has_body or upgraded != upgrade:
            raise h.BadRequest("the request's framing is ambiguous")
        if host is None and http11:
            raise h.BadRequest("HTTP/1.1 request without a Host header")
        if upgraded and has_body:
            raise h.BadRequest("an upgrade request cannot have a body")
        decision = self.resolve(host or b"")
        if decision.known:
            counts = self.proxy.counter.counts
            counts[decision.host] = counts.get(decision.host, 0) + 1
        exch = Exchange(decision, new_head, keep_alive and not self.proxy.draining, not has_body)
        if is_head:
            exch.is_head = True
        if not http11:
            exch.http10 = True
        if has_body:
            exch.replayable = False
            self.reading = exch
            self.body_left = length
            self.chunks = h.ChunkedEnd() if chunked else None
            if decision.page is not None and expect:
                exch.keep_alive = False  # the client may never send the body it announced
        if not exch.keep_alive:
            self.last = True
        if upgrade:
            exch.upgrade = self.upgrading = True
            self._pause(_UPGRADING)
        queue = self.queue
        queue.append(exch)
        if len(queue) == 1:
            exch.started = True
            self._start(exch)
        elif len(queue) > PIPELINE_MAX:
            self._pause(_QUEUED)

    def _body(self, exch: Exchange, piece: bytes) -> None:
        up = exch.upstream
        if up is not None:
            self._send(up, piece)
        elif not exch.response_done:
            if not exch.body:
                exch.body = []
            exch.body.append(piece)  # type: ignore[union-attr]
            exch.buffered += len(piece)
            if exch.buffered > QUEUE_LIMIT:
                self._pause(_QUEUED)
        # else: already answered (a page, or an early upstream response): the body is discarded

    # --- moving requests along -----------------------------------------------------------
    def _send(self, up: UpstreamConnection, data: bytes) -> None:
        """Write to an upstream; while parsing a read, gather the writes into one."""
        if not self._feeding:
            up.transport.write(data)
            return
        if self._out_up is not up:
            if self._out:
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
            if self.closed:
                return
            if self._rejection is not None:
                self.transport.write(self._rejection)
                self.close()
            elif self.reading is None and (self.last or self.proxy.draining):
                self.close()
        finally:
            self._advancing = False

    def _start(self, exch: Exchange) -> None:
        decision = exch.decision
        port = decision.port
        if port is None:
            self.answer(exch, decision.page)  # type: ignore[arg-type]
            return
        idle = self.proxy.pool.get(port)
        while idle:
            up = idle.pop()  # the most recently used: least likely to have been closed by the upstream
            if not up.closed:
                up.attach(self, exch, True)
                return
        self.proxy.loop.create_task(self._connect(exch, port))

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
        up.attach(self, exch, False)

    def retry(self, exch: Exchange) -> None:
        """A pooled connection died before answering a request that can be resent: resend it once."""
        exch.retried = True
        exch.upstream = None
        self.proxy.loop.create_task(self._connect(exch, exch.decision.port))  # type: ignore[arg-type]

    def answer(self, exch: Exchange, page: bytes) -> None:
        """Answer `exch` with one of our own pages."""
        if self.closed:
            return
        if not exch.keep_alive or exch.upgrade:
            exch.keep_alive = False
            page = page.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        self.transport.write(page)
        self.response_done(exch)

    def response_done(self, exch: Exchange) -> None:
        exch.response_done = True
        exch.upstream = None
        if self.pause_reasons:
            self._resume(_UPSTREAM_FULL)
        if exch.body:
            exch.body = ()
            exch.buffered = 0
        queue = self.queue
        if queue and queue[0] is exch:
            if (exch.request_done and exch.keep_alive and len(queue) == 1 and not self.pause_reasons
                    and not self._advancing and not self.last and self._rejection is None and not self.proxy.draining):
                queue.pop()  # the common case: the only request is answered and nothing else is due
            else:
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
        self.buf = b""
        exch, self.reading = self.reading, None
        if exch is not None and exch in self.queue:
            self.queue.remove(exch)  # its request was cut short by the error
            if exch.upstream is not None:
                exch.upstream.abandon()
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


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a container's published port; serves one exchange at a time."""

    def __init__(self, proxy: Proxy, port: int) -> None:
        self.proxy = proxy
        self.port = port
        self.parser = HttpResponseParser(self)  # calls only on_message_begin / on_message_complete
        self.begun = self.ended = 0
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: ClientConnection | None = None
        self.exch: Exchange | None = None
        self.reused = False
        self.closed = False
        self.tunnel = False
        self.idle_ticks = 0
        self.expect_head = True
        self.partial = b""  # an incomplete head
        self.sent = False  # some of the current response reached the client
        self.eof_ends = False  # the response body is delimited by the upstream closing the connection
        self.keep_alive = True

    def attach(self, client: ClientConnection, exch: Exchange, reused: bool) -> None:
        self.client = client
        self.exch = exch
        self.reused = reused
        self.sent = self.eof_ends = False
        self.expect_head = True
        exch.upstream = self
        if exch.body:
            data = b"".join([exch.head, *exch.body])
            exch.body = ()
            exch.buffered = 0
        else:
            data = exch.head
        if client._feeding:
            client._send(self, data)
        else:
            self.transport.write(data)
        if client.write_paused or client.pause_reasons:
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
        try:
            if self.expect_head:
                out = self._head(data)
            else:
                self.parser.feed_data(data)
                out = data
            if self.begun > 1 or self.ended > 1:
                raise HttpParserError("data after the end of the response")
        except HttpParserError as exc:
            log.warning("upstream on port %d sent an invalid response: %s", self.port, exc)
            self._broken()
            return
        if out:
            self.sent = True
            client.transport.write(out)
        if self.tunnel:
            client.start_tunnel(self)
        elif self.ended and not self.expect_head:
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
        elif self.eof_ends and not self.expect_head:
            client.response_done(exch)  # the close ends the body; exch.keep_alive is False, so the client closes too
        elif not self.sent:
            if self.reused and exch.replayable and not exch.retried:
                client.retry(exch)
            else:
                why = "the environment closed the connection without answering."
                client.answer(exch, pages.bad_gateway(exch.decision.host, why))
        else:
            client.close()  # cut short: closing is the only honest signal left

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client._pause(_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client._resume(_UPSTREAM_FULL)

    # --- llhttp callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.begun += 1

    def on_message_complete(self) -> None:
        self.ended += 1
        self.keep_alive = self.parser.should_keep_alive()

    # --- reading a response --------------------------------------------------------------
    def _head(self, data: bytes) -> bytes:
        """Process the response's head in `data`; return what to send the client now.

        The fast path covers a plain HTTP/1.1 final response; `_head_general` everything else.
        """
        if self.partial:
            data, self.partial = self.partial + data, b""
        exch = self.exch
        end = data.find(b"\r\n\r\n")
        if end < 0 or exch.is_head or exch.upgrade or data[9:10] == b"1" or not data.startswith(b"HTTP/1.1 "):
            return self._head_general(data)
        end += 4
        self.begun = self.ended = 0
        self.parser.feed_data(data)  # the head and what came of the body
        self.expect_head = False
        head = data if end == len(data) else data[:end]
        new = h.response_fast(head)
        if new is None or not (self.ended or self.parser.should_keep_alive()):
            # hop-by-hop headers to drop, or a body that may end only when the upstream closes
            new, framing, exch.keep_alive = h.response(head, bodyless=self.ended > 0, keep_alive=exch.keep_alive,
                                                       upgrade=False)
            self.eof_ends = framing == h.UNTIL_CLOSE
        elif not exch.keep_alive:
            new = new[:-2] + b"Connection: close\r\n\r\n"
        return new if end == len(data) else new + data[end:]

    def _head_general(self, data: bytes) -> bytes:
        """Interim responses, HEAD, upgrades, HTTP/1.0 and heads split across reads."""
        exch = self.exch
        assert exch is not None
        out = b""
        pos = 0
        while True:
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                self.partial = data[pos:]
                if len(self.partial) > MAX_HEAD:
                    raise HttpParserError("response head too large")
                return out
            end += 4
            try:
                status = int(data[pos + 9:pos + 12])
            except ValueError:
                raise HttpParserError("invalid status line") from None
            self.begun = self.ended = 0
            if 100 <= status < 200 and status != 101:  # 100 Continue, 103 Early Hints: the real answer follows
                self.parser.feed_data(data[pos:end])
                if not exch.http10:
                    out += h.interim(data[pos:end])
                pos = end
                continue
            break
        self.expect_head = False
        upgrade = status == 101 and exch.upgrade
        bodyless = exch.is_head or status in (204, 304) or status == 101
        keep = exch.keep_alive and (upgrade or not exch.upgrade)
        head = data if pos == 0 and end == len(data) else data[pos:end]
        new_head, framing, exch.keep_alive = h.response(head, bodyless=bodyless, keep_alive=keep, upgrade=upgrade)
        self.eof_ends = framing == h.UNTIL_CLOSE
        rest = data[end:] if end < len(data) else b""
        if exch.is_head:  # llhttp cannot know this response has no body: check its head, then start afresh
            self.parser.feed_data(head)
            self.parser = HttpResponseParser(self)
            if rest:
                raise HttpParserError("data after the head of a response to HEAD")
            self.begun = self.ended = 1
            self.keep_alive = False
        elif upgrade:
            try:
                self.parser.feed_data(data[pos:])
            except HttpParserUpgrade as exc:
                rest = data[pos + exc.args[0]:]
                self.tunnel = True
            else:
                raise HttpParserError("101 response without Upgrade")
        else:
            self.parser.feed_data(data if pos == 0 else data[pos:])
        return out + new_head + rest if out or rest else new_head

    def _done(self) -> None:
        client, exch = self.client, self.exch
        assert client is not None and exch is not None
        self.client = self.exch = None
        if self.keep_alive and exch.request_done and not self.closed:
            if client.write_paused:
                self.transport.resume_reading()  # it was paused for a slow client
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

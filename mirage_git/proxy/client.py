"""The client side: one browser's (or wrk's) connection, split into requests, each routed on its own Host.

See `server` for the design. Requests queue in arrival order (pipelining) and each is
forwarded on a pooled `UpstreamConnection`; bodies pass through as the bytes that came in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from . import headers as h
from . import pages
from .server import (
    CLIENT_FULL,
    MAX_HEAD,
    PIPELINE_MAX,
    QUEUE_LIMIT,
    QUEUED,
    REJECTED,
    UPGRADING,
    UPSTREAM_FULL,
    Exchange,
    Proxy,
)
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from .routes import Resolver

log = logging.getLogger("mirage_git.proxy")


class ClientConnection(asyncio.Protocol):
    """One connection from a browser (or wrk): splits requests, routes each, answers them in order."""

    def __init__(self, proxy: Proxy, resolve: Resolver) -> None:
        self.proxy = proxy
        self.resolve = resolve
        self.decisions = resolve.cache
        self.parser = HttpRequestParser(self)  # calls only on_message_begin / on_message_complete
        self.begun = self.ended = 0  # llhttp's count of message starts and ends, for the current request
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client_ip = b""
        self.tails: dict[bytes | None, bytes] = {}  # X-Forwarded-* blocks by Host, see headers.request
        self.buf = b""  # an incomplete head
        self.reading: Exchange | None = None  # the exchange whose request body is arriving
        self.body_left = 0  # of a Content-Length body
        self.chunks: h.ChunkedEnd | None = None  # of a chunked body
        self.queue: list[Exchange] = []
        self.last = False  # the last request this connection will carry has been read
        self.tunnel: UpstreamConnection | None = None
        self.spare: UpstreamConnection | None = None  # the upstream of our last exchange, kept for the next
        self.upgrading = False
        self.early: list[bytes] = []  # bytes after an upgrade request, before the upstream said yes
        self.pause_reasons = 0
        self.write_paused = False
        self.closed = False
        self.unusual = False  # closed, upgrading, tunnelling or rejected: data_received leaves the fast path
        self.active = True
        self.idle_ticks = 0
        self.head_ticks = 0  # sweeps seen since the current request head began (see Proxy.sweep)
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
        if self.unusual:  # tunnelling, upgrading, closed or rejected: rare, so one test on the hot path
            if self.tunnel is not None:
                self.tunnel.transport.write(data)
            elif self.upgrading:
                self.early.append(data)
            return
        if not (self.buf or self.queue or self.reading or self.last) and data[-4:] == b"\r\n\r\n" and self._fast(data):
            return
        if self.buf:
            data, self.buf = self.buf + data, b""
        self._feeding = True
        try:
            self._parse(data)
        except h.BadRequest as exc:
            self.reject(str(exc))
        except HttpParserError as error:  # not `exc` again: compiled, a name has one type per function
            self.reject(f"malformed request: {error}")
        finally:
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
        self.unusual = True
        self.proxy.clients.discard(self)
        if self.tunnel is not None:
            self.tunnel.transport.close()
        for exch in self.queue:
            if exch.upstream is not None:
                exch.upstream.abandon()
        self.queue.clear()
        self.release_spare()

    def pause_writing(self) -> None:
        """The client is not reading: stop reading its answer, and its next requests, until it does."""
        self.write_paused = True
        up = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if up is not None:
            up.transport.pause_reading()
        self._pause(CLIENT_FULL)

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if up is not None and not up.closed:
            up.transport.resume_reading()
        self._resume(CLIENT_FULL)

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
            while pos < n and data[pos] in b"\r\n":  # empty lines before a request are ignored (RFC 9112 §2.2)
                pos += 1
            if pos == n:
                if not self.queue:
                    self.active = False  # empty lines alone do not keep an idle connection open
                return
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

    def _fast(self, data: bytes) -> bool:
        """The common case, whole: one bodyless HTTP/1.1 request in one read, on an idle connection.

        Everything a request needs is done here with as few calls as possible. For anything
        else it returns False having changed nothing but the parser (a fresh one), and the
        read takes the general path.
        """
        if len(data) > MAX_HEAD:
            return False
        self.begun = self.ended = 0
        try:
            self.parser.feed_data(data)  # validates; begun == ended == 1: exactly one message, and no body
        except (HttpParserError, HttpParserUpgrade):
            self.parser = HttpRequestParser(self)
            return False
        found = h.FAST_REQUEST.findall(data.lower())
        # data[-5] is CR or LF: llhttp skipped stray line ends after the message, so the head does not
        # end where `data` does (appending to data[:-4] would put X-Forwarded-* after the blank line).
        if (self.begun != 1 or self.ended != 1 or len(found) != 1 or not found[0] or data[-5] in b"\r\n"
                or h.ORIGIN_FORM_11.match(data) is None):
            self.parser = HttpRequestParser(self)
            return False
        host = found[0]
        tail = self.tails.get(host)
        if tail is None:
            tail = h.forwarded(host, self.client_ip)
            if len(self.tails) < 64:
                self.tails[host] = tail
        decision = self.decisions.get(host) or self.resolve(host)
        decision.hits += 1
        exch = Exchange(decision, data[:-4] + tail, not self.proxy.draining, True)
        if data[0] == 72 and data.startswith(b"HEAD "):  # 72: "H"
            exch.is_head = True
        elif data[0] != 71 and not data.startswith(h.IDEMPOTENT):  # 71: "G"
            exch.replayable = False
        if not exch.keep_alive:
            self.last = True
        self.queue.append(exch)
        exch.started = True
        up = self.spare
        if up is not None and up.port == decision.port and not up.closed:  # _start's first case, inlined
            self.spare = None
            up.attach(self, exch, True)
        else:
            self._start(exch)
        return True

    def _request(self, head: bytes) -> None:
        """A complete request head split off the stream: validate it, route it, queue the exchange."""
        self.begun = self.ended = self.head_ticks = 0
        try:
            self.parser.feed_data(head)
            upgraded = False
        except HttpParserUpgrade:
            upgraded = True
        if upgraded and head.startswith(b"CONNECT "):
            raise h.BadRequest("CONNECT is not supported by this proxy")
        new_head, host, length, chunked, keep_alive, upgrade, expect, is_head, http11 = h.request(
            head, self.client_ip, self.tails)
        has_body = chunked or length > 0
        if self.begun != 1 or self.ended == has_body or upgraded != upgrade:
            raise h.BadRequest("the request's framing is ambiguous")
        if host is None and http11:
            raise h.BadRequest("HTTP/1.1 request without a Host header")
        if upgraded and has_body:
            raise h.BadRequest("an upgrade request cannot have a body")
        decision = self.resolve(host or b"")
        decision.hits += 1
        exch = Exchange(decision, new_head, keep_alive and not self.proxy.draining, not has_body)
        if is_head:
            exch.is_head = True
        elif not head.startswith(h.IDEMPOTENT):
            exch.replayable = False
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
            self.unusual = True
            self._pause(UPGRADING)
        queue = self.queue
        queue.append(exch)
        if len(queue) == 1:
            exch.started = True
            self._start(exch)
        elif len(queue) > PIPELINE_MAX:
            self._pause(QUEUED)

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
                self._pause(QUEUED)
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
                del queue[0]
                if not exch.keep_alive:
                    self.close()
                    return
                if self.pause_reasons & QUEUED and len(queue) <= PIPELINE_MAX and (
                        not queue or queue[0].buffered <= QUEUE_LIMIT):
                    self._resume(QUEUED)
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
        up = self.spare
        if up is not None:  # the connection our last request used: no pool round trip, and warm in every cache
            self.spare = None
            if up.port == port and not up.closed:
                up.attach(self, exch, True)
                return
            if not up.closed:
                self.proxy.put(up)
        idle = self.proxy.pool.get(port)
        while idle:
            up = idle.pop()  # the most recently used: least likely to have been closed by the upstream
            if not up.closed:
                up.attach(self, exch, True)
                return
        self.proxy.loop.create_task(self._connect(exch, port))

    def release_spare(self) -> None:
        """Give the kept upstream connection back to the pool (the client went quiet, or away)."""
        up, self.spare = self.spare, None
        if up is not None and not up.closed:
            self.proxy.put(up)

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
        if exch.decision.closes:  # the page says "Connection: close" itself
            exch.keep_alive = False
            self.last = True
        elif not exch.keep_alive or exch.upgrade:
            exch.keep_alive = False
            page = page.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        self.transport.write(page)
        self.response_done(exch)

    def response_done(self, exch: Exchange) -> None:
        exch.response_done = True
        exch.upstream = None
        if self.pause_reasons:
            self._resume(UPSTREAM_FULL)
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
        self._resume(UPGRADING | QUEUED)

    def reject(self, why: str) -> None:
        """Answer 400 and close: after a malformed request the byte stream cannot be trusted.

        Requests before the bad one are still answered first, in order.
        """
        if self.closed or self._rejection is not None:
            return
        self._rejection = pages.bad_request(why)
        self.unusual = True
        self._pause(REJECTED)
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

    def head_timeout(self) -> None:
        """A request head took longer than idle_timeout to arrive (slowloris): 408 and close."""
        if not self.queue and not self.closed:
            self.transport.write(pages.page(408, "Request timeout", "<p>The request took too long to arrive.</p>",
                                            close=True))
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.unusual = True
            self.transport.close()

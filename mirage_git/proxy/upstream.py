"""The upstream side: one keep-alive connection to an env's published port, one exchange at a time.

It finds where each response ends (llhttp counts the body; we never decode it), strips the
response's hop-by-hop headers, and goes back to the pool, or closes when it cannot be reused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from . import headers as h
from . import pages
from .server import MAX_HEAD, PIPELINE_MAX, QUEUED, UPSTREAM_FULL, Exchange, Proxy

if TYPE_CHECKING:
    from .client import ClientConnection

log = logging.getLogger("mirage_git.proxy")


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
        self.plain = False  # the exchange's response can take the fast path: not HEAD, not an upgrade, kept alive

    def attach(self, client: ClientConnection, exch: Exchange, reused: bool) -> None:
        self.client = client
        self.exch = exch
        self.reused = reused
        self.sent = self.eof_ends = False
        self.expect_head = True
        self.plain = exch.keep_alive and not (exch.is_head or exch.upgrade)
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
            if client.pause_reasons & QUEUED and len(client.queue) <= PIPELINE_MAX:
                client._resume(QUEUED)

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
        except (HttpParserError, HttpParserUpgrade) as exc:  # the latter: a 101 we did not ask for
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
            self.client._pause(UPSTREAM_FULL)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client._resume(UPSTREAM_FULL)

    # --- llhttp callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.begun += 1

    def on_message_complete(self) -> None:
        self.ended += 1

    # --- reading a response --------------------------------------------------------------
    def _head(self, data: bytes) -> bytes:
        """Process the response's head in `data`; return what to send the client now.

        The fast path covers a plain HTTP/1.1 final response; `_head_general` everything else.
        """
        if self.partial:
            data, self.partial = self.partial + data, b""
        m = h.FAST_RESPONSE.search(data, 0, MAX_HEAD) if self.plain else None
        if m is None or m.lastindex is None or data[:10] not in h.FAST_STATUS:  # lastindex: the head's end matched
            return self._head_general(data)
        end = m.end()
        self.begun = self.ended = 0
        try:
            self.parser.feed_data(data)  # the head and what came of the body
        except HttpParserError:  # perhaps bare LFs that the general path repairs: it starts afresh
            self.parser = HttpResponseParser(self)
            return self._head_general(data)
        self.expect_head = False
        if not (self.ended or self.parser.should_keep_alive()):  # the body ends only when the upstream closes
            exch = self.exch
            assert exch is not None
            new, framing, exch.keep_alive = h.response(data[:end], bodyless=False, keep_alive=True, upgrade=False)
            self.eof_ends = framing == h.UNTIL_CLOSE
            self.keep_alive = False
            return new if end == len(data) else new + data[end:]
        return data

    def _head_general(self, data: bytes) -> bytes:
        """Interim responses, HEAD, upgrades, HTTP/1.0 and heads split across reads."""
        exch = self.exch
        assert exch is not None
        out = b""
        pos = 0
        while True:
            data = h.crlf_head(data, pos)
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                self.partial = data[pos:]
                if len(self.partial) > MAX_HEAD:
                    raise HttpParserError("response head too large")
                return out
            end += 4
            if end - pos > MAX_HEAD:
                raise HttpParserError("response head too large")
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
            # An HTTP/1.0 request went upstream without keep-alive: the upstream may take the
            # connection as done whatever its response says, so it is never reused.
            self.keep_alive = self.parser.should_keep_alive() and not exch.http10
        return out + new_head + rest if out or rest else new_head

    def _done(self) -> None:
        client, exch = self.client, self.exch
        assert client is not None and exch is not None  # called only while attached
        self.client = self.exch = None
        if self.keep_alive and exch.request_done and not self.closed:
            if client.write_paused:
                self.transport.resume_reading()  # it was paused for a slow client
            if client.spare is None and not client.closed and not self.proxy.draining:
                client.spare = self  # kept for the client's next request (see ClientConnection._start)
            else:
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

"""A scriptable HTTP/1.1 upstream for the proxy tests, on its own event loop thread.

Each `Upstream` listens on a free 127.0.0.1 port and answers by path:

- `/echo`     JSON: name, method, target, raw head, headers, body length and CRC-32 (Content-Length)
- `/chunked`  a chunked body of `n` chunks
- `/close`    a body delimited by closing the connection
- `/sse`      three server-sent events 0.3 s apart, chunked
- `/hop`      a response carrying hop-by-hop headers
- `/sleep`    answers after `s` seconds
- `/sink`     consumes the body (CRC-32 and length computed as it streams) and reports them
- `/close-after` answers, then closes the connection without announcing it
- `/ws`       (on `ws_port`) a WebSocket echo

It also counts the requests it has seen, so tests can prove a smuggled request never arrived.
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from urllib.parse import parse_qs, urlsplit

import httptools
import websockets.asyncio.server


class _Conn(asyncio.Protocol):
    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.up.connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.length = 0
        self.crc = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if ("expect", "100-continue") in [(k.lower(), v.lower()) for k, v in self.headers]:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.length += len(body)
        self.crc = zlib.crc32(body, self.crc)

    def on_message_complete(self) -> None:
        self.up.requests += 1
        parts = urlsplit(self.url.decode())
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        info = {"name": self.up.name, "method": self.parser.get_method().decode(), "target": self.url.decode(),
                "headers": self.headers, "length": self.length, "crc": self.crc}
        self.up.seen.append(info)
        asyncio.get_running_loop().create_task(self.respond(parts.path, query, info))

    async def respond(self, path: str, query: dict[str, str], info: dict) -> None:
        t = self.transport
        assert t is not None
        if path == "/sleep":
            await asyncio.sleep(float(query.get("s", "0.2")))
        if path == "/chunked":
            n = int(query.get("n", "3"))
            t.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n")
            for i in range(n):
                chunk = f"chunk {i}\n".encode()
                t.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            t.write(b"0\r\n\r\n")
        elif path == "/close":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + b"x" * 5000)
            t.close()
        elif path == "/sse":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(3):
                event = f"data: event {i}\n\n".encode()
                t.write(b"%x\r\n%b\r\n" % (len(event), event))
                await asyncio.sleep(0.3)
            t.write(b"0\r\n\r\n")
        elif path == "/bare-lf":  # a CGI script's own head, passed through as written (busybox httpd does this)
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\n\nfrom cgi\r\n\r\nstill body\n")
            t.close()
        elif path == "/close-after":  # closes without saying so: a pooled connection that went stale
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            t.close()
        elif path == "/hop":
            body = b"hop"
            t.write(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
                    b"Proxy-Authenticate: Basic\r\nX-End-To-End: kept\r\nContent-Length: 3\r\n\r\n" + body)
        else:  # /echo, /sleep, /sink
            body = json.dumps(info).encode()
            if self.parser.get_method() == b"HEAD":
                t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            else:
                t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                        % (len(body), body))


class Upstream:
    """An upstream server running on a background thread; use as a context manager."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.ws_port = 0
        self.requests = 0
        self.connections = 0
        self.seen: list[dict] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Upstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._server = await self._loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

        async def echo(ws: websockets.asyncio.server.ServerConnection) -> None:
            async for message in ws:
                await ws.send(message)

        self._ws = await websockets.asyncio.server.serve(echo, "127.0.0.1", 0)
        self.ws_port = next(iter(self._ws.sockets)).getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        self._ws.close()

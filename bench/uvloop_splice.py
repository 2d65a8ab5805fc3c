"""A yardstick for bench/proxy, not a proxy: the cheapest thing a uvloop program can do in its place.

Each client connection gets its own upstream connection, and bytes are copied across both
ways as they arrive: no HTTP parsing, no routing, no pooling, no header rewriting. It
cannot route per request, so it is not a design for mirage; it shows what the event loop,
the Python callbacks and the kernel cost before any HTTP logic, so that bench/proxy can
say how much of the gap to nginx is the proxy's own work.

    python bench/uvloop_splice.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()  # type: ignore[union-attr]


class Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.upstream_port)
        for data in self.early:
            self.upstream.transport.write(data)  # type: ignore[union-attr]
        self.early = []

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.transport.write(data)  # type: ignore[union-attr]
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.transport.close()  # type: ignore[union-attr]


async def main(listen: int, upstream: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: Client(upstream), "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))

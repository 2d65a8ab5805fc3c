"""One proxy process: an event loop, its route table and feed, its listeners, until told to stop.

`serve` (in `__init__`) runs one of these in-process, or one per forked worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import socket
import sys
from collections.abc import Callable

import uvloop

from ..config import Config
from ..store import Store
from . import native
from .client import ClientConnection
from .counters import AccessCounter
from .routes import Resolver, RouteFeed, RouteTable
from .server import POOL_IDLE_SECONDS, Proxy

log = logging.getLogger("mirage_git.proxy")

DRAIN_SECONDS = 5.0  # on SIGTERM, how long requests in flight may take to finish
FIRST_LOAD_SECONDS = 5.0  # how long to wait for the first route table before listening anyway

Listener = tuple[socket.socket, int | None]  # a bound, listening socket and its container port (None = main)


def run(config: Config, listeners: list[Listener]) -> None:
    """Serve on `listeners` until SIGINT or SIGTERM (blocking)."""
    # The route feed and counter threads need the GIL briefly; a short switch interval hands it
    # over within 1 ms instead of 5, which keeps route changes fast while requests keep the loop busy.
    sys.setswitchinterval(0.001)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(config, listeners))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(config: Config, listeners: list[Listener]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    store = Store.from_url(config.effective_redis_url)
    table = RouteTable(config)
    feed = RouteFeed(store, table, loop)
    feed.start()
    counter = AccessCounter(store, table.take_hits)
    proxy = Proxy(loop, connect_timeout=config.proxy.connect_timeout,
                  idle_timeout=config.proxy.idle_timeout)
    await loop.run_in_executor(None, feed.ready.wait, FIRST_LOAD_SECONDS)
    await asyncio.sleep(0)  # let the first table the feed handed over be applied
    servers = [await loop.create_server(_factory(proxy, table.resolver(target)), sock=sock, backlog=4096)
               for sock, target in listeners]
    # Everything made so far (modules, config, the first route table) lives as long as the process:
    # moving it out of the collector's sight keeps full collections, and their pauses, small.
    gc.freeze()
    names = ", ".join(f"{_name(sock)}" + (f" (→ container port {t})" if t else "") for sock, t in listeners)
    log.info("proxy listening on %s with %d routes; hot path: %s", names, len(table.routes), native.status())
    tasks = [loop.create_task(counter.run()), loop.create_task(_sweep(proxy, config.proxy.idle_timeout))]

    await stop.wait()
    log.info("proxy stopping: finishing requests in flight (up to %.0f s)", DRAIN_SECONDS)
    for server in servers:
        server.close()
    proxy.drain()
    deadline = loop.time() + DRAIN_SECONDS
    while proxy.clients and loop.time() < deadline:
        await asyncio.sleep(0.05)
    proxy.close_all()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    feed.stop()
    await asyncio.sleep(0)  # let transports finish closing


def _factory(proxy: Proxy, resolve: Resolver) -> Callable[[], ClientConnection]:
    return lambda: ClientConnection(proxy, resolve)


async def _sweep(proxy: Proxy, idle_timeout: float) -> None:
    """Close idle client connections and stale pooled upstream connections, without per-request timers."""
    interval = max(0.005, min(0.5, idle_timeout / 4))
    ticks_idle = max(1, math.ceil(idle_timeout / interval))
    ticks_pool = max(1, math.ceil(min(POOL_IDLE_SECONDS, idle_timeout) / interval))
    while True:
        await asyncio.sleep(interval)
        proxy.sweep(ticks_idle, ticks_pool)


def _name(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

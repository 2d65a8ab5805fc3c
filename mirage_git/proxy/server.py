"""How requests are forwarded: the design, and what one worker's connections share.

The forwarding itself lives in two asyncio Protocols, `client.ClientConnection` and
`upstream.UpstreamConnection`; this module holds their shared state (`Proxy`: settings,
the upstream pool, the set of client connections) and `Exchange`.

A `ClientConnection` splits the client's byte stream into requests and routes each one
on its own Host header, so one keep-alive connection can reach several environments.
Requests wait in a queue and are answered in order (pipelining). Each is forwarded on
a pooled keep-alive `UpstreamConnection`, which finds the end of the response and
strips its hop-by-hop headers. A client connection keeps the upstream connection of its
last exchange for its next request (`ClientConnection.spare`), and gives it back to the
pool when it goes quiet or away: a busy keep-alive client then skips the pool, and both
sockets stay warm in the CPU's caches.

Parsing costs Python time per request, so it is kept to what routing and framing need,
done in as few calls as possible (in CPython a call costs more than a scan of a whole
head): the common request, one bodyless HTTP/1.1 request in one read, takes one pass
through `ClientConnection._fast`; `headers` checks a head with one search over the
lower-cased bytes (a regex pass over every header only when something unusual is there);
and the head is fed whole to llhttp (httptools), which validates it (the smuggling
defences live there: CL+TE, duplicate or invalid Content-Length, bad chunk syntax → 400)
and tells us, through two cheap callbacks, whether the message ended exactly where our
framing says it must. Bodies are never decoded: they pass through as the bytes that
came in, sliced only where one read holds more than one message.

Bodies stream in both directions and are never held whole: each side pauses reading
the other when its write buffer fills (`pause_writing` → `pause_reading`). Writes made
while handling one read are joined into one `transport.write`, so there is about one
syscall per direction per request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .client import ClientConnection
    from .routes import Decision
    from .upstream import UpstreamConnection

POOL_IDLE_SECONDS: Final = 2.0  # close pooled upstream connections idle this long (below common keep-alive timeouts)
POOL_MAX_IDLE: Final = 512  # idle connections kept per upstream port
QUEUE_LIMIT: Final = 64 * 1024  # body bytes we hold for an upstream that is not ready, before pausing the client
PIPELINE_MAX: Final = 32  # requests queued on one connection, before pausing the client
MAX_HEAD: Final = 64 * 1024  # longest request or response head accepted

# Why a client's reading is paused (a bit mask: reading resumes when no reason is left).
UPSTREAM_FULL: Final = 1  # the upstream's write buffer is full
QUEUED: Final = 2  # requests or body bytes are waiting for an upstream
UPGRADING: Final = 4  # an upgrade request waits for the upstream's answer
REJECTED: Final = 8  # a malformed request was read: nothing after it will be
CLIENT_FULL: Final = 16  # our write buffer towards the client is full: it reads nothing, so read nothing from it


class Proxy:
    """What one worker process shares between its connections: settings, the upstream pool, the clients."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, connect_timeout: float, idle_timeout: float) -> None:
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.pool: dict[int, list[UpstreamConnection]] = {}
        self.clients: set[ClientConnection] = set()
        self.draining = False

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
            if client.buf:  # in the middle of a request head: trickling bytes do not keep it alive
                client.head_ticks += 1
                if client.head_ticks >= ticks_idle:
                    client.head_timeout()
                    continue
            if client.active:
                client.active = False
                client.idle_ticks = 0
            else:
                if client.spare is not None:  # quiet for a whole sweep: its upstream goes where the pool ages it
                    client.release_spare()
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
        self.replayable = request_done  # no body (and, set by the client, an idempotent method): can be resent
        self.body: tuple[bytes, ...] | list[bytes] = ()  # request body bytes waiting for an upstream
        self.buffered = 0
        self.http10 = False  # an HTTP/1.0 client: gets no 1xx responses
        self.is_head = self.upgrade = self.response_done = self.retried = self.started = False
        self.upstream: UpstreamConnection | None = None

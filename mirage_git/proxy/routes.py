"""Where routes come from: an in-memory table kept in step with Redis.

The request path never talks to Redis. `RouteTable` lives on the event loop and answers
"what do I do with a request for this Host?" from a dict. `RouteFeed` runs in a thread:
it subscribes to route changes (so a change is applied within milliseconds), re-reads
the whole table about once a second as a safety net for missed messages, and when
Redis is down it keeps the last known table, says so in the log, and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable

import redis

from ..config import Config
from ..models import Route
from ..store import Store
from . import pages

log = logging.getLogger("mirage_git.proxy")

RESYNC_SECONDS = 1.0
_CACHE_MAX = 4096  # distinct Host values remembered per listener; more are recomputed
_UNKNOWN_MAX = 256  # of which hosts without a route (each holds its own 404 page)
# A Host value (RFC 9110 §7.2: uri-host [":" port]): an IP literal or a reg-name, at most a DNS
# name's length. Anything else gets 400 and is never cached, so odd Host values cannot grow a cache.
_VALID_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]{0,253})(?::[0-9]{0,5})?")
INVALID_HOST = pages.bad_request("The Host header is not a valid host name.")


class Decision:
    """What to do with a request: forward to 127.0.0.1:`port`, else answer with `page`.

    A slotted class rather than a NamedTuple: its fields are read on every request, and
    slot access is the fastest attribute access CPython has.
    """

    __slots__ = ("closes", "hits", "host", "known", "page", "port")

    def __init__(self, host: str, port: int | None, page: bytes | None, known: bool, closes: bool = False) -> None:
        self.host = host
        self.port = port
        self.page = page
        self.known = known  # the host has a route (its hits count in access statistics)
        self.closes = closes  # after `page`, close the connection (an invalid Host)
        self.hits = 0  # requests since `RouteTable.take_hits` last looked

    def __repr__(self) -> str:
        return f"Decision({self.host!r}, port={self.port}, page={self.page is not None}, known={self.known})"


def normalise_host(raw: bytes) -> str:
    """The route key for a Host header value: lower-case, without port or trailing dot."""
    host = raw.strip().lower().decode("latin-1")
    host = host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]  # "[::1]:80" is IPv6
    return host.rstrip(".")


class RouteTable:
    """The routes one worker knows, and per-listener caches of decisions derived from them.

    Only the event loop's thread touches it; `RouteFeed` hands it new data through
    `loop.call_soon_threadsafe`, so there are no locks on the request path.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.routes: dict[str, Route] = {}
        self.loaded = False
        self._caches: list[dict[bytes, Decision]] = []
        self._live: str | None = None
        self._hits: dict[str, int] = {}  # hits of decisions dropped from a cache, not yet taken

    def replace(self, routes: dict[str, Route]) -> None:
        self.loaded = True
        if routes != self.routes:
            self.routes = routes
            self._changed()

    def update(self, host: str, route: Route | None) -> None:
        if self.routes.get(host) == route:
            return
        routes = dict(self.routes)
        if route is None:
            routes.pop(host, None)
        else:
            routes[host] = route
        self.routes = routes
        self._changed()

    def _changed(self) -> None:
        self._live = None
        for cache in self._caches:
            self.forget(cache)

    def forget(self, cache: dict[bytes, Decision]) -> None:
        """Empty a decision cache, keeping the hits its decisions counted."""
        self._add_hits(cache.values(), self._hits)
        cache.clear()

    def take_hits(self) -> dict[str, int]:
        """Requests per routed host since the last call (for `AccessCounter`)."""
        hits, self._hits = self._hits, {}
        for cache in self._caches:
            self._add_hits(cache.values(), hits)
        return hits

    @staticmethod
    def _add_hits(decisions: Iterable[Decision], hits: dict[str, int]) -> None:
        for decision in decisions:
            if decision.hits:
                if decision.known:
                    hits[decision.host] = hits.get(decision.host, 0) + decision.hits
                decision.hits = 0

    def live(self) -> str:
        """The 404 page's links to the live envs, built once per route change."""
        if self._live is None:
            live = [(h, self.config.env_url(h)) for h, r in sorted(self.routes.items()) if r.state == "live"]
            self._live = pages.live_listing(live, self.config.web.base_url + "/")
        return self._live

    def resolver(self, target: int | None) -> Resolver:
        """A cached `Host → Decision` lookup for a listener; `target` is its container port (None = main)."""
        resolver = Resolver(self, target)
        self._caches += (resolver.cache, resolver.missing)
        return resolver

    def decide(self, host: str, target: int | None) -> Decision:
        route = self.routes.get(host)
        if route is None:
            return Decision(host, None, pages.not_found(host, self.live()), False)
        log_url = f"{self.config.web.base_url}/jobs/{route.job_id}" if route.job_id else None
        if route.state == "building":
            return Decision(host, None, pages.building(route, log_url), True)
        if route.state != "live":
            return Decision(host, None, pages.failed(route, log_url), True)
        port = route.port if target is None else route.ports.get(str(target))
        if port is None:
            why = "has no port to forward to" if target is None else f"does not publish container port {target}"
            return Decision(host, None, pages.bad_gateway(host, f"this environment {why}."), True)
        return Decision(host, port, None, True)


class Resolver:
    """`Host` header value → `Decision`, for one listener, cached until the routes change.

    The request path reads `cache` itself (a dict lookup costs less than a call) and
    calls the resolver only on a miss.
    """

    __slots__ = ("cache", "missing", "table", "target")

    def __init__(self, table: RouteTable, target: int | None) -> None:
        self.cache: dict[bytes, Decision] = {}
        self.missing: dict[bytes, Decision] = {}  # hosts without a route, kept apart and fewer
        self.table = table
        self.target = target

    def __call__(self, raw_host: bytes) -> Decision:
        decision = self.cache.get(raw_host)
        if decision is None:
            if _VALID_HOST.fullmatch(raw_host) is None:
                return Decision(raw_host[:100].decode("latin-1"), None, INVALID_HOST, False, closes=True)
            decision = self.missing.get(raw_host)
            if decision is not None:
                return decision
            decision = self.table.decide(normalise_host(raw_host), self.target)
            if not decision.known:  # each 404 page names its host, and any client can invent hosts by the thousand
                if len(self.missing) < _UNKNOWN_MAX:
                    self.missing[raw_host] = decision
                return decision
            if len(self.cache) >= _CACHE_MAX:
                self.table.forget(self.cache)
            self.cache[raw_host] = decision
        return decision


class RouteFeed:
    """Follows Redis from a daemon thread and applies what it reads to a `RouteTable`."""

    def __init__(self, store: Store, table: RouteTable, loop: asyncio.AbstractEventLoop,
                 resync: float = RESYNC_SECONDS) -> None:
        self.store, self.table, self.loop, self.resync = store, table, loop, resync
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mirage-proxy-routes", daemon=True)
        self._down_since: float | None = None
        self._raw: dict[str, str] = {}  # the table as last read, undecoded
        self._decoded: dict[str, Route] = {}
        self.ready = threading.Event()  # set once the first full table has been read (or Redis failed)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _apply(self, fn: Callable[..., None], *args: object) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                self._follow()
            except (redis.RedisError, OSError) as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning("Redis unavailable at %s (%s): serving the %d last known routes; reconnecting",
                                self.store.where, exc, len(self.table.routes))
                self.ready.set()
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
            except Exception:  # a bug here must not leave the proxy with frozen routes
                log.exception("route feed failed; restarting it")
                self._stop.wait(1.0)
            else:
                delay = 0.1

    def _full(self) -> None:
        """Re-read the whole table; decode only what changed, hand it over only if anything did.

        This runs every second in a thread that holds the GIL while it works, so the usual
        case (nothing changed) costs one HGETALL and one dict comparison, no JSON decoding.
        """
        raw = self.store.route_texts()
        if raw == self._raw and self.table.loaded:
            return
        routes = {}
        for host, text in raw.items():
            route = self._decoded.get(host) if self._raw.get(host) == text else self._decode(host, text)
            if route is not None:
                routes[host] = route
        self._raw, self._decoded = raw, routes
        self._apply(self.table.replace, dict(routes))

    def _decode(self, host: str, text: str | None) -> Route | None:
        """One route, or None when there is none or it is invalid (logged, and the others still apply)."""
        if text is None:
            return None
        try:
            return Route.from_json(host, text)
        except Exception as exc:  # ValueError, or anything a hostile JSON value can raise: never stop the feed
            log.error("ignoring the invalid route for %s (%s): %r", host, exc, text[:200])
            return None

    def _follow(self) -> None:
        # Subscribe before the full read, so no change can fall between the two.
        pubsub = self.store.route_changes()
        try:
            self._full()
            if self._down_since is not None:
                log.warning("Redis is back after %.1f s; routes resynced", time.monotonic() - self._down_since)
                self._down_since = None
            self.ready.set()
            next_sync = time.monotonic() + self.resync
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=max(0.0, next_sync - time.monotonic()))
                if message and message.get("type") == "message":
                    host = message["data"]
                    if host == "*":
                        self._full()
                    else:
                        self._apply(self.table.update, host, self._decode(host, self.store.route_text(host)))
                if time.monotonic() >= next_sync:
                    self._full()
                    next_sync = time.monotonic() + self.resync
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

"""Access statistics: counted in memory on the request path, written to Redis in batches.

The request path only adds one to its `Decision.hits` (an attribute, cheaper than any
dict update). Every `interval` seconds a task on the event loop collects the hits per
host (`RouteTable.take_hits`) and hands them to a thread that calls `Store.record_access`,
so a slow or absent Redis never delays a request. A batch that could not be written is
kept and retried with the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis

from ..store import Store

log = logging.getLogger("mirage_git.proxy")

FLUSH_SECONDS = 1.0


class AccessCounter:
    """Requests per host since the last flush. `last_seen` is the flush time, so accurate to `interval`."""

    def __init__(self, store: Store, collect: Callable[[], dict[str, int]], interval: float = FLUSH_SECONDS) -> None:
        self.store = store
        self.collect = collect  # hits per host since the last call (called on the event loop)
        self.interval = interval
        self.counts: dict[str, int] = {}  # collected, not yet written
        self._failed = False

    async def run(self) -> None:
        """Flush every `interval` seconds until cancelled (then flush once more)."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        for host, n in self.collect().items():
            self.counts[host] = self.counts.get(host, 0) + n
        if not self.counts:
            return
        counts, self.counts = self.counts, {}
        now = time.time()
        last_seen = dict.fromkeys(counts, now)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.store.record_access, counts, last_seen)
        except (redis.RedisError, OSError) as exc:
            for host, n in counts.items():  # keep them for the next batch
                self.counts[host] = self.counts.get(host, 0) + n
            if not self._failed:
                log.warning("could not write access counters (%s); will retry", exc)
            self._failed = True
        else:
            self._failed = False

"""Access statistics: counted in memory on the request path, written to Redis in batches.

Counting is one dict update per request; a task on the event loop swaps the dict out
every `interval` seconds and hands it to a thread that calls `Store.record_access`, so
a slow or absent Redis never delays a request. A batch that could not be written is
merged back and retried with the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis

from ..store import Store

log = logging.getLogger("mirage_git.proxy")

FLUSH_SECONDS = 1.0


class AccessCounter:
    """Requests per host since the last flush. `last_seen` is the flush time, so accurate to `interval`."""

    def __init__(self, store: Store, interval: float = FLUSH_SECONDS) -> None:
        self.store = store
        self.interval = interval
        self.counts: dict[str, int] = {}  # the request path adds to it directly: no call per request
        self._failed = False

    async def run(self) -> None:
        """Flush every `interval` seconds until cancelled (then flush once more)."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                await self.flush()
        finally:
            if self.counts:
                await asyncio.shield(self.flush())

    async def flush(self) -> None:
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

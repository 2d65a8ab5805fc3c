"""Everything mirage-git keeps in Redis, behind one small API.

This is the only module that knows key names. Redis is the single source of truth:
routes (read by the proxy), envs, jobs, job logs (one stream per job, so readers can
resume from an entry id) and the slug table that keeps hostnames stable.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from .errors import Unavailable
from .models import Env, Job, Route

log = logging.getLogger("mirage_git.store")

# Key names. Hosts are unique across apps, so they identify an env.
ROUTES = "mirage:routes"  # hash: host → Route JSON
ROUTES_CHANNEL = "mirage:routes"  # pub/sub: a host whose route changed, or "*" for all
ENVS = "mirage:envs"  # set of hosts
JOBS = "mirage:jobs"  # sorted set: job id by creation time
ACCESS_COUNT = "mirage:access:count"  # hash: host → requests served
ACCESS_LAST = "mirage:access:last"  # hash: host → epoch seconds of the last request
WEB_SECRET = "mirage:web:secret"  # string: the key that signs web sessions when [auth] secret_key is unset
JOBS_KEPT = 2000


def _env(host: str) -> str:
    return f"mirage:env:{host}"


def _env_jobs(host: str) -> str:
    return f"mirage:env:{host}:jobs"


def _latest(host: str) -> str:
    return f"mirage:env:{host}:latest"


def _slugs(app: str) -> str:
    return f"mirage:app:{app}:slugs"  # hash: branch → slug


def _slug_owners(app: str) -> str:
    return f"mirage:app:{app}:slug-owners"  # hash: slug → branch


def _job(job_id: str) -> str:
    return f"mirage:job:{job_id}"


def _log(job_id: str) -> str:
    return f"mirage:job:{job_id}:log"


def _plain(name: str) -> bool:
    """True when `name` (a host or job id, often from a URL) names only its own key.

    Hosts and job ids never contain ':', the key separator; `<host>:jobs` or `<job>:log`
    would read another record's key (of another type), which Redis answers with an error.
    """
    return bool(name) and ":" not in name


_CLAIM_SLUG = """
local have = redis.call('HGET', KEYS[1], ARGV[1])
if have then return have end
for i = 2, #ARGV do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[1]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[i])
    return ARGV[i]
  end
end
return false
"""

LogEntry = tuple[str, dict[str, str]]


class Store:
    """Typed access to mirage-git's state. Cheap to create; share one per process."""

    def __init__(self, conn: redis.Redis, where: str = "redis") -> None:
        self.r = conn
        self.where = where
        self._claim = conn.register_script(_CLAIM_SLUG)

    @classmethod
    def from_url(cls, url: str) -> Store:
        conn = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=3,
                                    health_check_interval=30)
        return cls(conn, url)

    def ping(self) -> None:
        """Raise `Unavailable` with a fix when Redis does not answer."""
        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise Unavailable.redis(self.where, exc) from None

    # --- routes: written by workers, read by the proxy ----------------------------------
    def route(self, host: str) -> Route | None:
        """The route for `host`; None when there is none, or only an invalid one (the next write replaces it)."""
        text = self.route_text(host)
        try:
            return Route.from_json(host, text) if text else None
        except ValueError:
            return None

    def route_texts(self) -> dict[str, str]:
        """Every route's JSON text by host, read undecoded: one entry that is not UTF-8 must not hide the rest."""
        raw = self.r.execute_command("HGETALL", ROUTES, NEVER_DECODE=True)
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        texts = {}
        for key, value in pairs:
            host, text = _utf8(key), _utf8(value)
            if host is not None and text is not None:
                texts[host] = text
        return texts

    def route_text(self, host: str) -> str | None:
        """One route's JSON text; None when there is none, or it is not UTF-8."""
        return _utf8(self.r.execute_command("HGET", ROUTES, host, NEVER_DECODE=True))

    def set_route(self, route: Route) -> None:
        pipe = self.r.pipeline()
        pipe.hset(ROUTES, route.host, route.to_json())
        pipe.publish(ROUTES_CHANNEL, route.host)
        pipe.execute()

    def delete_route(self, host: str) -> None:
        pipe = self.r.pipeline()
        pipe.hdel(ROUTES, host)
        pipe.publish(ROUTES_CHANNEL, host)
        pipe.execute()

    def route_changes(self) -> redis.client.PubSub:
        """A pub/sub subscription whose messages name hosts whose route changed."""
        pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(ROUTES_CHANNEL)
        return pubsub

    # --- slugs --------------------------------------------------------------------------
    def claim_slug(self, app: str, branch: str, candidates: Iterable[str]) -> str:
        """The branch's slug: the one it already has, else the first free candidate."""
        slug = self._claim(keys=[_slugs(app), _slug_owners(app)], args=[branch, *candidates])
        if not slug:
            raise RuntimeError(f"no free hostname for branch {branch!r}")
        return slug

    def slug_of(self, app: str, branch: str) -> str | None:
        return self.r.hget(_slugs(app), branch)

    # --- envs ---------------------------------------------------------------------------
    def env(self, host: str) -> Env | None:
        if not _plain(host):
            return None
        data = self.r.hgetall(_env(host))
        return Env.from_hash(data) if data else None

    def envs(self) -> list[Env]:
        hosts = sorted(self.r.smembers(ENVS))
        pipe = self.r.pipeline()
        for host in hosts:
            pipe.hgetall(_env(host))
        return [Env.from_hash(d) for d in pipe.execute() if d]

    def save_env(self, env: Env) -> None:
        pipe = self.r.pipeline()
        pipe.sadd(ENVS, env.host)
        pipe.hset(_env(env.host), mapping=env.to_hash())
        pipe.execute()

    def update_env(self, host: str, **values: Any) -> None:
        """Set some fields of an existing env; None values are removed."""
        if not self.r.exists(_env(host)):
            return
        self._hset(_env(host), values)

    def forget_env(self, job_id: str, host: str, app: str, branch: str) -> bool:
        """Drop every trace of an env (route, record, slug, counters), unless a newer job owns it."""
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(_latest(host))
                if pipe.get(_latest(host)) != job_id:
                    return False
                slug = pipe.hget(_slugs(app), branch)
                pipe.multi()
                pipe.hdel(ROUTES, host)
                pipe.srem(ENVS, host)
                pipe.delete(_env(host), _latest(host))
                pipe.hdel(_slugs(app), branch)
                if slug:
                    pipe.hdel(_slug_owners(app), slug)
                pipe.hdel(ACCESS_COUNT, host)
                pipe.hdel(ACCESS_LAST, host)
                pipe.publish(ROUTES_CHANNEL, host)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def set_latest(self, host: str, job_id: str) -> str | None:
        """Make `job_id` the job that decides what `host` serves; returns the one it replaces."""
        return self.r.set(_latest(host), job_id, get=True)

    def latest(self, host: str) -> str | None:
        return self.r.get(_latest(host))

    def promote(self, job_id: str, route: Route, **env_values: Any) -> bool:
        """Point `route.host` at a new version, unless a newer job has taken over the env.

        The check and the write happen in one transaction, so of two deploys racing to the
        finish the one enqueued last always wins.
        """
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(_latest(route.host))
                if pipe.get(_latest(route.host)) != job_id:
                    return False
                pipe.multi()
                pipe.hset(ROUTES, route.host, route.to_json())
                self._hset(_env(route.host), env_values, pipe)
                pipe.publish(ROUTES_CHANNEL, route.host)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    # --- jobs ---------------------------------------------------------------------------
    def save_job(self, job: Job) -> None:
        pipe = self.r.pipeline()
        pipe.hset(_job(job.id), mapping=job.to_hash())
        pipe.zadd(JOBS, {job.id: job.created_at})
        pipe.zadd(_env_jobs(job.host), {job.id: job.created_at})
        pipe.execute()
        self._trim_jobs()

    def job(self, job_id: str) -> Job | None:
        if not _plain(job_id):
            return None
        data = self.r.hgetall(_job(job_id))
        return Job.from_hash(data) if data else None

    def update_job(self, job_id: str, **values: Any) -> None:
        self._hset(_job(job_id), values)

    def jobs(self, limit: int = 50, host: str | None = None) -> list[Job]:
        ids = self.r.zrevrange(_env_jobs(host) if host else JOBS, 0, max(limit, 1) - 1)
        pipe = self.r.pipeline()
        for job_id in ids:
            pipe.hgetall(_job(job_id))
        return [Job.from_hash(d) for d in pipe.execute() if d]

    def _trim_jobs(self) -> None:
        extra = self.r.zcard(JOBS) - JOBS_KEPT
        if extra <= 0:
            return
        for job_id in self.r.zrange(JOBS, 0, extra - 1):
            host = self.r.hget(_job(job_id), "host")
            pipe = self.r.pipeline()
            pipe.delete(_job(job_id), _log(job_id))
            pipe.zrem(JOBS, job_id)
            if host:
                pipe.zrem(_env_jobs(host), job_id)
            pipe.execute()

    # --- job logs -----------------------------------------------------------------------
    def append_log(self, job_id: str, text: str, **extra: str) -> str:
        """Add one line to a job's log; returns the entry id readers resume from."""
        return self.r.xadd(_log(job_id), {"t": text, "ts": f"{time.time():.3f}", **extra})

    def finish_job(self, job_id: str, status: str, line: str, **values: Any) -> None:
        """Write a job's last log line and its final status in one transaction.

        Readers stop at the line marked `end`; whoever reads the status next must see the
        outcome that line announced, never the job still running.
        """
        pipe = self.r.pipeline(transaction=True)
        self._hset(_job(job_id), {"status": status, "ended_at": time.time(), **values}, pipe)
        pipe.xadd(_log(job_id), {"t": line, "ts": f"{time.time():.3f}", "end": status})
        pipe.execute()

    def log(self, job_id: str, after: str = "0-0", count: int | None = None) -> list[LogEntry]:
        """Entries strictly after entry id `after`."""
        return self.r.xrange(_log(job_id), min=f"({after}" if after != "0-0" else "-", count=count)

    def log_text(self, job_id: str) -> str:
        return "".join(fields.get("t", "") + "\n" for _, fields in self.r.xrange(_log(job_id)))

    def follow_log(self, job_id: str, after: str = "0-0", poll: float = 1.0) -> Iterator[LogEntry]:
        """Yield a job's log entries as they are written, until the job's last line (`end`).

        Yields `("", {})` every `poll` seconds of silence so streaming callers can send a
        keep-alive and notice a dropped client.
        """
        for batch in self.follow_log_batches(job_id, after, poll):
            if not batch:
                yield "", {}
            yield from batch

    def follow_log_batches(self, job_id: str, after: str = "0-0", poll: float = 1.0,
                           count: int = 1000) -> Iterator[list[LogEntry]]:
        """Like `follow_log`, but one list per read: what was waiting, up to `count` entries.

        An empty list stands for `poll` seconds of silence. Readers that forward lines over
        the network (the log page's event stream) send one message per list, not per line.
        Like `follow_log`, it stops at the job's last line (`end`).
        """
        while True:
            batch = self.r.xread({_log(job_id): after}, count=count, block=int(poll * 1000))
            entries: list[LogEntry] = list(batch[0][1]) if batch else []
            if entries:
                last = next((i for i, e in enumerate(entries) if "end" in e[1]), None)
                if last is not None:
                    yield entries[: last + 1]
                    return
                after = entries[-1][0]
                yield entries
                continue
            job = self.job(job_id)
            if job is None or job.done:
                while rest := self.log(job_id, after, count=count):
                    after = rest[-1][0]
                    yield rest
                return
            yield []

    # --- access counters (written in batches by the proxy) ------------------------------
    def record_access(self, counts: dict[str, int], last_seen: dict[str, float]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for host, n in counts.items():
            pipe.hincrby(ACCESS_COUNT, host, n)
        if last_seen:
            pipe.hset(ACCESS_LAST, mapping={h: f"{t:.3f}" for h, t in last_seen.items()})
        pipe.execute()

    def access(self) -> dict[str, tuple[int, float | None]]:
        counts, last = self.r.hgetall(ACCESS_COUNT), self.r.hgetall(ACCESS_LAST)
        hosts = set(counts) | set(last)
        return {h: (int(counts.get(h, 0)), float(last[h]) if h in last else None) for h in hosts}

    def access_of(self, host: str) -> tuple[int, float | None]:
        """One env's request count and last request time (epoch seconds), as the proxy recorded them."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(ACCESS_COUNT, host)
        pipe.hget(ACCESS_LAST, host)
        count, last = pipe.execute()
        return int(count or 0), float(last) if last else None

    # --- web sessions -------------------------------------------------------------------
    def web_secret(self) -> str:
        """A random signing key shared by every web process, made once and kept in Redis."""
        self.r.set(WEB_SECRET, secrets.token_urlsafe(48), nx=True)
        return self.r.get(WEB_SECRET)

    def forget_access(self, host: str) -> None:
        pipe = self.r.pipeline()
        pipe.hdel(ACCESS_COUNT, host)
        pipe.hdel(ACCESS_LAST, host)
        pipe.execute()

    # --- helpers ------------------------------------------------------------------------
    def _hset(self, key: str, values: dict[str, Any], pipe: Any = None) -> None:
        sets = {k: json.dumps(v) if isinstance(v, dict | list) else str(v)
                for k, v in values.items() if v is not None}
        dels = [k for k, v in values.items() if v is None]
        target = pipe if pipe is not None else self.r.pipeline()
        if sets:
            target.hset(key, mapping=sets)
        if dels:
            target.hdel(key, *dels)
        if pipe is None:
            target.execute()


def _utf8(raw: bytes | None) -> str | None:
    """A route's host or text as read from Redis; None (logged) when someone wrote bytes that are not UTF-8."""
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        log.error("ignoring route data that is not UTF-8: %r", raw[:100])
        return None

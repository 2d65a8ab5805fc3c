"""Purge: terminate envs nobody has used for a while (mirage-ecs's `/api/purge`).

An env's last activity is the later of its last request through the proxy and its last
deploy, so a branch that was pushed an hour ago is not idle even if nobody opened it yet.
Envs with a job in flight are never picked: they are being worked on right now.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import rq

from . import queue
from .actions import Refused
from .config import Config
from .models import Env, iso
from .store import Store

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: str | int | float) -> float:
    """Seconds from `90`, `"90"`, `"45m"`, `"2h"`, `"1h30m"` or `"7d"`; refuses zero and nonsense."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 2h, 30m, 7d")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond any float, e.g. 10**400 from a JSON body
            seconds = float("inf")
    else:
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and _DURATION.sub("", text) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration; use seconds or text like 2h, 30m, 7d")
    if not 0 < seconds < 10 * 365 * 86400:
        raise ValueError("a duration must be more than 0 seconds and less than 10 years")
    return seconds


@dataclass(frozen=True)
class Idle:
    """An env chosen for purging, and why."""

    env: Env
    idle_seconds: float
    last_request_at: float | None
    job_id: str | None = None  # the teardown job, once enqueued

    def to_api(self) -> dict[str, object]:
        return {"app": self.env.app, "branch": self.env.branch, "host": self.env.host, "url": self.env.url,
                "idle_seconds": round(self.idle_seconds), "last_request_at": iso(self.last_request_at),
                "deployed_at": iso(self.env.deployed_at), "job_id": self.job_id}


def select(store: Store, older_than: float, *, app: str | None = None, exclude: Iterable[str] = (),
           exclude_regex: str | None = None, now: float | None = None) -> list[Idle]:
    """Envs idle for more than `older_than` seconds, minus excluded branches and busy envs."""
    now = time.time() if now is None else now
    skip = set(exclude)
    pattern = re.compile(exclude_regex) if exclude_regex else None
    access = store.access()
    chosen = []
    for env in store.envs():
        if (app and env.app != app) or env.branch in skip or (pattern and pattern.search(env.branch)):
            continue
        latest = store.job(env.job_id) if env.job_id else None
        if latest is not None and not latest.done:
            continue
        last_request = access.get(env.host, (0, None))[1]
        active = max(t for t in (last_request, env.deployed_at, env.created_at) if t is not None)
        if now - active > older_than:
            chosen.append(Idle(env, now - active, last_request))
    return sorted(chosen, key=lambda i: -i.idle_seconds)


def purge(config: Config, store: Store, rq_queue: rq.Queue, older_than: str | float, *, app: str | None = None,
          exclude: Iterable[str] = (), exclude_regex: str | None = None, dry_run: bool = False,
          source: str = "api") -> list[Idle]:
    """Terminate every env `select` picks (or only list them, with `dry_run`)."""
    fields = {}
    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        fields["older_than"] = str(exc)
    if app is not None and app not in config.apps:
        fields["app"] = "unknown app"
    if exclude_regex:
        try:
            re.compile(exclude_regex)
        except re.error as exc:
            fields["exclude_regex"] = f"is not a valid regular expression ({exc})"
    if fields:
        raise Refused("; ".join(f"{k}: {v}" for k, v in fields.items()), 422, fields)
    chosen = select(store, seconds, app=app, exclude=exclude, exclude_regex=exclude_regex)
    if dry_run:
        return chosen
    done = []
    for idle in chosen:
        appcfg = config.apps.get(idle.env.app)
        if appcfg is None:
            continue
        job = queue.teardown(config, store, rq_queue, appcfg, idle.env.branch, source=source, pusher="purge")
        done.append(Idle(idle.env, idle.idle_seconds, idle.last_request_at, job.id))
    return done

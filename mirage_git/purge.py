"""Purge: terminate envs nobody has used for a while (mirage-ecs's `/api/purge`).

An env's last activity is the later of its last request through the proxy and its last
deploy, so a branch that was pushed an hour ago is not idle even if nobody opened it yet.
Envs with a job in flight are never picked: they are being worked on right now.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
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
REGEX_SECONDS = 3.0  # how long `exclude_regex` may take over all branch names
# Runs in a child process: Python's `re` cannot be interrupted, and a pattern like `(a+)+$`
# would otherwise hold the web worker (and its GIL) for hours on a branch like `aaaa…!`.
_MATCHER = ("import json, re, sys; d = json.load(sys.stdin); p = re.compile(d['pattern']); "
            "json.dump([n for n in d['names'] if p.search(n)], sys.stdout)")


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
    envs = store.envs()
    if exclude_regex:
        skip |= _matching(exclude_regex, sorted({e.branch for e in envs} - skip))
    access = store.access()
    chosen = []
    for env in envs:
        if (app and env.app != app) or env.branch in skip:
            continue
        latest = store.job(env.job_id) if env.job_id else None
        if latest is not None and not latest.done:
            continue
        last_request = access.get(env.host, (0, None))[1]
        active = max(t for t in (last_request, env.deployed_at, env.created_at) if t is not None)
        if now - active > older_than:
            chosen.append(Idle(env, now - active, last_request))
    return sorted(chosen, key=lambda i: -i.idle_seconds)


def _matching(pattern: str, names: list[str]) -> set[str]:
    """The names `pattern` finds a match in, or `Refused` when it takes longer than `REGEX_SECONDS`."""
    if not names:
        return set()
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _MATCHER], capture_output=True, text=True,
                              input=json.dumps({"pattern": pattern, "names": names}), timeout=REGEX_SECONDS)
    except subprocess.TimeoutExpired:
        problem = (f"took longer than {REGEX_SECONDS:g}s to match the branch names (a pattern like (a+)+ "
                   "backtracks without end); simplify it")
        raise Refused(f"exclude_regex: {problem}", 422, {"exclude_regex": problem}) from None
    if proc.returncode != 0:
        raise RuntimeError(f"exclude_regex matcher failed: {proc.stderr.strip()[-300:]}")
    return set(json.loads(proc.stdout))


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
        except (re.error, OverflowError, RecursionError) as exc:  # x{99999999999}; ((((…)))) nested too deep
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

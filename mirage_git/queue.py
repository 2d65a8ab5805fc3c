"""Turn "this branch moved" into an RQ job, with the records every reader needs.

Enqueueing claims the branch's hostname, writes the job and env records, and makes the
job the newest for its env. A job that is still queued when a newer one arrives is
marked superseded at once; a running one notices before it touches the route.
"""

from __future__ import annotations

import secrets

import redis
import rq

from . import naming
from .config import AppConfig, Config
from .errors import Unavailable
from .models import Env, Job, Route
from .store import Store

QUEUE_NAME = "mirage"


def rq_queue(config: Config) -> rq.Queue:
    conn = redis.Redis.from_url(config.effective_redis_url, socket_connect_timeout=3)
    return rq.Queue(QUEUE_NAME, connection=conn, default_timeout=config.worker.job_timeout)


def workers_alive(config: Config) -> int:
    """How many RQ workers are serving the mirage queue right now."""
    return rq.Worker.count(queue=rq_queue(config))


def new_job_id() -> str:
    return secrets.token_hex(6)


def env_host(store: Store, app: AppConfig, branch: str) -> str:
    """The branch's host, claiming a slug for it if it has none yet."""
    return naming.host(store.claim_slug(app.name, branch, naming.slug_candidates(branch)), app.domain)


def deploy(config: Config, store: Store, queue: rq.Queue, app: AppConfig, branch: str, commit: str | None = None,
           *, source: str, pusher: str | None = None, subject: str | None = None,
           params: dict[str, str] | None = None, repo: str | None = None, quarantine: str | None = None) -> Job:
    """Enqueue a deploy of `commit` (the branch tip when None) of `app`'s `branch`.

    A push passes the repository it landed in (`repo`) and, while its objects are still in
    git's quarantine, the quarantine's object directory.
    """
    return _enqueue(config, store, queue, app, branch, "deploy", commit, source=source, pusher=pusher,
                    subject=subject, params=params or {}, repo=repo, quarantine=quarantine)


def teardown(config: Config, store: Store, queue: rq.Queue, app: AppConfig, branch: str, *, source: str,
             pusher: str | None = None) -> Job:
    """Enqueue the removal of `app`'s env for `branch`."""
    return _enqueue(config, store, queue, app, branch, "teardown", None, source=source, pusher=pusher,
                    subject=None, params={}, repo=None)


def _enqueue(config: Config, store: Store, queue: rq.Queue, app: AppConfig, branch: str, action: str,
             commit: str | None, *, source: str, pusher: str | None, subject: str | None,
             params: dict[str, str], repo: str | None, quarantine: str | None = None) -> Job:
    if not naming.is_valid_branch(branch):
        raise ValueError(f"invalid branch name {branch!r}")
    try:
        host = env_host(store, app, branch)
        job = Job(id=new_job_id(), app=app.name, branch=branch, action=action, host=host,
                  env_url=config.env_url(host), commit=commit, source=source, pusher=pusher, subject=subject,
                  params=params, repo=repo, quarantine=quarantine)
        store.save_job(job)
        if action == "deploy":
            if store.env(host) is None:
                slug = host.split(".", 1)[0]
                store.save_env(Env(app=app.name, branch=branch, slug=slug, host=host, url=job.env_url,
                                   job_id=job.id, pusher=pusher, subject=subject, params=params))
            else:
                store.update_env(host, job_id=job.id, status="queued")
            route = store.route(host)
            if route is None or route.state != "live":
                store.set_route(Route(host, app.name, branch, "building", job_id=job.id))
        else:
            store.update_env(host, job_id=job.id, status="queued")
        previous = store.set_latest(host, job.id)
        if previous:
            _supersede_if_queued(store, previous, job.id)
        store.append_log(job.id, f"queued {action} of {app.name}/{branch}"
                         + (f" at {naming.short_sha(commit)}" if commit else "") + f" → {job.env_url}")
        func = "worker.jobs.deploy" if action == "deploy" else "worker.jobs.teardown"
        args = (app.name, branch, commit) if action == "deploy" else (app.name, branch)
        queue.enqueue(func, *args, job_id=job.id, result_ttl=86400, failure_ttl=7 * 86400,
                      description=f"{action} {app.name}/{branch}")
        return job
    except redis.RedisError as exc:
        raise Unavailable.redis(store.where, exc) from None


def _supersede_if_queued(store: Store, job_id: str, newer: str) -> None:
    old = store.job(job_id)
    if old is not None and old.status == "queued":
        store.finish_job(job_id, "superseded", f"superseded by job {newer} before it started")

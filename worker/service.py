"""`mirage-git worker`: supervised RQ worker processes, and the clean-up of what dead ones leave.

A worker that was killed mid-job (Ctrl-C on `up`, a reboot, Redis vanishing under it)
leaves a job marked running and maybe an env marked building. `recover` settles those, at
start and every minute after, so the dashboard never shows a build that nobody is doing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from datetime import UTC, datetime

import docker.errors
import redis
import rq
from rq.job import Job as RQJob
from rq.job import JobStatus

from mirage_git import queue
from mirage_git.config import CONFIG_ENV, Config
from mirage_git.errors import Unavailable
from mirage_git.lifetime import die_with_parent
from mirage_git.models import Route
from mirage_git.store import Store

from . import docker_runtime as runtime

log = logging.getLogger("mirage.worker")
ORPHAN_AFTER = 120.0  # seconds without a heartbeat before a started job counts as abandoned


RECOVER_EVERY = 60.0  # seconds between checks for jobs a crashed worker left behind
RESTART_DELAY = 2.0


def run(config: Config, store: Store, count: int) -> None:
    """Run `count` RQ worker processes until SIGINT/SIGTERM, restarting any that die.

    A worker dies when Redis goes away under it; this parent outlives that, restarts it
    once Redis answers again, and keeps settling jobs a dead worker left behind.
    """
    if config.path:
        os.environ[CONFIG_ENV] = str(config.path)
    runtime.connect()  # fail now, with the fix, rather than on the first job
    recover(config, store)
    fork = multiprocessing.get_context("fork")
    parent = os.getpid()
    procs = [fork.Process(target=_work, args=(config, parent), name=f"worker-{i}") for i in range(count)]
    for proc in procs:
        proc.start()
    stopping = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    next_recover = time.monotonic() + RECOVER_EVERY
    while not stopping.wait(1.0):
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping.is_set():
                log.warning("%s exited with status %s; restarting it in %.0fs", proc.name, proc.exitcode,
                            RESTART_DELAY)
                stopping.wait(RESTART_DELAY)
                procs[i] = fork.Process(target=_work, args=(config, parent), name=proc.name)
                procs[i].start()
                next_recover = 0.0  # it may have left a job behind: look now
        if time.monotonic() >= next_recover:
            next_recover = time.monotonic() + RECOVER_EVERY
            try:
                recover(config, store)
            except (redis.RedisError, docker.errors.DockerException, Unavailable) as exc:
                log.warning("could not check for abandoned jobs: %s", exc)
    for proc in procs:
        proc.join()


class Worker(rq.Worker):
    """RQ's worker, with its command listener (a pubsub thread) waking every second instead of every 60.

    On a warm shutdown RQ unsubscribes and then stops that thread, and redis-py waits for it
    with no time limit. When the thread has already read the unsubscribe reply it sleeps out
    its whole wait on a pubsub with no channels: with RQ's 60 s, Ctrl-C on `up` could hang
    that long, and the parent, giving up after 10 s, would leave this process behind.
    """

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler)


def _work(config: Config, parent: int) -> None:
    from . import jobs  # noqa: F401  (imported once here, so each forked job starts warm)

    # Out of the terminal's process group: Ctrl-C reaches the parent alone, which passes it on
    # once. Twice (the group's and the parent's) would make RQ kill the running job at once.
    # Out of the group, nothing would stop this process if the parent were killed: so it asks to be.
    os.setpgid(0, 0)
    die_with_parent(parent)

    conn = redis.Redis.from_url(config.effective_redis_url)
    worker = Worker([queue.QUEUE_NAME], connection=conn)
    worker.work(logging_level="INFO", with_scheduler=False)


def recover(config: Config, store: Store) -> None:
    """Mark jobs that no live worker is running as failed, and envs whose container is gone as stopped."""
    conn = redis.Redis.from_url(config.effective_redis_url)
    for job in store.jobs(limit=500):
        if job.status not in ("running", "queued"):
            continue
        if job.status == "queued" and time.time() - job.created_at < ORPHAN_AFTER:
            continue  # a young job may sit between its record and its RQ job for a moment
        if job.status == "running" and _runner_died(job.runner):
            status, beat = None, None
        else:
            status, beat = _rq_state(conn, job.id)
        if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            continue
        if status == JobStatus.STARTED and beat and _age(beat) < ORPHAN_AFTER:
            continue
        reason = "interrupted: the worker running this job stopped; deploy again to retry"
        store.finish_job(job.id, "failed", f"deploy failed: {reason}", error=reason)
        env = store.env(job.host)
        if env is not None and env.job_id == job.id and env.status in ("queued", "building"):
            store.update_env(job.host, status="live" if env.live_job_id else "failed")
            if not env.live_job_id:
                store.set_route(Route(job.host, job.app, job.branch, "failed", job_id=job.id))
        log.warning("job %s was interrupted; marked failed", job.id)
    _check_containers(store)


def _rq_state(conn: redis.Redis, job_id: str) -> tuple[JobStatus | None, datetime | None]:
    try:
        rq_job = RQJob.fetch(job_id, connection=conn)
        return rq_job.get_status(), rq_job.last_heartbeat
    except rq.exceptions.NoSuchJobError:
        return None, None


def _runner_died(runner: str | None) -> bool:
    """True when the job ran on this machine in a process that no longer exists."""
    host, _, pid = (runner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


def _check_containers(store: Store) -> None:
    client = runtime.connect()
    for env in store.envs():
        if not env.container or env.status == "stopped":
            continue
        try:
            state = client.api.inspect_container(env.container)["State"]
        except docker.errors.NotFound:
            store.update_env(env.host, status="stopped")
            log.warning("%s: its container is gone; marked stopped", env.host)
            continue
        if not state.get("Running"):
            client.api.start(env.container)
            log.warning("%s: started its stopped container", env.host)


def _age(then: datetime) -> float:
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()

"""Follow one deploy or teardown job for a pusher: its log as it is written, then one last line.

The last line is what the pusher acts on, so it is always one of: `live at <url>`,
`torn down <url>`, `deploy failed: <reason> (log: <url>)`, `superseded by ...`, or why
we stopped waiting. Everything before it is the job's own log, verbatim.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..models import Job
from ..store import Store

QUEUED_NOTICE = 5.0  # seconds before a job still waiting for a worker is worth a line
SETTLE = 5.0  # seconds to wait for the job record to catch up with its last log line


class Output:
    """Lines to the pusher from several threads at once, each with its branch in front when asked."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write, self._lock, self.broken = write, threading.Lock(), False

    def say(self, line: str, prefix: str = "") -> None:
        with self._lock:
            if self.broken:
                return
            try:
                for part in line.replace("\r", "\n").split("\n"):
                    if part.strip():
                        self._write(f"{prefix}{part}")
            except OSError:
                # The pusher is gone. Keep waiting anyway: the ref update must still follow the outcome.
                self.broken = True


@dataclass(frozen=True)
class Outcome:
    accept: bool
    last_line: str


def follow(store: Store, job: Job, log_url: str, say: Callable[[str], None], deadline: float) -> Outcome:
    """Stream `job`'s log through `say` until it ends (or `deadline`, a monotonic time), then judge it."""
    started, noticed = time.monotonic(), False
    end: dict[str, str] | None = None
    for entry_id, fields in store.follow_log(job.id):
        if not entry_id:
            now = time.monotonic()
            if now > deadline:
                return Outcome(False, f"still not done after {now - started:.0f}s; no longer waiting, so "
                                      f"{job.branch} is not updated here (log: {log_url})")
            if not noticed and now - started > QUEUED_NOTICE and _status(store, job.id) == "queued":
                say("waiting for a free worker (other deploys are running)")
                noticed = True
            continue
        if "end" in fields:
            end = fields
            break
        say(fields.get("t", ""))
    final = _settled(store, job.id)
    status = (final.status if final and final.done else None) or (end or {}).get("end", "failed")
    return _judge(store, final or job, status, (end or {}).get("t", ""), log_url)


def _judge(store: Store, job: Job, status: str, end_text: str, log_url: str) -> Outcome:
    if status == "succeeded":
        return Outcome(True, f"live at {job.env_url}" if job.action == "deploy" else f"torn down {job.env_url}")
    if status == "superseded":
        newer = store.latest(job.host)
        by = f"job {newer}" if newer and newer != job.id else "a newer job"
        return Outcome(False, f"superseded by {by}: a newer push or deploy of {job.branch} took over, so this push "
                              f"does not update {job.branch} (log: {log_url})")
    reason = job.error or end_text.split(": ", 1)[-1] or "no reason recorded"
    return Outcome(False, f"{job.action} failed: {' '.join(reason.split())} (log: {log_url})")


def _status(store: Store, job_id: str) -> str | None:
    job = store.job(job_id)
    return job.status if job else None


def _settled(store: Store, job_id: str) -> Job | None:
    """The job's record once it says done: the worker writes the last log line just before it."""
    deadline = time.monotonic() + SETTLE
    while True:
        job = store.job(job_id)
        if job is None or job.done or time.monotonic() > deadline:
            return job
        time.sleep(0.05)

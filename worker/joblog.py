"""A job's log as the worker writes it: lines, named steps with durations, and the outcome.

Every line goes to the job's Redis stream the moment it is written, which is what lets
the log page, `mirage-git logs --follow` and a `git push` show a build as it happens.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mirage_git.store import Store

# What one job's output may take in Redis (which keeps the logs of the last 2000 jobs) and
# in every browser that opens it. Step lines and the outcome are written regardless.
MAX_LINE = 16 * 1024  # characters; the rest of a longer line is cut
MAX_TOTAL = 16 * 1024 * 1024  # characters of output lines per job; later lines are dropped


class JobLog:
    def __init__(self, store: Store, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.steps: list[dict[str, Any]] = []
        self.written = 0
        self.cut = False

    def __call__(self, line: str) -> None:
        if len(line) > MAX_LINE:
            line = f"{line[:MAX_LINE]} … (cut: the line has {len(line):,} characters)"
        self.written += len(line) + 1
        if self.written > MAX_TOTAL:
            if not self.cut:
                self.cut = True
                self.store.append_log(self.job_id, f"… (the log is cut here: the output passed {MAX_TOTAL:,} "
                                                   "characters; later output is not kept)")
            return
        self.store.append_log(self.job_id, line)

    @contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        """Mark a step (fetch, build, run, health, route, ...) so pages can show its duration."""
        record: dict[str, Any] = {"name": name, "started_at": time.time(), "ended_at": None, "status": "running"}
        self.steps.append(record)
        self.store.append_log(self.job_id, f"==> {title}", step=name)
        self.store.update_job(self.job_id, steps=self.steps)
        try:
            yield
            record["status"] = "ok"
        except BaseException:
            record["status"] = "failed"
            raise
        finally:
            record["ended_at"] = time.time()
            self.store.update_job(self.job_id, steps=self.steps)

    def start(self) -> None:
        self.store.update_job(self.job_id, status="running", started_at=time.time(),
                              runner=f"{socket.gethostname()}:{os.getpid()}")

    def finish(self, status: str, line: str, error: str | None = None) -> None:
        """Write the last line (the one sentence a reader needs) and close the job."""
        self.store.finish_job(self.job_id, status, line, error=error)

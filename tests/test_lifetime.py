"""Stopping: worker processes stop promptly, and never outlive a parent that was killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from worker import service

ROOT = Path(__file__).resolve().parents[1]


def test_a_warm_shutdown_does_not_sleep_out_the_command_listener(redis_url: str) -> None:
    """The race behind Ctrl-C on `up` hanging: the listener reads the unsubscribe reply before it is stopped.

    With RQ's own worker the stop below waits 60 s (the listener's sleep on a pubsub with no
    channels); ours wakes every second.
    """
    worker = service.Worker(["mirage-lifetime-test"], connection=redis.Redis.from_url(redis_url))
    worker.subscribe()
    time.sleep(0.1)
    worker.pubsub.unsubscribe()  # what RQ's unsubscribe does first; the reply reaches the thread...
    time.sleep(0.3)  # ...before the stop that follows it
    stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
    started = time.monotonic()
    stopping.start()
    stopping.join(5)
    assert not stopping.is_alive(), "RQ's warm shutdown is still waiting for its pubsub thread"
    assert time.monotonic() - started < 2.5


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended
    except FileNotFoundError:
        return True


def test_a_child_that_asked_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", """
import os, sys, time
from mirage_git.lifetime import die_with_parent
parent = os.getpid()
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)  # like the worker processes: out of the parent's group, out of reach of its signals
    die_with_parent(parent)
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = 0
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.3)  # let the child make its request
        assert not _gone(child)
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 5
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), f"child {child} outlived its killed parent"
    finally:
        parent.kill()
        parent.wait(5)
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

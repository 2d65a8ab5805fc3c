"""`git push` at the edges: a 200 MB pack, a dead Redis, a dead Docker engine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import requests

from mirage_git import embedded_redis

from .harness import PUSH_TOKEN, AppRepo, Service, cmdline, descendants, free_port, git, git_push, ref, remote_lines

BIG = 200 * 1024 * 1024
RSS_LIMIT_KB = 120 * 1024  # a gunicorn worker idles at ~45 MB; holding the pack would add 200 MB


def web_processes(service: Service) -> list[int]:
    """The gunicorn master and workers of the service's `web` child."""
    assert service.proc is not None
    return [pid for pid in descendants(service.proc.pid) if cmdline(pid)[-1:] == ["web"]]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_a_200_mb_push_streams_through_the_web_process(service: Service, app_repo: AppRepo):
    git(app_repo.path, "checkout", "-q", "-b", "big", "main")
    try:
        (app_repo.path / "big").mkdir()
        with open(app_repo.path / "big" / "blob", "wb") as f:
            for _ in range(BIG // (1 << 20)):
                f.write(os.urandom(1 << 20))  # incompressible: the pack is as big as the file
        (app_repo.path / ".dockerignore").write_text("big/\n")
        git(app_repo.path, "add", "-A")
        git(app_repo.path, "commit", "-qm", "200 MB of noise")
        sha = git(app_repo.path, "rev-parse", "HEAD")
    finally:
        git(app_repo.path, "checkout", "-q", "main")
    web = web_processes(service)
    assert len(web) >= 2, "expected the gunicorn master and its workers"
    for pid in web:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset each peak-RSS counter (VmHWM)

    started = time.monotonic()
    out = git_push(app_repo.path, service.git_url(service.push_app), "big", timeout=900)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert remote_lines(out.stderr)[-1].startswith("live at ")
    assert ref(service.bare_repo(service.push_app), "refs/heads/big") == sha
    peaks = {pid: status_kb(pid, "VmHWM") for pid in web}
    print(f"\n200 MB push: {took:.1f}s; web process peak RSS (KiB): {peaks}")
    assert max(peaks.values()) < RSS_LIMIT_KB, peaks


@contextlib.contextmanager
def web_alone(tmp_path: Path, worker_env: dict[str, str] | None = None) -> Iterator[tuple[str, Path, object]]:
    """Redis, `mirage-git web` and (with `worker_env`) one in-process RQ worker: no proxy, no `up`."""
    data = tmp_path / "data"
    redis_proc = embedded_redis.start(data)
    port = free_port()
    config = tmp_path / "mirage.toml"
    config.write_text(f'data_dir = "data"\nredis_url = "unix://{data}/redis.sock"\n[web]\nlisten = "127.0.0.1:{port}"\n'
                      f'[apps.lone]\npush_token = "{PUSH_TOKEN}"\nhealth_timeout = 5\n')
    procs = [subprocess.Popen([sys.executable, "-m", "mirage_git", "--config", str(config), "web"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    if worker_env is not None:
        code = ("import redis, rq; from mirage_git import queue; "
                f"rq.SimpleWorker([queue.QUEUE_NAME], connection=redis.Redis.from_url('unix://{data}/redis.sock'))"
                ".work(with_scheduler=False)")
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL,
                                      env={**os.environ, "MIRAGE_CONFIG": str(config), **worker_env}))
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            with contextlib.suppress(requests.ConnectionError):
                requests.get(f"{url}/api/envs", timeout=1)
                break
            time.sleep(0.1)
        yield url, data, redis_proc
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)


def lone_url(web: str) -> str:
    return f"http://git:{quote(PUSH_TOKEN, safe='')}@{web.removeprefix('http://')}/git/lone.git"


def test_a_push_while_redis_is_down_is_refused_in_one_line_and_stores_nothing(tmp_path: Path, app_repo: AppRepo):
    with web_alone(tmp_path) as (url, data, redis_proc):
        redis_proc.terminate()  # type: ignore[attr-defined]
        redis_proc.wait(10)  # type: ignore[attr-defined]
        out = git_push(app_repo.path, lone_url(url), "main")
        assert out.returncode != 0
        lines = remote_lines(out.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"push refused: Redis is not reachable at unix://{data}")
        bare = data / "repos" / "lone.git"
        assert ref(bare, "refs/heads/main") is None
        assert not any(p.is_file() for p in (bare / "objects").rglob("*"))


def test_a_push_while_docker_is_down_fails_with_the_reason_and_keeps_no_ref(tmp_path: Path, app_repo: AppRepo):
    with web_alone(tmp_path, worker_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}) as (url, data, _):
        app_repo.commit("no-docker", {"www/index.html": "never built\n"})
        out = git_push(app_repo.path, lone_url(url), "no-docker", timeout=120)
        assert out.returncode != 0
        last = remote_lines(out.stderr)[-1]
        assert last.startswith("deploy failed: Docker engine is not reachable"), out.stderr
        assert f"(log: {url}/jobs/" in last
        assert ref(data / "repos" / "lone.git", "refs/heads/no-docker") is None

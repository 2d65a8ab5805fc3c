"""Dependencies that go away and come back: the service outlives them and picks up where it was."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time

from mirage_git import embedded_redis
from mirage_git.store import Store

from .harness import SLOW_DOCKERFILE, AppRepo, cleanup_docker


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_redis_dying_mid_deploy_leaves_no_job_running_forever_and_workers_carry_on(tmp_path, app_repo: AppRepo):
    app = f"out{secrets.token_hex(3)}"
    data = tmp_path / "redis"
    redis_proc = embedded_redis.start(data)
    url = f"unix://{data}/redis.sock"
    config = tmp_path / "mirage.toml"
    config.write_text(f'redis_url = "{url}"\ndata_dir = "data"\n[apps.{app}]\nrepo = "{app_repo.path}"\n'
                      f'domain = "{app}.test.localhost"\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=60)

    worker = subprocess.Popen([sys.executable, "-m", "mirage_git", "--config", str(config), "worker", "--count", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store.from_url(url)
    try:
        app_repo.commit("mid-outage", {"Dockerfile": SLOW_DOCKERFILE, "www/index.html": "slow\n"})
        out = cli("deploy", app, "mid-outage", "--no-follow")
        assert out.returncode == 0, out.stderr
        stuck = out.stdout.strip()
        wait_for(lambda: store.job(stuck).status == "running", 60, "the deploy to start")

        redis_proc.terminate()
        redis_proc.wait(10)
        time.sleep(6)  # the build finishes meanwhile, and every write to Redis fails
        assert worker.poll() is None, "mirage-git worker exited when Redis went away"
        redis_proc = embedded_redis.start(data)

        wait_for(lambda: store.job(stuck).done, 90, f"job {stuck} to end, not stay 'running' forever")
        assert store.job(stuck).status in ("failed", "succeeded")
        assert worker.poll() is None

        app_repo.commit("after-outage", {"www/index.html": "back\n"})
        out = cli("deploy", app, "after-outage", "--no-follow")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: store.job(out.stdout.strip()).done, 90, "a deploy after the outage")
        assert store.job(out.stdout.strip()).status == "succeeded", store.log_text(out.stdout.strip())
    finally:
        worker.terminate()
        worker.wait(30)
        redis_proc.terminate()
        redis_proc.wait(10)
        cleanup_docker(app)

"""The CLI commands that sit on the same code as the API: `purge` and `branches`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from mirage_git import config, queue
from mirage_git.store import Store


def run(cfg_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(cfg_path), *args],
                          capture_output=True, text=True, timeout=60)


def test_purge_and_branches(tmp_path, store: Store, repo):
    path = tmp_path / "mirage.toml"
    path.write_text(f'redis_url = "{store.where}"\ndomain = "cli.test"\n[apps.shop]\nrepo = "{repo}"\n')
    cfg = config.load(path)
    job = queue.deploy(cfg, store, queue.rq_queue(cfg), cfg.apps["shop"], "main", source="cli")
    store.update_job(job.id, status="succeeded", ended_at=time.time())
    store.update_env(job.host, status="live", deployed_at=time.time() - 7200, created_at=time.time() - 7200)

    listed = run(path, "branches", "shop")
    assert listed.returncode == 0 and listed.stdout.split()[1::2] == ["main", "feature/login", "fix-1"]

    dry = run(path, "purge", "--older-than", "1h", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert [e["branch"] for e in json.loads(dry.stdout)["envs"]] == ["main"]
    assert store.job(store.latest(job.host)).action == "deploy", "a dry run enqueues nothing"
    kept = run(path, "purge", "--older-than", "1h", "--exclude", "main")
    assert "nothing to purge" in kept.stdout

    bad = run(path, "purge", "--older-than", "soon")
    assert bad.returncode == 1 and "is not a duration" in bad.stderr
    real = run(path, "purge", "--older-than", "1h")
    assert real.returncode == 0 and real.stdout.startswith("terminating shop/main  idle 2.0h")
    assert store.job(store.latest(job.host)).action == "teardown"

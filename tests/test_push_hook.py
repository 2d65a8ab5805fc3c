"""The hooks' parts that need no Docker: verdict hand-off, following a job, refusing a push."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mirage_git.models import Job
from mirage_git.push import verdicts, watch
from mirage_git.store import Store

ROOT = Path(__file__).resolve().parents[1]
OLD, NEW = "1" * 40, "2" * 40


def test_verdicts_pass_from_pre_receive_to_update_only_for_the_exact_update(tmp_path: Path):
    verdicts.save(tmp_path, 4242, [verdicts.Verdict("refs/heads/ok", OLD, NEW, True),
                                   verdicts.Verdict("refs/heads/bad", OLD, NEW, False)])
    assert verdicts.accepts(tmp_path, 4242, "refs/heads/ok", OLD, NEW) is True
    assert verdicts.accepts(tmp_path, 4242, "refs/heads/bad", OLD, NEW) is False
    # A recycled pid with another push's updates, or no file at all: no verdict (the hook refuses).
    assert verdicts.accepts(tmp_path, 4242, "refs/heads/ok", OLD, "3" * 40) is None
    assert verdicts.accepts(tmp_path, 4243, "refs/heads/ok", OLD, NEW) is None


def _job(store: Store, job_id: str, action: str = "deploy") -> Job:
    job = Job(id=job_id, app="shop", branch="feature/x", action=action, host="feature-x.shop.test",
              env_url="http://feature-x.shop.test:8000/")
    store.save_job(job)
    store.set_latest(job.host, job.id)
    return job


def _follow(store: Store, job: Job) -> tuple[watch.Outcome, list[str]]:
    said: list[str] = []
    out = watch.Output(said.append)  # as the hook prints: one line per line, CRs and blanks dropped
    outcome = watch.follow(store, job, "http://web/jobs/" + job.id, out.say, time.monotonic() + 30)
    return outcome, said


def test_a_failed_job_ends_with_its_one_line_reason_and_log_url(store: Store):
    job = _job(store, "j1")
    store.append_log(job.id, "==> Building the image")
    store.append_log(job.id, "Step 1/2 : FROM scratch\r")
    store.update_job(job.id, status="failed", error="docker build failed:\n  no such file")
    store.append_log(job.id, "deploy failed: docker build failed: no such file", end="failed")
    outcome, said = _follow(store, job)
    assert said == ["==> Building the image", "Step 1/2 : FROM scratch"]
    assert outcome == watch.Outcome(False, "deploy failed: docker build failed: no such file (log: http://web/jobs/j1)")


def test_a_succeeded_job_ends_with_the_url(store: Store):
    job = _job(store, "j2")
    store.update_job(job.id, status="succeeded")
    store.append_log(job.id, "live at http://feature-x.shop.test:8000/", end="succeeded")
    assert _follow(store, job)[0] == watch.Outcome(True, "live at http://feature-x.shop.test:8000/")
    gone = _job(store, "j3", action="teardown")
    store.update_job(gone.id, status="succeeded")
    store.append_log(gone.id, "torn down http://feature-x.shop.test:8000/", end="succeeded")
    assert _follow(store, gone)[0] == watch.Outcome(True, "torn down http://feature-x.shop.test:8000/")


def test_a_superseded_job_names_the_newer_one_and_refuses_the_ref(store: Store):
    old = _job(store, "j4")
    _job(store, "j5")
    store.update_job(old.id, status="superseded")
    store.append_log(old.id, "superseded by job j5 before it started", end="superseded")
    outcome, _ = _follow(store, old)
    assert not outcome.accept
    assert outcome.last_line.startswith("superseded by job j5: a newer push or deploy of feature/x took over")


def test_a_job_nobody_runs_is_given_up_at_the_deadline(store: Store):
    job = _job(store, "j6")
    said: list[str] = []
    outcome = watch.follow(store, job, "http://web/jobs/j6", said.append, time.monotonic() + 1.5)
    assert not outcome.accept and "no longer waiting" in outcome.last_line


def test_pre_receive_with_redis_down_refuses_the_push_in_one_line(tmp_path: Path):
    config = tmp_path / "mirage.toml"
    config.write_text(f'redis_url = "unix://{tmp_path}/dead.sock"\n[apps.shop]\npush_token = "t"\n')
    env = {**os.environ, "MIRAGE_CONFIG": str(config), "MIRAGE_APP": "shop", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mirage_git.push.hook", "pre-receive"], cwd=tmp_path, env=env,
                          input=f"{OLD} {NEW} refs/heads/main\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()]
    assert proc.stdout.startswith(f"push refused: Redis is not reachable at unix://{tmp_path}/dead.sock")

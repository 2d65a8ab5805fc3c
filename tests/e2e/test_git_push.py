"""`git push` straight to mirage-git: the real git client, the running service, real Docker."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from .harness import (
    PUSH_TOKEN,
    SLOW_DOCKERFILE,
    AppRepo,
    Service,
    containers,
    git,
    git_env,
    git_push,
    ref,
    remote_lines,
)


def push_host(service: Service, slug: str) -> str:
    return f"{slug}.{service.push_app}.test.localhost"


def push_url(service: Service, slug: str) -> str:
    return f"http://{push_host(service, slug)}:{service.proxy_port}/"


def job_of(service: Service, lines: list[str]) -> dict:
    job_id = next(line for line in lines if line.startswith("log: ")).split("/jobs/")[1].split()[0]
    return service.job(job_id)


def jobs_count(service: Service) -> int:
    return service.store.r.zcard("mirage:jobs")


class Watched:
    """A `git push` running in the background, its stderr collected line by line as it arrives."""

    def __init__(self, cwd: Path, url: str, *refspecs: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(["git", "-c", "credential.helper=", "push", url, *refspecs], cwd=cwd,
                                     env=git_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or self.reader.is_alive(), "\n".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "\n".join(self.lines)
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code

    @property
    def remote(self) -> list[str]:
        return remote_lines("\n".join(self.lines))


def test_push_a_new_branch_streams_the_build_and_ends_with_the_url(service: Service, app_repo: AppRepo):
    sha = app_repo.commit("feature/login", {"www/index.html": "login v1\n"}, message="Add the login page")
    out = git_push(app_repo.path, service.git_url(service.push_app, user="alice"), "feature/login")
    assert out.returncode == 0, out.stderr
    lines = remote_lines(out.stderr)
    url = push_url(service, "feature-login")
    assert lines[-1] == f"live at {url}"
    for step in ("==> Fetching the commit", "==> Building the image", "==> Starting the container",
                 "==> Routing traffic to the new version"):
        assert step in lines, lines
    assert any(line.startswith("Step 1/") for line in lines), "docker's own build output streams too"
    assert any(line.startswith(f"log: {service.web}/jobs/") for line in lines)

    assert service.get(push_host(service, "feature-login")).text == "login v1\n"
    assert ref(service.bare_repo(service.push_app), "refs/heads/feature/login") == sha
    job = job_of(service, lines)
    assert job["source"] == "push" and job["pusher"] == "alice" and job["subject"] == "Add the login page"
    assert job["commit"] == sha and job["status"] == "succeeded"
    # The commit was still in git's quarantine when the worker fetched it (the ref moves only after):
    assert f"fetching {sha[:12]} from {service.bare_repo(service.push_app)} (pushed, in quarantine)" in lines
    cache = service.root / "data" / "cache" / f"{service.push_app}.git"
    assert not (cache / "objects" / "info" / "alternates").exists()
    assert subprocess.run(["git", "fsck"], cwd=cache, capture_output=True).returncode == 0


def test_push_again_serves_the_new_content(service: Service, app_repo: AppRepo):
    branch, host = "again", push_host(service, "again")
    app_repo.commit(branch, {"www/index.html": "first\n"})
    assert git_push(app_repo.path, service.git_url(service.push_app), branch).returncode == 0
    assert service.get(host).text == "first\n"
    sha = app_repo.commit(branch, {"www/index.html": "second\n"})
    started = time.monotonic()
    out = git_push(app_repo.path, service.git_url(service.push_app), branch)
    print(f"\npush-to-live (second push, small change): {time.monotonic() - started:.1f}s")
    assert out.returncode == 0, out.stderr
    assert remote_lines(out.stderr)[-1] == f"live at {push_url(service, 'again')}"
    assert service.get(host).text == "second\n"
    assert ref(service.bare_repo(service.push_app), f"refs/heads/{branch}") == sha
    assert len(containers(service.push_app, branch)) == 1


def test_a_failed_build_exits_nonzero_keeps_the_ref_and_the_old_version(service: Service, app_repo: AppRepo):
    branch, host = "gate", push_host(service, "gate")
    good = app_repo.commit(branch, {"www/index.html": "good\n"})
    assert git_push(app_repo.path, service.git_url(service.push_app), branch).returncode == 0
    app_repo.commit(branch, {"Dockerfile": "FROM scratch\nCOPY does-not-exist /x\n"})
    out = git_push(app_repo.path, service.git_url(service.push_app), branch)
    assert out.returncode != 0
    last = remote_lines(out.stderr)[-1]
    assert last.startswith("deploy failed: docker build failed: ") and "\n" not in last
    assert last.endswith(")") and f"(log: {service.web}/jobs/" in last
    assert f"[remote rejected] {branch} -> {branch}" in out.stderr
    assert ref(service.bare_repo(service.push_app), f"refs/heads/{branch}") == good
    assert service.get(host).text == "good\n"


def test_a_wrong_or_missing_token_is_401_and_stores_nothing(service: Service, app_repo: AppRepo):
    sha = app_repo.commit("sneaky", {"www/index.html": "never\n"})
    repo = service.bare_repo(service.push_app)
    jobs_before, objects_before = jobs_count(service), sorted((repo / "objects").rglob("*"))
    for url in (service.git_url(service.push_app, token="wrong"), service.git_url(service.push_app, token=None),
                service.git_url(service.push_app, token=PUSH_TOKEN[:-1])):
        out = git_push(app_repo.path, url, "sneaky")
        assert out.returncode != 0
        assert "Authentication failed" in out.stderr or "could not read Username" in out.stderr, out.stderr
    plain = f"{service.web}/git/{service.push_app}.git/info/refs?service=git-receive-pack"
    for auth in (None, ("git", "wrong")):
        resp = requests.get(plain, auth=auth, timeout=10)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic ")
    assert ref(repo, "refs/heads/sneaky") is None
    assert subprocess.run(["git", "cat-file", "-e", sha], cwd=repo).returncode != 0
    assert sorted((repo / "objects").rglob("*")) == objects_before
    assert jobs_count(service) == jobs_before


def test_a_delete_push_tears_the_env_down(service: Service, app_repo: AppRepo):
    branch, host = "short-lived", push_host(service, "short-lived")
    app_repo.commit(branch, {"www/index.html": "bye\n"})
    assert git_push(app_repo.path, service.git_url(service.push_app), branch).returncode == 0
    assert service.get(host).status_code == 200
    out = git_push(app_repo.path, service.git_url(service.push_app), f":{branch}")
    assert out.returncode == 0, out.stderr
    assert remote_lines(out.stderr)[-1] == f"torn down {push_url(service, 'short-lived')}"
    assert service.get(host).status_code == 404
    assert containers(service.push_app, branch) == []
    assert ref(service.bare_repo(service.push_app), f"refs/heads/{branch}") is None
    assert all(e["branch"] != branch or e["app"] != service.push_app
               for e in requests.get(f"{service.web}/api/envs", timeout=5).json())


def test_three_branches_in_one_push_give_three_live_envs(service: Service, app_repo: AppRepo):
    branches = ["trio-a", "trio-b", "trio-c"]
    for b in branches:
        app_repo.commit(b, {"www/index.html": f"{b}\n"})
    out = git_push(app_repo.path, service.git_url(service.push_app), *branches)
    assert out.returncode == 0, out.stderr
    lines = remote_lines(out.stderr)
    for b in branches:
        mine = [line for line in lines if line.startswith(f"[{b}] ")]
        assert f"[{b}] ==> Building the image" in mine
        assert mine[-1] == f"[{b}] live at {push_url(service, b)}"
        assert service.get(push_host(service, b)).text == f"{b}\n"
    assert all(line.startswith(tuple(f"[{b}] " for b in branches)) for line in lines), lines
    # Concurrent, not one after the other: the second job started before the first one ended.
    ids = [job_of(service, [line.split("] ", 1)[1] for line in lines if line.startswith(f"[{b}] ")])["id"]
           for b in branches]
    jobs = sorted((service.store.job(i) for i in ids), key=lambda j: j.started_at)
    assert jobs[1].started_at < jobs[0].ended_at


def test_one_bad_branch_fails_alone(service: Service, app_repo: AppRepo):
    good = app_repo.commit("mixed-good", {"www/index.html": "fine\n"})
    app_repo.commit("mixed-bad", {"Dockerfile": "FROM scratch\nRUN /nope\n"})
    out = git_push(app_repo.path, service.git_url(service.push_app), "mixed-good", "mixed-bad")
    assert out.returncode != 0
    lines = remote_lines(out.stderr)
    assert [line for line in lines if line.startswith("[mixed-good] ")][-1].startswith("[mixed-good] live at")
    assert [line for line in lines if line.startswith("[mixed-bad] ")][-1].startswith("[mixed-bad] deploy failed:")
    assert ref(service.bare_repo(service.push_app), "refs/heads/mixed-good") == good
    assert ref(service.bare_repo(service.push_app), "refs/heads/mixed-bad") is None


def test_a_tag_is_kept_and_ignored(service: Service, app_repo: AppRepo):
    git(app_repo.path, "tag", "-f", "v1.0", "main")
    jobs_before = jobs_count(service)
    out = git_push(app_repo.path, service.git_url(service.push_app), "refs/tags/v1.0")
    assert out.returncode == 0, out.stderr
    assert remote_lines(out.stderr) == ["ignored (tag)"]
    assert ref(service.bare_repo(service.push_app), "refs/tags/v1.0") is not None
    assert jobs_count(service) == jobs_before


def test_hostile_branch_names_are_refused_with_a_reason(service: Service, app_repo: AppRepo):
    long = "x" * 256
    out = git_push(app_repo.path, service.git_url(service.push_app), "main:refs/heads/-rf", "main:refs/heads/HEAD",
                   f"main:refs/heads/{long}", "main:refs/pull/1/head")
    assert out.returncode != 0
    lines = remote_lines(out.stderr)
    assert "[-rf] refused branch '-rf': not a valid branch name (see git-check-ref-format)" in lines
    assert "[HEAD] refused branch 'HEAD': not a valid branch name (see git-check-ref-format)" in lines
    assert any(line.startswith(f"[{long}] refused branch") for line in lines)
    assert any(line.startswith("[refs/pull/1/head] refused refs/pull/1/head: only branches") for line in lines)
    bare = service.bare_repo(service.push_app)
    for name in ("refs/heads/-rf", "refs/heads/HEAD", "refs/pull/1/head"):
        assert ref(bare, name) is None


def test_unknown_app_is_404(service: Service, app_repo: AppRepo):
    out = git_push(app_repo.path, service.git_url("no-such-app"), "main")
    assert out.returncode != 0
    assert "remote: no app named 'no-such-app' here" in out.stderr and "not found" in out.stderr
    assert requests.get(f"{service.web}/git/no-such-app.git/info/refs?service=git-upload-pack",
                        timeout=10).status_code == 404


def test_clone_needs_the_token_and_works_with_it(service: Service, app_repo: AppRepo, tmp_path: Path):
    sha = app_repo.commit("clonable", {"www/index.html": "clone me\n"})
    assert git_push(app_repo.path, service.git_url(service.push_app), "clonable").returncode == 0
    denied = subprocess.run(["git", "-c", "credential.helper=", "clone", service.git_url(service.push_app, token=None),
                             str(tmp_path / "denied")], env=git_env(), capture_output=True, text=True, timeout=120)
    assert denied.returncode != 0 and not (tmp_path / "denied").exists()
    ok = subprocess.run(["git", "-c", "credential.helper=", "clone", "-b", "clonable",
                         service.git_url(service.push_app), str(tmp_path / "copy")],
                        env=git_env(), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "copy" / "www" / "index.html").read_text() == "clone me\n"
    assert git(tmp_path / "copy", "rev-parse", "HEAD") == sha


def test_an_app_with_a_repo_takes_pushes_too(service: Service, app_repo: AppRepo):
    sha = app_repo.commit("pushed-to-main-app", {"www/index.html": "via push\n"})
    out = git_push(app_repo.path, service.git_url(), "pushed-to-main-app")
    assert out.returncode == 0, out.stderr
    assert service.get(service.host("pushed-to-main-app")).text == "via push\n"
    job = service.store.job(job_of(service, remote_lines(out.stderr))["id"])
    assert job is not None and job.repo == str(service.bare_repo()) and job.commit == sha


def test_a_branch_that_was_only_pushed_redeploys_and_launches_from_the_push_repo(
        service: Service, app_repo: AppRepo, tmp_path: Path):
    """The app has a `repo`, but this branch exists only in what was pushed to the service."""
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(app_repo.path), str(work)], check=True, env=git_env())
    git(work, "checkout", "-q", "-b", "only-pushed")
    (work / "www" / "index.html").write_text("pushed only\n")
    git(work, "commit", "-qam", "pushed only")
    out = git_push(work, service.git_url(), "only-pushed")
    assert out.returncode == 0, out.stderr
    host = service.host("only-pushed")
    assert service.get(host).text == "pushed only\n"

    redo = service.api("POST", f"/api/envs/{host}/redeploy")
    assert redo.status_code == 202, redo.text
    assert service.wait_job(redo.json()["id"])["status"] == "succeeded", service.log(redo.json()["id"])
    assert service.get(host).text == "pushed only\n"
    # A redeploy comes with no commit message of its own: the worker reads it from the commit.
    assert service.store.env(host).subject == "pushed only"
    assert service.store.job(redo.json()["id"]).subject == "pushed only"

    branches = service.api("GET", f"/api/apps/{service.app}/branches?refresh=1").json()["branches"]
    assert {"name": "only-pushed", "origin": str(service.bare_repo())}.items() <= next(
        b for b in branches if b["name"] == "only-pushed").items()
    launched = service.api("POST", "/api/envs", json={"app": service.app, "branch": "only-pushed"})
    assert launched.status_code == 202, launched.text
    assert service.wait_job(launched.json()["id"])["status"] == "succeeded"
    assert service.store.env(host).subject == "pushed only"


def test_disconnecting_mid_build_lets_the_deploy_finish(service: Service, app_repo: AppRepo):
    branch = "walk-away"
    sha = app_repo.commit(branch, {"Dockerfile": SLOW_DOCKERFILE, "www/index.html": "finished anyway\n"})
    push = Watched(app_repo.path, service.git_url(service.push_app), branch)
    push.wait_for("==> Building the image")
    os.killpg(push.proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals git and its git-remote-http
    assert push.finish(30) != 0
    if any("live at" in line for line in push.lines):  # a cached build step did this; the label now prevents it
        pytest.skip("the pusher saw the deploy finish before it could be interrupted")
    job = service.wait_job(job_of(service, push.remote)["id"])
    assert job["status"] == "succeeded", service.log(job["id"])
    assert service.get(push_host(service, "walk-away")).text == "finished anyway\n"
    env = next(e for e in requests.get(f"{service.web}/api/envs", timeout=5).json()
               if e["app"] == service.push_app and e["branch"] == branch)
    assert env["status"] == "live"
    # receive-pack ran to the end too, so the branch moved as if the pusher had stayed.
    deadline = time.monotonic() + 30
    while ref(service.bare_repo(service.push_app), f"refs/heads/{branch}") != sha:
        assert time.monotonic() < deadline, "the ref never moved"
        time.sleep(0.2)


def test_two_pushes_to_one_branch_the_last_one_wins_and_neither_hangs(service: Service, app_repo: AppRepo):
    branch = "race"
    app_repo.commit(branch, {"Dockerfile": SLOW_DOCKERFILE, "www/index.html": "base\n"})
    assert git_push(app_repo.path, service.git_url(service.push_app), branch).returncode == 0
    first = app_repo.commit(branch, {"www/index.html": "first\n"})
    git(app_repo.path, "branch", "-f", branch, f"{first}~1")
    second = app_repo.commit(branch, {"www/index.html": "second\n"})

    a = Watched(app_repo.path, service.git_url(service.push_app), f"{first}:refs/heads/{branch}")
    a.wait_for("==> Building the image")
    b = Watched(app_repo.path, service.git_url(service.push_app), f"{second}:refs/heads/{branch}")
    assert b.finish(300) == 0, "\n".join(b.lines)
    assert a.finish(300) != 0, "\n".join(a.lines)
    assert a.remote[-1].startswith("superseded by job ") and "does not update race" in a.remote[-1]
    assert b.remote[-1] == f"live at {push_url(service, 'race')}"
    assert service.get(push_host(service, "race")).text == "second\n"
    assert ref(service.bare_repo(service.push_app), f"refs/heads/{branch}") == second


def test_remote_helper_line_and_a_credential_helper_work(service: Service, app_repo: AppRepo, tmp_path: Path):
    out = service.cli("remote", service.push_app)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first == f"git remote add mirage http://git:<push_token>@127.0.0.1:{service.web_port}/git/" \
                    f"{service.push_app}.git"
    shown = service.cli("remote", service.push_app, "--show-token").stdout.splitlines()[0]
    assert shown == f"git remote add mirage {service.git_url(service.push_app)}"
    # The credential-helper way, exactly as printed, in a private HOME.
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    approve = next(line for line in out.stdout.splitlines() if "git credential approve" in line)
    approve = approve.lstrip("# ").replace("<push_token>", PUSH_TOKEN)
    subprocess.run(["git", "config", "--global", "credential.helper", "store"], env=git_env(env), check=True)
    subprocess.run(["sh", "-c", approve], env=git_env(env), check=True)
    app_repo.commit("via-helper", {"www/index.html": "helper\n"})
    pushed = git_push(app_repo.path, service.git_url(service.push_app, token=None), "via-helper", env=env,
                      helpers=True)
    assert pushed.returncode == 0, pushed.stderr
    assert service.get(push_host(service, "via-helper")).text == "helper\n"

"""The CLI against the running service: envs, logs, deploy, destroy, doctor, and clear failures."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from mirage_git import embedded_redis

from .harness import AppRepo, Service, containers


def test_deploy_envs_logs_destroy(service: Service, app_repo: AppRepo):
    app_repo.commit("cli-branch", {"www/index.html": "from the cli\n"})
    out = service.cli("deploy", service.app, "cli-branch")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    url = f"http://cli-branch.{service.domain}:{service.proxy_port}/"
    assert lines[-1] == f"live at {url}"
    assert any(line.startswith("==> Building the image") for line in lines)
    assert service.get(service.host("cli-branch")).text == "from the cli\n"

    envs = service.cli("envs")
    assert envs.returncode == 0
    row = next(line for line in envs.stdout.splitlines() if " cli-branch " in line)
    assert "live" in row and row.rstrip().endswith(url)

    job_id = next(e for e in requests.get(f"{service.web}/api/envs", timeout=5).json()
                  if e["branch"] == "cli-branch")["job_id"]
    logs = service.cli("logs", job_id)
    assert logs.returncode == 0 and logs.stdout.rstrip().endswith(f"live at {url}")
    assert service.cli("logs", job_id, "--follow").stdout == logs.stdout

    gone = service.cli("destroy", service.app, "cli-branch")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.strip().splitlines()[-1] == f"torn down {url}"
    assert service.get(service.host("cli-branch")).status_code == 404
    assert containers(service.app, "cli-branch") == []
    assert "cli-branch" not in service.cli("envs").stdout


def test_cli_deploy_of_a_broken_branch_exits_nonzero_with_the_reason(service: Service, app_repo: AppRepo):
    app_repo.commit("cli-broken", {"Dockerfile": "FROM scratch\nRUN /bin/false\n"})
    out = service.cli("deploy", service.app, "cli-broken")
    assert out.returncode == 1
    assert out.stdout.strip().splitlines()[-1].startswith("deploy failed: docker build failed")


def test_cli_errors_are_one_line(service: Service):
    out = service.cli("deploy", "no-such-app", "main")
    assert out.returncode == 1 and "no app named 'no-such-app' (configured: " in out.stderr
    out = service.cli("logs", "feedfacecafe")
    assert out.returncode == 1 and "no job 'feedfacecafe'" in out.stderr
    out = service.cli("destroy", service.app, "never-deployed")
    assert out.returncode == 1 and "has no env for branch 'never-deployed'" in out.stderr
    out = service.cli("deploy", service.app, "bad..branch")
    assert out.returncode == 1 and out.stderr == "mirage-git: branch: is not a valid git branch name\n"


def test_doctor_says_what_is_missing(service: Service):
    ok = service.cli("doctor")
    assert ok.returncode == 0, ok.stdout
    for subject in ("config", "git", "docker", "redis"):
        assert any(line.startswith("ok") and subject in line for line in ok.stdout.splitlines()), ok.stdout

    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    bad = subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(service.config), "doctor"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1
    docker_line = next(line for line in bad.stdout.splitlines() if "docker " in line and "FAIL" in line)
    assert "apt-get install -y docker.io" in docker_line and "dockerd" in docker_line
    assert "userland proxy" not in bad.stdout, "nothing is known of the engine's settings when it is unreachable"


def test_dead_docker_stops_the_worker_with_one_line(service: Service):
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    out = subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(service.config), "worker"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("mirage-git: Docker engine is not reachable")


def test_dead_redis_is_a_clear_error_everywhere(tmp_path):
    dead = tmp_path / "nothing.sock"
    config = tmp_path / "mirage.toml"
    config.write_text(f'redis_url = "unix://{dead}"\n[apps.x]\nrepo = "/tmp/x"\nwebhook_secret = "s"\n')
    for args in (["envs"], ["logs", "abc"], ["deploy", "x", "main"]):
        out = subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(config), *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, args
        assert out.stderr.startswith(f"mirage-git: Redis is not reachable at unix://{dead}"), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_webhook_while_redis_is_down_is_503_and_loses_nothing_once_back(tmp_path, app_repo: AppRepo):
    """The forge is told to retry (5xx); no half-written job is left behind."""
    from .harness import SECRET, free_port, github_push

    data = tmp_path / "redis"
    redis_proc = embedded_redis.start(data)
    port = free_port()
    config = tmp_path / "mirage.toml"
    config.write_text(f'redis_url = "unix://{data}/redis.sock"\n[web]\nlisten = "127.0.0.1:{port}"\n'
                      f'[apps.dead]\nrepo = "{app_repo.path}"\nwebhook_repo = "example/dead"\n'
                      f'webhook_secret = "{SECRET}"\n')
    web = subprocess.Popen([sys.executable, "-m", "mirage_git", "--config", str(config), "web"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        embedded_redis.wait_ready(f"unix://{data}/redis.sock")
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(f"{url}/api/envs", timeout=1)
                break
            except requests.ConnectionError:
                import time
                time.sleep(0.1)
        redis_proc.terminate()
        redis_proc.wait(10)
        body, headers = github_push("dead", "main", "a" * 40)
        resp = requests.post(f"{url}/hooks/github", data=body, headers=headers, timeout=10)
        assert resp.status_code == 503
        assert resp.json()["error"].startswith("Redis is not reachable at")

        redis_proc = embedded_redis.start(data)
        resp = requests.post(f"{url}/hooks/github", data=body, headers=headers, timeout=10)
        assert resp.status_code == 202, resp.text
        assert requests.get(f"{url}/api/envs", timeout=5).json()[0]["branch"] == "main"
    finally:
        web.terminate()
        web.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)

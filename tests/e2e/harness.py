"""Real things for end-to-end tests: a git repository, a running `mirage-git up`, forge deliveries.

Nothing here is faked: the repository is real git, the service is the real CLI in a
subprocess with its embedded Redis, and deployments run on the real Docker engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import requests

from mirage_git.store import Store

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "fixtures" / "webhooks"
SECRET = "It's a Secret to Everybody"
PUSH_TOKEN = "push:token/for tests"
BUSYBOX = Path("/bin/busybox")
# The test app, with a build that takes 4 s. The sleep comes after `COPY www` and a label unique
# to this test run, so that it is never a build-cache hit: not for new content, and not for the
# same content built by an earlier run on the same Docker engine.
SLOW_DOCKERFILE = f"""FROM scratch
COPY busybox /bin/busybox
COPY www /www
LABEL mirage.test.run={os.urandom(8).hex()}
RUN ["/bin/busybox", "sleep", "4"]
COPY start.sh /start.sh
EXPOSE 8080
CMD ["/bin/busybox", "sh", "/start.sh"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


class AppRepo:
    """A git repository holding a tiny busybox web app (tests/e2e/app)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        shutil.copytree(HERE / "app", path)
        shutil.copy(BUSYBOX, path / "busybox")
        git(path, "init", "-q", "-b", "main")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", "initial")

    def commit(self, branch: str, files: dict[str, str], message: str = "change", base: str = "main") -> str:
        """Write `files` on `branch` (created from `base` if new) and commit; returns the sha."""
        existing = git(self.path, "branch", "--list", branch)
        git(self.path, "checkout", "-q", branch if existing else "-b", *([] if existing else [branch, base]))
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        sha = git(self.path, "rev-parse", "HEAD")
        git(self.path, "checkout", "-q", "main")
        return sha

    def delete(self, branch: str) -> None:
        git(self.path, "branch", "-q", "-D", branch)


class Service:
    """`mirage-git up` on private ports, with its own data folder and embedded Redis."""

    def __init__(self, root: Path, app: str, repo: Path, extra: str = "", push_app: str | None = None,
                 web_extra: str = "", token: str | None = None) -> None:
        """`extra` goes into the app's table (parameters, ...), `web_extra` into [web]; `token` turns on [auth]."""
        self.app, self.root, self.push_app = app, root, push_app
        self.token = token
        self.auth_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.web_port, self.proxy_port = free_port(), free_port()
        self.domain = f"{app}.test.localhost"
        self.config = root / "mirage.toml"
        self.config.write_text(f"""
data_dir = "data"
[web]
listen = "127.0.0.1:{self.web_port}"
{web_extra}
[proxy]
listen = "127.0.0.1:{self.proxy_port}"
[worker]
count = 2
[apps.{app}]
repo = "{repo}"
webhook_repo = "example/{app}"
webhook_secret = "{SECRET}"
domain = "{self.domain}"
health_timeout = 20
push_token = "{PUSH_TOKEN}"
{extra}
""")
        if push_app:  # a second app with no `repo`: it only takes pushes
            with self.config.open("a") as f:
                f.write(f'\n[apps.{push_app}]\ndomain = "{push_app}.test.localhost"\npush_token = "{PUSH_TOKEN}"\n'
                        "health_timeout = 20\n")
        if token:
            with self.config.open("a") as f:
                f.write(f'\n[auth]\ntoken = "{token}"\n')
        self.web = f"http://127.0.0.1:{self.web_port}"
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        self.output = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mirage_git", "--config", str(self.config), "up"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        up = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                if line.startswith("mirage-git is up"):
                    up.set()
        threading.Thread(target=pump, daemon=True).start()
        if not up.wait(timeout):
            self.stop()
            raise RuntimeError("mirage-git up did not start:\n" + "\n".join(self.output[-50:]))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    @property
    def store(self) -> Store:
        return Store.from_url(f"unix://{self.root / 'data' / 'redis.sock'}")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout)

    # --- talking to it --------------------------------------------------------------------
    def host(self, branch_slug: str) -> str:
        return f"{branch_slug}.{self.domain}"

    def git_url(self, app: str | None = None, token: str | None = PUSH_TOKEN, user: str = "git") -> str:
        """The app's push URL, with the token in it unless `token` is None."""
        auth = "" if token is None else f"{quote(user, safe='')}:{quote(token, safe='')}@"
        return f"http://{auth}127.0.0.1:{self.web_port}/git/{app or self.app}.git"

    def bare_repo(self, app: str | None = None) -> Path:
        return self.root / "data" / "repos" / f"{app or self.app}.git"

    def env_url_for(self, branch_slug: str) -> str:
        return f"http://{self.host(branch_slug)}:{self.proxy_port}/"

    def get(self, host: str, path: str = "/", **kw: Any) -> requests.Response:
        """A request through the proxy, addressed by Host like a browser would."""
        return requests.get(f"http://127.0.0.1:{self.proxy_port}{path}", headers={"Host": host}, timeout=10, **kw)

    def hook(self, forge: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        return requests.post(f"{self.web}/hooks/{forge}", data=body, headers=headers, timeout=10)

    def job(self, job_id: str) -> dict[str, Any]:
        return requests.get(f"{self.web}/api/jobs/{job_id}", headers=self.auth_headers, timeout=10).json()

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("succeeded", "failed", "superseded"):
                return job
            time.sleep(0.2)
        log = self.log(job_id)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s; log:\n{log}")

    def log(self, job_id: str) -> str:
        return requests.get(f"{self.web}/api/jobs/{job_id}/log", headers=self.auth_headers, timeout=10).text

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """A call to the REST API, with the bearer token when auth is on."""
        return requests.request(method, f"{self.web}{path}", headers=self.auth_headers, timeout=10, **kw)


def git_push(cwd: Path, url: str, *refspecs: str, options: tuple[str, ...] = (), env: dict[str, str] | None = None,
             helpers: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`git push`, never prompting; credential helpers are off unless `helpers`."""
    return subprocess.run(["git", *([] if helpers else ["-c", "credential.helper="]), "push",
                           *(f"--push-option={o}" for o in options), url, *refspecs],
                          cwd=cwd, env=git_env(env), capture_output=True, text=True, timeout=timeout)


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", **(extra or {})}


def remote_lines(stderr: str) -> list[str]:
    """What the server said during a push: its `remote:` lines, without git's padding."""
    return [line[len("remote: "):].rstrip() for line in stderr.splitlines() if line.startswith("remote: ")]


def ref(repo: Path, name: str) -> str | None:
    """Where `name` points in a (bare) repository, or None."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", name], cwd=repo, capture_output=True, text=True)
    return proc.stdout.strip() or None


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
    return []


def cleanup_docker(app: str) -> None:
    client = docker.from_env()
    for c in client.api.containers(all=True, filters={"label": f"mirage.app={app}"}):
        client.api.remove_container(c["Id"], force=True)
    for image in client.api.images(filters={"reference": f"mirage/*/{app}:*"}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(image["Id"], force=True)


def containers(app: str, branch: str) -> list[dict[str, Any]]:
    client = docker.from_env()
    return client.api.containers(all=True, filters={"label": [f"mirage.app={app}", f"mirage.branch={branch}"]})


# --- forge deliveries, built from the real fixture payloads ------------------------------
def _sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def github_push(app: str, branch: str, after: str, *, deleted: bool = False, secret: str = SECRET,
                ) -> tuple[bytes, dict[str, str]]:
    name = "push-branch-delete.json" if deleted else "push-branch.json"
    payload = json.loads((FIXTURES / "github" / name).read_bytes())
    payload["ref"] = f"refs/heads/{branch}"
    payload["after"] = "0" * 40 if deleted else after
    payload["repository"]["full_name"] = f"example/{app}"
    payload["repository"]["clone_url"] = f"https://github.com/example/{app}.git"
    if not deleted:
        payload["head_commit"]["id"] = after
    body = json.dumps(payload).encode()
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-GitHub-Event": "push",
                  "X-GitHub-Delivery": f"test-{time.time_ns()}", "X-Hub-Signature-256": f"sha256={sig}"}


def gitlab_push(app: str, branch: str, after: str, token: str | None = SECRET) -> tuple[bytes, dict[str, str]]:
    payload = json.loads((FIXTURES / "gitlab" / "push-hook.json").read_bytes())
    payload["ref"] = f"refs/heads/{branch}"
    payload["after"] = payload["checkout_sha"] = after
    payload["project"]["path_with_namespace"] = f"example/{app}"
    payload["project"]["git_http_url"] = f"https://gitlab.example.com/example/{app}.git"
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return body, headers


def gitea_push(app: str, branch: str, after: str) -> tuple[bytes, dict[str, str]]:
    payload = json.loads((FIXTURES / "gitea" / "push-branch.json").read_bytes())
    payload["ref"] = f"refs/heads/{branch}"
    payload["after"] = after
    payload["repository"]["full_name"] = f"example/{app}"
    body = json.dumps(payload).encode()
    sig = _sign(body)
    # Gitea sends GitHub's header names too; the receiver must not be fooled by them.
    return body, {"Content-Type": "application/json", "X-Gitea-Event": "push", "X-Gitea-Signature": sig,
                  "X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}"}


def gitea_delete(app: str, branch: str) -> tuple[bytes, dict[str, str]]:
    payload = json.loads((FIXTURES / "gitea" / "delete-branch.json").read_bytes())
    payload["ref"] = branch
    payload["repository"]["full_name"] = f"example/{app}"
    body = json.dumps(payload).encode()
    return body, {"Content-Type": "application/json", "X-Gitea-Event": "delete", "X-Gitea-Signature": _sign(body)}

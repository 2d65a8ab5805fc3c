"""One bare repository per app under `data_dir/repos/<app>.git`, with mirage-git's hooks in it.

`ensure_all` runs when the web server starts, before it forks. It is idempotent: it creates
what is missing, re-applies the settings and copies the hooks afresh each time, so a new
mirage-git version's hooks take effect on restart. A file lock keeps two starting processes
from initialising the same repository at once.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from ..config import AppConfig, Config
from ..errors import UserError

HOOKS_SOURCE = Path(__file__).resolve().parents[2] / "hooks"
HOOKS = ("pre-receive", "update")

# Smart HTTP only (no dumb file serving), and the settings a Heroku-style remote needs:
# force pushes and deletes are allowed, `git push -o NAME=VALUE` passes launch parameters.
SETTINGS = {
    "http.receivepack": "true",
    "http.uploadpack": "true",
    "http.getanyfile": "false",
    "receive.denyNonFastForwards": "false",
    "receive.denyDeletes": "false",
    "receive.advertisePushOptions": "true",
    "receive.keepAlive": "5",
    "core.logAllRefUpdates": "true",
}


def path(config: Config, app: str) -> Path:
    """Where `app`'s pushes land (and where `worker.jobs` looks when the app has no `repo`)."""
    return config.data_dir / "repos" / f"{app}.git"


def ensure_all(config: Config) -> None:
    for app in config.apps.values():
        ensure(config, app)


def ensure(config: Config, app: AppConfig) -> Path:
    """Create `app`'s bare repository if needed, and (re)install its settings and hooks."""
    repo = path(config, app.name)
    repo.parent.mkdir(parents=True, exist_ok=True)
    with open(repo.parent / f".{app.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (repo / "HEAD").is_file():
            # No template: git's sample hooks would only be noise next to ours.
            _git(repo.parent, "init", "--quiet", "--bare", "--template=", "--initial-branch=main", str(repo))
        for key, value in SETTINGS.items():
            _git(repo, "config", key, value)
        install_hooks(repo)
    return repo


def install_hooks(repo: Path) -> None:
    hooks = repo / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in HOOKS:
        source = HOOKS_SOURCE / name
        if not source.is_file():
            raise FileNotFoundError(f"mirage-git's {name} hook is missing from {HOOKS_SOURCE}")
        tmp = hooks / f".{name}.new"
        shutil.copyfile(source, tmp)
        tmp.chmod(0o755)
        tmp.replace(hooks / name)  # atomic: a push running now sees the old hook or the new one


def _git(cwd: Path, *args: str) -> None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("git is not installed, and `git push` to mirage-git needs it: apt-get install -y git") from None
    if proc.returncode != 0:
        raise RuntimeError(f"git {args[0]} in {cwd} failed: {proc.stderr.strip() or proc.returncode}")

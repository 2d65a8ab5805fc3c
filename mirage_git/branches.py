"""The branches a launcher can offer: `git ls-remote` of the app's repository, cached briefly.

The repository is the app's `repo` from the config, or the service's own push repository
(`data_dir/repos/<app>.git`) for apps that are pushed to mirage-git directly. It is never
an address a request supplied. Answers are cached for `TTL` seconds per repository, so a
page that asks on every keystroke or a busy API client costs one `git ls-remote`, not one
per request; a failure is cached too, so an unreachable forge does not stall every page.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import AppConfig, Config
from .errors import git_failure
from .push import barerepos

TTL = 30.0
TIMEOUT = 15.0


@dataclass(frozen=True)
class Branch:
    name: str
    commit: str
    origin: str  # the repository that has it: the app's `repo`, or its push repository


@dataclass(frozen=True)
class BranchList:
    """What `git ls-remote` said about one repository, at `fetched_at`."""

    origin: str
    branches: tuple[Branch, ...] = ()
    error: str | None = None  # set when the list could not be read; `branches` is then empty
    fetched_at: float = field(default_factory=time.time)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.branches]

    def has(self, name: str) -> bool:
        return self.origin_of(name) is not None

    def origin_of(self, name: str) -> str | None:
        return next((b.origin for b in self.branches if b.name == name), None)

    def to_api(self) -> dict[str, object]:
        return {"origin": self.origin, "error": self.error,
                "branches": [{"name": b.name, "commit": b.commit, "origin": b.origin} for b in self.branches]}


_cache: dict[str, BranchList] = {}
_lock = threading.Lock()


def origins(config: Config, app: AppConfig) -> list[str]:
    """Where `app`'s branches live: its configured repo (if any), then its push repository."""
    pushed = str(barerepos.path(config, app.name))
    return [app.repo, pushed] if app.repo else [pushed]


def of(config: Config, app: AppConfig, refresh: bool = False) -> BranchList:
    """The branches `app` can deploy, at most `TTL` seconds old unless `refresh`.

    An app with a `repo` that also takes pushes has branches in both places; a branch in
    both is taken from `repo`, a branch only pushed is taken from the push repository.
    """
    where = origins(config, app)
    lists = [_listed(w, pushed=(i == len(where) - 1), refresh=refresh) for i, w in enumerate(where)]
    seen: dict[str, Branch] = {}
    for listed in lists:
        for b in listed.branches:
            seen.setdefault(b.name, b)
    primary = lists[0]
    if len(lists) == 1 or not lists[1].branches:
        return primary
    found = tuple(sorted(seen.values(), key=lambda b: (b.name not in ("main", "master"), b.name.lower())))
    return BranchList(primary.origin, found, None if found else primary.error, primary.fetched_at)


def _listed(where: str, pushed: bool, refresh: bool) -> BranchList:
    with _lock:
        cached = _cache.get(where)
    if cached is not None and not refresh and time.time() - cached.fetched_at < TTL:
        return cached
    result = _ls_remote(where, pushed=pushed)
    with _lock:
        _cache[where] = result
    return result


def forget() -> None:
    """Drop every cached list (tests, and after a push that created a branch)."""
    with _lock:
        _cache.clear()


def _ls_remote(where: str, pushed: bool) -> BranchList:
    if pushed and not Path(where).exists():
        return BranchList(where, error="nothing has been pushed to this app yet")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true",
           "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")}
    try:
        proc = subprocess.run(["git", "ls-remote", "--heads", "--", where], capture_output=True, text=True,
                              timeout=TIMEOUT, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return BranchList(where, error=f"git ls-remote did not answer within {TIMEOUT:.0f}s")
    except OSError as exc:
        return BranchList(where, error=f"cannot run git ({exc.strerror})")
    if proc.returncode != 0:
        why = git_failure(proc.stderr) or f"git exited with status {proc.returncode}"
        return BranchList(where, error=f"cannot list branches: {why}")
    found = []
    for line in proc.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/"):
            found.append(Branch(ref.removeprefix("refs/heads/"), sha, where))
    found.sort(key=lambda b: (b.name not in ("main", "master"), b.name.lower()))
    return BranchList(where, tuple(found))

"""Source code for a build: one cached bare clone per app, and a clean tree of one commit.

The cache makes every fetch after the first incremental. A file lock per cache keeps two
workers that build the same app from tripping over git's own ref locks.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import git

from mirage_git import naming
from mirage_git.errors import git_failure


class SourceError(Exception):
    """The commit could not be fetched or exported; the message is one sentence for the log."""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fetch(cache: Path, origin: str, branch: str, commit: str | None, log: Callable[[str], None]) -> str:
    """Bring `commit` (or the tip of `branch` when None) into `cache`; return the full commit id.

    `origin` is always an address from the config (or the service's own push repository),
    never one taken from a webhook payload.
    """
    with _locked(cache):
        repo = git.Repo(cache) if (cache / "HEAD").exists() else git.Repo.init(cache, bare=True)
        with repo:
            ref = f"refs/mirage/heads/{branch}"
            log(f"fetching {branch} from {origin}")
            try:
                repo.git.fetch(origin, f"+refs/heads/{branch}:{ref}", "--no-tags", "--quiet")
            except git.GitCommandError as exc:
                if commit is None or not _has_commit(repo, commit):
                    raise SourceError(f"git fetch of {branch!r} from {origin} failed: {_git_reason(exc)}") from None
                log(f"warning: branch fetch failed ({_git_reason(exc)}); building the commit already cached")
            if commit is None:
                return repo.git.rev_parse(f"{ref}^{{commit}}")
            if not _has_commit(repo, commit):
                # The branch moved on since the push; ask for the commit itself.
                try:
                    repo.git.fetch(origin, commit, "--no-tags", "--quiet")
                except git.GitCommandError as exc:
                    short = naming.short_sha(commit)
                    raise SourceError(f"commit {short} is not in {origin}: {_git_reason(exc)}") from None
            if not _has_commit(repo, commit):
                raise SourceError(f"commit {naming.short_sha(commit)} is not in {origin}")
            return repo.git.rev_parse(f"{commit}^{{commit}}")


def fetch_pushed(cache: Path, origin: str, branch: str, commit: str, quarantine: str | None,
                 log: Callable[[str], None]) -> str:
    """Bring a commit that was just pushed to `origin` (the app's bare repository) into `cache`.

    While the pusher's pre-receive hook waits for this job, the new objects sit in git's
    quarantine directory and no ref points at them yet, so neither a branch fetch nor a
    plain fetch by id can see them. The upload-pack serving this fetch gets the quarantine
    as an extra object directory (an alternate) instead. Only that side does: the cache
    itself never refers to the quarantine, so it stays whole after git deletes it.
    """
    with _locked(cache):
        repo = git.Repo(cache) if (cache / "HEAD").exists() else git.Repo.init(cache, bare=True)
        with repo:
            ref = f"refs/mirage/heads/{branch}"
            if not _has_commit(repo, commit):
                log(f"fetching {naming.short_sha(commit)} from {origin}" + (" (pushed, in quarantine)"
                                                                           if quarantine else ""))
                upload_pack = "git -c uploadpack.allowAnySHA1InWant=true upload-pack"
                if quarantine and os.path.isdir(quarantine):
                    upload_pack = f"env GIT_ALTERNATE_OBJECT_DIRECTORIES={shlex.quote(quarantine)} {upload_pack}"
                try:
                    repo.git.fetch(f"--upload-pack={upload_pack}", "--no-tags", "--quiet", origin,
                                   f"+{commit}:{ref}")
                except git.GitCommandError as exc:
                    raise SourceError(f"commit {naming.short_sha(commit)} could not be fetched from {origin} "
                                      f"(was the push interrupted? push again): {_git_reason(exc)}") from None
            else:
                repo.git.update_ref(ref, commit)
            return repo.git.rev_parse(f"{commit}^{{commit}}")


def export(cache: Path, commit: str, subdir: str, dest: Path) -> None:
    """Write the tree of `commit` (only `subdir` of it, unless ".") into the empty folder `dest`.

    `git archive` streams the tree straight into the extractor; the `data` filter refuses
    absolute paths and links that point outside `dest`.
    """
    treeish = commit if subdir in ("", ".") else f"{commit}:{subdir.strip('/')}"
    dest.mkdir(parents=True, exist_ok=True)
    with git.Repo(cache) as repo:
        try:
            # Not `<commit>:<dir>^{tree}`: after the colon, git reads "^{tree}" as part of the path.
            kind = repo.git.cat_file("-t", treeish if treeish != commit else f"{commit}^{{tree}}")
        except git.GitCommandError:
            kind = None
        if kind != "tree":
            raise SourceError(f"the commit has no folder {subdir!r} (the app's `context`)")
        proc = repo.git.archive("--format=tar", treeish, as_process=True)
        unpacked = False
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                tar.extractall(dest, filter="data")
            unpacked = True
        except (tarfile.TarError, OSError) as exc:
            raise SourceError(f"could not unpack the commit's tree: {exc}") from None
        finally:
            if unpacked:
                proc.wait()
            else:  # git may be blocked writing to a pipe nobody reads any more: waiting alone would hang
                proc.proc.kill()
                proc.proc.wait()


def _has_commit(repo: git.Repo, commit: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{commit}^{{commit}}")
        return True
    except git.GitCommandError:
        return False


def _git_reason(exc: git.GitCommandError) -> str:
    return git_failure(str(exc.stderr or exc)) or f"git exited with status {exc.status}"

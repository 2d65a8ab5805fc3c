"""Source code for a build: one cached bare clone per app, and a clean tree of one commit.

The cache makes every fetch after the first incremental. A file lock per cache keeps two
workers that build the same app from tripping over git's own ref locks.
"""

from __future__ import annotations

import fcntl
import os
import shlex
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


def subject(cache: Path, commit: str) -> str | None:
    """The commit's subject line, for jobs that came without one (a redeploy, the CLI, the API)."""
    with git.Repo(cache) as repo:
        try:
            line = repo.git.log("-1", "--format=%s", commit)
        except git.GitCommandError:
            return None
    return line.strip()[:200] or None


MAX_TREE_BYTES = 2 << 30  # a build context larger than this is refused before anything is written


def export(cache: Path, commit: str, subdir: str, dest: Path) -> None:
    """Write the tree of `commit` (only `subdir` of it, unless ".") into the empty folder `dest`.

    git writes the files itself (`read-tree` into a private index, then `checkout-index`):
    it refuses entries named `..` or `.git` and trees that hold one name twice, and never
    writes through a symlink, so a hostile tree cannot put a file outside `dest`. (tarfile's
    extraction filter is bypassable on the Python versions we support: CVE-2025-4517.)
    Symlinks are written as symlinks; Docker resolves them inside the build context.
    """
    treeish = commit if subdir in ("", ".") else f"{commit}:{subdir.strip('/')}"
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    index = dest.with_name(dest.name + ".index")
    with git.Repo(cache) as repo:
        try:
            # Not `<commit>:<dir>^{tree}`: after the colon, git reads "^{tree}" as part of the path.
            kind = repo.git.cat_file("-t", treeish if treeish != commit else f"{commit}^{{tree}}")
        except git.GitCommandError:
            kind = None
        if kind != "tree":
            raise SourceError(f"the commit has no folder {subdir!r} (the app's `context`)")
        size = _tree_bytes(repo, treeish)
        if size > MAX_TREE_BYTES:
            raise SourceError(f"the commit's tree holds {size / (1 << 30):.1f} GiB of files; "
                              f"the limit for a build context is {MAX_TREE_BYTES / (1 << 30):.0f} GiB")
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            repo.git.read_tree(f"{treeish}^{{tree}}" if treeish == commit else treeish, env=env)
            repo.git(work_tree=str(dest)).checkout_index("--all", "--force", env=env)
        except git.GitCommandError as exc:
            raise SourceError(f"could not write the commit's tree: {_git_reason(exc)}") from None
        finally:
            index.unlink(missing_ok=True)


def _tree_bytes(repo: git.Repo, treeish: str) -> int:
    """The total size of the blobs under `treeish`, as a checkout would write them."""
    total = 0
    for entry in repo.git.ls_tree("-r", "-l", "-z", treeish).split("\0"):
        size = entry.split("\t", 1)[0].rsplit(" ", 1)[-1].strip() if entry else "-"
        if size.isdigit():  # "-" for submodule entries, which are not checked out
            total += int(size)
    return total


def _has_commit(repo: git.Repo, commit: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{commit}^{{commit}}")
        return True
    except git.GitCommandError:
        return False


def _git_reason(exc: git.GitCommandError) -> str:
    return git_failure(str(exc.stderr or exc)) or f"git exited with status {exc.status}"

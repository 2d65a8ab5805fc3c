"""Fetching and exporting source: what a failed fetch says, and what a hostile tree cannot do."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from mirage_git import branches, config
from worker import source


def test_fetch_from_a_missing_repository_names_the_cause(tmp_path: Path):
    missing = tmp_path / "missing"
    with pytest.raises(source.SourceError) as err:
        source.fetch(tmp_path / "cache.git", str(missing), "main", None, lambda line: None)
    message = str(err.value)
    assert "does not appear to be a git repository" in message, message
    assert "and the repository exists" not in message


def test_branch_list_of_a_missing_repository_names_the_cause(tmp_path: Path):
    branches.forget()
    cfg = config.parse({"data_dir": str(tmp_path), "apps": {"a": {"repo": str(tmp_path / "missing")}}})
    listed = branches.of(cfg, cfg.apps["a"])
    assert listed.error is not None and "does not appear to be a git repository" in listed.error, listed.error


# --- export: a pushed tree is hostile input ---------------------------------------------------
SYMLINK, TREE, FILE = "120000", "40000", "100644"


class Objects:
    """Writes git objects by hand into a bare repository, including trees git itself would never make."""

    def __init__(self, path: Path) -> None:
        self.path = path
        subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)

    def _git(self, *args: str, data: bytes = b"") -> str:
        return subprocess.run(["git", *args], cwd=self.path, input=data, capture_output=True,
                              check=True).stdout.decode().strip()

    def blob(self, data: bytes) -> str:
        return self._git("hash-object", "-w", "--stdin", data=data)

    def tree(self, *entries: tuple[str, str, str]) -> str:
        raw = b"".join(f"{mode} {name}".encode() + b"\0" + bytes.fromhex(sha) for mode, name, sha in entries)
        return self._git("hash-object", "-w", "--literally", "-t", "tree", "--stdin", data=raw)

    def commit(self, tree: str) -> str:
        return self._git("-c", "user.name=t", "-c", "user.email=t@e", "commit-tree", tree, "-m", "x")


def _outside(root: Path, dest: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p != dest and dest not in p.parents and p not in dest.parents)


def test_a_hostile_tree_writes_nothing_outside_the_build_folder(tmp_path: Path):
    """Symlinks to outside, then files "beneath" them; `..` and `.git` entries; one name used twice."""
    git = Objects(tmp_path / "cache.git")
    pwned = git.tree((FILE, "PWNED", git.blob(b"outside\n")))
    cases = {
        "through a link to the parent": [(SYMLINK, "up", git.blob(b"..")), (TREE, "up", pwned)],
        "through an absolute link": [(SYMLINK, "abs", git.blob(str(tmp_path).encode())), (TREE, "abs", pwned)],
        "a .. entry": [(TREE, "..", pwned)],
        "a .git entry": [(TREE, ".git", git.tree((FILE, "config", git.blob(b"[core]\n"))))],
    }
    for name, entries in cases.items():
        run = tmp_path / name.replace(" ", "-")
        dest = run / "ctx"
        with contextlib.suppress(source.SourceError):  # refused is as good as harmless
            source.export(git.path, git.commit(git.tree(*entries)), ".", dest)
        assert _outside(run, dest) == [], name
        assert not (tmp_path / "PWNED").exists() and not (run / "PWNED").exists(), name


def test_the_tarfile_filter_bypass_writes_nothing_outside_either(tmp_path: Path):
    """CVE-2025-4517: symlink chains longer than PATH_MAX fooled tarfile's "data" filter (Python < 3.11.13)."""
    git = Objects(tmp_path / "cache.git")
    long_dir, steps = "d" * 247, "abcdefghijklmnop"
    inner = git.tree((FILE, ".keep", git.blob(b"")))
    for step in reversed(steps):  # d…/d…/…, with a link named by the step beside each d… pointing to it
        entries = [(TREE, long_dir, inner), (SYMLINK, step, git.blob(long_dir.encode()))]
        inner = git.tree(*entries)
    deep = git.tree((SYMLINK, "l" * 254, git.blob(b"../" * 16)))
    for step in reversed(steps[1:]):
        deep = git.tree((TREE, step, deep))
    link = "/".join(steps) + "/" + "l" * 254 + "/../../.."
    pwned = git.tree((FILE, "PWNED", git.blob(b"outside\n")))
    root = git.tree(*entries, (TREE, "a", deep), (SYMLINK, "escape", git.blob(link.encode())), (TREE, "escape", pwned))
    run = tmp_path / "run"
    dest = run / "x" / "y" / "z" / "ctx"
    with contextlib.suppress(source.SourceError):
        source.export(git.path, git.commit(root), ".", dest)
    assert _outside(run, dest) == []


def test_symlinks_are_written_as_symlinks_never_followed(tmp_path: Path):
    git = Objects(tmp_path / "cache.git")
    tree = git.tree((SYMLINK, "etc", git.blob(b"/etc")), (FILE, "Dockerfile", git.blob(b"FROM scratch\n")))
    dest = tmp_path / "ctx"
    source.export(git.path, git.commit(tree), ".", dest)
    assert (dest / "etc").is_symlink() and os.readlink(dest / "etc") == "/etc"
    assert (dest / "Dockerfile").read_text() == "FROM scratch\n"


def test_a_tree_over_the_size_limit_is_refused_before_anything_is_written(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    git = Objects(tmp_path / "cache.git")
    blob = git.blob(b"x" * 4096)  # one blob, many names: a small repository that checks out big
    tree = git.tree(*[(FILE, f"f{i:02}", blob) for i in range(16)])
    monkeypatch.setattr(source, "MAX_TREE_BYTES", 16 * 4096 - 1)
    dest = tmp_path / "ctx"
    with pytest.raises(source.SourceError, match="limit for a build context"):
        source.export(git.path, git.commit(tree), ".", dest)
    assert list(dest.iterdir()) == []
    monkeypatch.setattr(source, "MAX_TREE_BYTES", 16 * 4096)
    source.export(git.path, git.commit(tree), ".", dest)
    assert len(list(dest.iterdir())) == 16

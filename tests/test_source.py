"""What a failed fetch says: the cause git gave, not the boilerplate it appends."""

from __future__ import annotations

import os
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


def test_an_export_that_fails_unexpectedly_does_not_hang_on_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`git archive` blocks on a full pipe once the reader gives up: the error must surface, not a hang."""
    import subprocess

    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    (src / "big").write_bytes(os.urandom(1 << 20))  # far more than a pipe holds
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    subprocess.run(["git", "-C", str(src), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(src), "commit", "-qm", "big"], check=True, env=env)
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()

    class Broken(Exception):
        pass

    def broken_open(*args: object, **kwargs: object) -> None:
        raise Broken("the extractor broke")

    monkeypatch.setattr(source.tarfile, "open", broken_open)
    with pytest.raises(Broken):
        source.export(src / ".git", commit, ".", tmp_path / "out")

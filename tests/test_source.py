"""What a failed fetch says: the cause git gave, not the boilerplate it appends."""

from __future__ import annotations

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

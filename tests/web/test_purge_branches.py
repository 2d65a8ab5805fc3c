"""Durations for purge, and the cached branch lists behind the launcher."""

from __future__ import annotations

import time

import pytest

from mirage_git import branches, config
from mirage_git.purge import parse_duration

from .conftest import git


@pytest.mark.parametrize("text,seconds", [("90", 90), (90, 90), (1.5, 1.5), ("45m", 2700), ("2h", 7200),
                                          ("1h30m", 5400), ("7d", 604800), ("1w", 604800), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", 0, -5, "5x", "h", "1h-", True, "99999w"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_branch_list_is_cached_and_refreshable(tmp_path, repo):
    branches.forget()
    cfg = config.parse({"data_dir": str(tmp_path), "apps": {"a": {"repo": str(repo)}}})
    app = cfg.apps["a"]
    first = branches.of(cfg, app)
    assert first.names == ["main", "feature/login", "fix-1"] and first.error is None
    git(repo, "branch", "cached-out")
    try:
        assert not branches.of(cfg, app).has("cached-out"), "served from the cache"
        assert branches.of(cfg, app, refresh=True).has("cached-out")
        branches._cache[str(repo)] = branches.BranchList(str(repo), fetched_at=time.time() - branches.TTL - 1)
        assert branches.of(cfg, app).has("cached-out"), "an expired entry is fetched again"
    finally:
        git(repo, "branch", "-D", "cached-out")


def test_unreachable_repository_is_an_error_not_an_exception(tmp_path):
    branches.forget()
    cfg = config.parse({"data_dir": str(tmp_path), "apps": {"a": {"repo": str(tmp_path / "missing")}}})
    listed = branches.of(cfg, cfg.apps["a"])
    assert listed.branches == () and listed.error.startswith("cannot list branches:")


def test_an_integer_beyond_any_float_is_a_bad_duration_not_a_crash():
    with pytest.raises(ValueError, match="less than 10 years"):
        parse_duration(10**400)

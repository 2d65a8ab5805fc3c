from __future__ import annotations

import pytest

from mirage_git import repos


@pytest.mark.parametrize("given,identity", [
    ("https://github.com/Owner/Name.git", "github.com/owner/name"),
    ("https://user:pw@GitHub.com/owner/name/", "github.com/owner/name"),
    ("git@github.com:owner/name.git", "github.com/owner/name"),
    ("ssh://git@gitlab.example.com:2222/group/sub/repo.git", "gitlab.example.com:2222/group/sub/repo"),
    ("ssh://git@github.com/owner/name.git", "github.com/owner/name"),
    ("owner/name", "owner/name"),
    ("file:///srv/git/app.git", "/srv/git/app"),
    ("/srv/git/app.git/", "/srv/git/app"),
])
def test_normalise(given, identity):
    assert repos.normalise(given) == identity


def test_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert repos.normalise("./app") == str(tmp_path / "app")
    assert repos.is_local("./app") and repos.is_local("/abs") and repos.is_local("file:///x")
    assert not repos.is_local("git@github.com:o/n") and not repos.is_local("https://x/y")


def test_full_name_matches_url_but_not_a_longer_path():
    ids = frozenset({"github.com/owner/name"})
    assert repos.matches("owner/name", ids)
    assert repos.matches("github.com/owner/name", frozenset({"owner/name"}))
    assert not repos.matches("name", ids)
    assert not repos.matches("evil/owner/name", frozenset({"owner/name"}))
    assert not repos.matches("other/name", ids)


@pytest.mark.parametrize("given", ["http://[::1", "https://github.com:abc/o/n", "https://github.com:99999/o/n",
                                   "ssh://git@[bad/x"])
def test_normalise_never_raises_on_a_malformed_url(given):
    # Payload URLs are attacker-controlled and read before any signature check.
    identity = repos.normalise(given)
    assert isinstance(identity, str) and identity == identity.casefold()
    assert not repos.matches(identity, frozenset({"github.com/o/n"}))

from __future__ import annotations

import pytest

from mirage_git import naming
from mirage_git.store import Store


@pytest.mark.parametrize("branch,slug", [
    ("feature/Login_Page", "feature-login-page"),
    ("main", "main"),
    ("--weird--//name__", "weird-name"),
    ("UPPER", "upper"),
    ("dependabot/npm_and_yarn/lodash-4.17.21", "dependabot-npm-and-yarn-lodash-4-17-21"),
    ("x" * 100, "x" * 63),
    ("a" * 62 + "/b", "a" * 62),  # trailing '-' trimmed after the cut
    ("ブランチ", ""),
])
def test_slugify(branch, slug):
    assert naming.slugify(branch) == slug


def test_candidates_are_dns_labels_and_distinct():
    for branch in ["feature/x", "ブランチ", "x" * 300, "-"]:
        cands = list(naming.slug_candidates(branch))
        assert len(set(cands)) == len(cands)
        for c in cands:
            assert 0 < len(c) <= 63 and c[0] != "-" and c[-1] != "-"
            assert all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in c)


def test_collisions_get_a_stable_hash_suffix(store: Store):
    first = store.claim_slug("app", "feature/login", naming.slug_candidates("feature/login"))
    second = store.claim_slug("app", "Feature_Login", naming.slug_candidates("Feature_Login"))
    third = store.claim_slug("app", "feature-login", naming.slug_candidates("feature-login"))
    assert first == "feature-login"
    assert second.startswith("feature-login-") and len(set([first, second, third])) == 3
    # Stable for the branch's life, whatever order it is asked in.
    assert store.claim_slug("app", "Feature_Login", naming.slug_candidates("Feature_Login")) == second
    assert store.slug_of("app", "feature/login") == first
    # Another app has its own namespace.
    assert store.claim_slug("other", "Feature_Login", naming.slug_candidates("Feature_Login")) == "feature-login"
    # Once the env is forgotten, the readable slug goes to the next claimant.
    store.set_latest("feature-login.example", "job1")
    assert store.forget_env("job1", "feature-login.example", "app", "feature/login")
    assert store.claim_slug("app", "FEATURE/LOGIN", naming.slug_candidates("FEATURE/LOGIN")) == "feature-login"


@pytest.mark.parametrize("name,ok", [
    ("main", True), ("feature/x", True), ("release-1.2", True), ("a/b/c", True), ("ü", True),
    ("", False), ("/x", False), ("x/", False), ("a..b", False), ("a b", False), ("a\tb", False), ("x.lock", False),
    ("a//b", False), ("a/.b", False), ("@", False), ("a@{b", False), ("a~b", False), ("a:b", False), ("-x", False),
    ("HEAD", False), ("x\x00", False), ("x" * 256, False),
])
def test_valid_branch(name, ok):
    assert naming.is_valid_branch(name) is ok


def test_shas():
    assert naming.is_null_sha("0" * 40) and naming.is_null_sha("0" * 64)
    assert not naming.is_null_sha("0" * 39 + "1") and not naming.is_null_sha(None)
    assert naming.is_sha("a" * 40) and naming.is_sha("b" * 64) and not naming.is_sha("g" * 40)


def test_a_trailing_newline_is_not_part_of_a_sha():
    # `^...$` with re.match accepts "…\n"; "0000…\n" would then read as a branch delete.
    assert not naming.is_sha("a" * 40 + "\n") and not naming.is_sha("b" * 64 + "\n")
    assert not naming.is_null_sha("0" * 40 + "\n")

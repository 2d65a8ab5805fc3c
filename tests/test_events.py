"""Every fixture payload from the forges parses to the right events, and signatures are checked."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from mirage_git import events
from mirage_git.events import WebhookError

HOOKS = Path(__file__).parent / "fixtures" / "webhooks"
SECRET = "It's a Secret to Everybody"


def body(name: str) -> bytes:
    return (HOOKS / name).read_bytes()


def github(event: str, name: str, sign: bool = True, content_type: str = "application/json") -> dict[str, str]:
    headers = {"X-GitHub-Event": event, "Content-Type": content_type, "X-GitHub-Delivery": "d-1"}
    if sign:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(SECRET.encode(), body(name), hashlib.sha256).hexdigest()
    return headers


def gitea(event: str, name: str, forgejo: bool = False) -> dict[str, str]:
    sig = hmac.new(SECRET.encode(), body(name), hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Gitea-Event": event, "X-Gitea-Signature": sig,
               "X-GitHub-Event": event, "X-Hub-Signature-256": "sha256=" + sig}
    if forgejo:
        headers.update({"X-Forgejo-Event": event, "X-Forgejo-Signature": sig})
    return headers


# --- GitHub -------------------------------------------------------------------------------
def test_github_push_branch():
    d = events.read("github", github("push", "github/push-branch.json"), body("github/push-branch.json"))
    assert d.kind == "push"
    assert d.pushes == (events.PushEvent("master", "199eddf46df50de8d02e99bf1c5fdb4101338224", False,
                                         "Codertocat", d.pushes[0].subject),)
    assert "codertocat/hello-world" in d.repo_ids
    assert "github.com/codertocat/hello-world" in d.repo_ids
    assert d.delivery_id == "d-1"


@pytest.mark.parametrize("name,branch,commit", [
    ("github/push-branch-create.json", "feature-branch", "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd"),
    ("github/push-branch-create-with-commit.json", "master", "6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
])
def test_github_branch_create(name, branch, commit):
    d = events.read("github", github("push", name), body(name))
    assert [(p.branch, p.commit, p.deleted) for p in d.pushes] == [(branch, commit, False)]


def test_github_branch_delete_is_a_teardown():
    d = events.read("github", github("push", "github/push-branch-delete.json"), body("github/push-branch-delete.json"))
    assert [(p.branch, p.commit, p.deleted) for p in d.pushes] == [("feature-branch", None, True)]


@pytest.mark.parametrize("name", ["github/push-tag-create.json", "github/push-tag-delete.json"])
def test_github_tags_are_ignored(name):
    d = events.read("github", github("push", name), body(name))
    assert (d.kind, d.reason, d.pushes) == ("ignored", "tag push", ())


def test_github_ping():
    d = events.read("github", github("ping", "github/ping.json"), body("github/ping.json"))
    assert d.kind == "ping" and "octocoders/hello-world" in d.repo_ids


@pytest.mark.parametrize("event,name", [("create", "github/create-branch.json"),
                                        ("delete", "github/delete-branch.json")])
def test_github_create_and_delete_events_are_ignored(event, name):
    # The push event with deleted=true already carries a branch delete; acting on both would double it.
    d = events.read("github", github(event, name), body(name))
    assert d.kind == "ignored" and event in d.reason


def test_github_form_encoded_payload():
    name = "github/push-branch.DERIVED.form-urlencoded.txt"
    headers = github("push", name, content_type="application/x-www-form-urlencoded")
    d = events.read("github", headers, body(name))
    assert d.pushes[0].commit == "199eddf46df50de8d02e99bf1c5fdb4101338224"
    assert events.verify("github", headers, body(name), SECRET)


def test_github_signature_checks():
    raw = body("github/push-branch.json")
    assert events.verify("github", github("push", "github/push-branch.json"), raw, SECRET)
    # The documented value for this fixture, computed independently of our code.
    documented = {"X-Hub-Signature-256": "sha256=f34850706d3e5e5a04a0ce1fc8cdec591b62e15f33636253edad1b9d3eb78385"}
    assert events.verify("github", documented, raw, SECRET)
    assert not events.verify("github", documented, raw + b" ", SECRET)
    assert not events.verify("github", documented, raw, "another secret")
    assert not events.verify("github", {}, raw, SECRET)
    assert not events.verify("github", {"X-Hub-Signature-256": "sha256="}, raw, SECRET)
    sha1_only = {"X-Hub-Signature": "sha1=cd04bb318fdc7f36b3434fdab62bff7f156715c4"}
    assert not events.verify("github", sha1_only, raw, SECRET)
    assert not events.verify("github", documented, raw, None)


# --- GitLab -------------------------------------------------------------------------------
GL = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}


def test_gitlab_push_uses_checkout_sha_and_project_identity():
    d = events.read("gitlab", GL, body("gitlab/push-hook.json"))
    assert [(p.branch, p.commit) for p in d.pushes] == [("master", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")]
    assert "mike/diaspora" in d.repo_ids
    assert d.pushes[0].pusher == "jsmith"


def test_gitlab_branch_create_and_subgroup():
    d = events.read("gitlab", GL, body("gitlab/push-hook-branch-create.json"))
    assert [(p.branch, p.deleted) for p in d.pushes] == [("feature", False)]
    d = events.read("gitlab", GL, body("gitlab/push-hook-subgroup.json"))
    assert "group1/group2/group3/grp2repo" in d.repo_ids


def test_gitlab_branch_delete():
    d = events.read("gitlab", GL, body("gitlab/push-hook-branch-delete.json"))
    assert [(p.branch, p.commit, p.deleted) for p in d.pushes] == [("feature", None, True)]


@pytest.mark.parametrize("name", ["gitlab/tag-push-hook.json", "gitlab/tag-push-hook-delete.json"])
def test_gitlab_tag_push_is_ignored(name):
    d = events.read("gitlab", {**GL, "X-Gitlab-Event": "Tag Push Hook"}, body(name))
    assert d.kind == "ignored" and d.reason == "tag push"


def test_gitlab_token():
    raw = body("gitlab/push-hook.json")
    assert events.verify("gitlab", GL, raw, SECRET)
    assert not events.verify("gitlab", {**GL, "X-Gitlab-Token": ""}, raw, SECRET)
    assert not events.verify("gitlab", {**GL, "X-Gitlab-Token": "wrong"}, raw, SECRET)
    assert not events.verify("gitlab", {"X-Gitlab-Event": "Push Hook"}, raw, SECRET)


# --- Gitea / Forgejo ----------------------------------------------------------------------
@pytest.mark.parametrize("name,branch,commit", [
    ("gitea/push-branch.json", "master", "4522cbcefc20728a5b72b3a86af35e608622c514"),
    ("gitea/push-branch-create.json", "master", "67b56589a45103f891bdee7c0546e5d40bc02001"),
    ("gitea/push-docs-example-legacy-secret-field.json", "develop", "bffeb74224043ba2feb48d137756c8a9331c449a"),
])
def test_gitea_push(name, branch, commit):
    headers = gitea("push", name)
    d = events.read("gitea", headers, body(name))
    assert [(p.branch, p.commit) for p in d.pushes] == [(branch, commit)]
    assert events.verify("gitea", headers, body(name), SECRET)


def test_gitea_documented_signature():
    headers = {"X-Gitea-Signature": "49a903e988980304b5bbe56276032f118bf5b80fb35a53089c38cff2d5589cab"}
    assert events.verify("gitea", headers, body("gitea/push-branch.json"), SECRET)
    assert not events.verify("gitea", {"X-Gitea-Signature": ""}, body("gitea/push-branch.json"), SECRET)


def test_gitea_delete_event_is_a_teardown():
    d = events.read("gitea", gitea("delete", "gitea/delete-branch.json"), body("gitea/delete-branch.json"))
    assert [(p.branch, p.deleted) for p in d.pushes] == [("feature", True)]


def test_forgejo_push_and_its_own_headers_win():
    name = "forgejo/push-docs-example.json"
    headers = gitea("push", name, forgejo=True)
    headers["X-Gitea-Event"] = "something-else"  # Forgejo's own header decides
    d = events.read("gitea", headers, body(name))
    assert [(p.branch, p.commit) for p in d.pushes] == [("develop", "bffeb74224043ba2feb48d137756c8a9331c449a")]
    assert events.verify("gitea", headers, body(name), SECRET)
    documented = {"X-Forgejo-Signature": "ce4e30acb5a37b271eca94c9bba1580b7ef6437da83f971b6c3caec55831bcbe"}
    assert events.verify("gitea", documented, body(name), SECRET)


def test_gitea_is_never_detected_by_github_headers():
    headers = gitea("push", "gitea/push-branch.json")
    headers.pop("X-Gitea-Event")
    d = events.read("gitea", headers, body("gitea/push-branch.json"))
    assert d.kind == "ignored"


# --- malformed and hostile input ----------------------------------------------------------
@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b"\xff\xfe", b'{"ref": 5, "after": "x"}'])
def test_malformed_bodies_are_400(raw):
    with pytest.raises(WebhookError) as err:
        events.read("github", {"X-GitHub-Event": "push", "Content-Type": "application/json"}, raw)
    assert err.value.status == 400


@pytest.mark.parametrize("ref", ["refs/heads/../evil", "refs/heads/a b", "refs/heads/x\nInjected: 1",
                                 "refs/heads/", "refs/heads/a..b", "refs/heads/-rf", "refs/heads/x.lock"])
def test_hostile_branch_names_are_refused(ref):
    raw = json.dumps({"ref": ref, "after": "a" * 40, "repository": {"full_name": "o/n"}}).encode()
    with pytest.raises(WebhookError) as err:
        events.read("github", {"X-GitHub-Event": "push"}, raw)
    assert err.value.status == 400


def test_push_without_valid_commit_is_400():
    raw = b'{"ref": "refs/heads/main", "after": "not-a-sha", "repository": {"full_name": "o/n"}}'
    with pytest.raises(WebhookError):
        events.read("github", {"X-GitHub-Event": "push"}, raw)


def test_unknown_forge():
    with pytest.raises(WebhookError) as err:
        events.read("bitbucket", {}, b"{}")
    assert err.value.status == 404


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 100_000])
def test_deeply_nested_json_is_400_not_a_crash(raw):
    with pytest.raises(WebhookError) as err:
        events.read("github", {"X-GitHub-Event": "push", "Content-Type": "application/json"}, raw)
    assert err.value.status == 400


@pytest.mark.parametrize("forge,header,value", [
    ("github", "X-Hub-Signature-256", "sha256=\xe9"),
    ("gitea", "X-Gitea-Signature", "\xe9" * 64),
    ("gitea", "X-Forgejo-Signature", "ü"),
    ("gitlab", "X-Gitlab-Token", "\xe9"),
])
def test_a_non_ascii_signature_is_simply_wrong(forge, header, value):
    # Header values arrive decoded as latin-1; a byte above 0x7f must not crash the comparison.
    assert not events.verify(forge, {header: value}, body("github/push-branch.json"), SECRET)


@pytest.mark.parametrize("url", ["http://[::1", "https://github.com:abc/o/n", "https://github.com:99999/o/n"])
def test_a_malformed_repository_url_in_a_payload_is_no_crash(url):
    raw = json.dumps({"ref": "refs/heads/main", "after": "a" * 40,
                      "repository": {"full_name": "o/n", "clone_url": url, "html_url": url}}).encode()
    d = events.read("github", {"X-GitHub-Event": "push"}, raw)
    assert "o/n" in d.repo_ids


@pytest.mark.parametrize("deleted", ["false", "0", 1, [1], {"x": 1}])
def test_github_deleted_must_be_a_real_true_to_tear_down(deleted):
    # A string "false" is truthy in Python; a malformed payload must not tear a live env down.
    raw = json.dumps({"ref": "refs/heads/main", "after": "a" * 40, "deleted": deleted,
                      "repository": {"full_name": "o/n"}}).encode()
    d = events.read("github", {"X-GitHub-Event": "push"}, raw)
    assert [(p.branch, p.commit, p.deleted) for p in d.pushes] == [("main", "a" * 40, False)]


@pytest.mark.parametrize("who", [[1], {"login": "x"}, 5, True])
def test_pusher_of_the_wrong_shape_is_dropped_on_every_path(who):
    raw = json.dumps({"ref": "feature", "ref_type": "branch", "pusher": {"login": who},
                      "sender": {"login": who}, "repository": {"full_name": "o/n"}}).encode()
    d = events.read("gitea", {"X-Gitea-Event": "delete"}, raw)
    assert [(p.branch, p.deleted, p.pusher) for p in d.pushes] == [("feature", True, None)]


def test_lone_surrogates_from_json_escapes_are_refused_or_replaced():
    """JSON's "\\ud800" decodes to a str that cannot be encoded as UTF-8 (for Redis, git, Docker)."""
    raw = b'{"ref": "refs/heads/a\\ud800", "after": "' + b"a" * 40 + b'", "repository": {"full_name": "o/n"}}'
    with pytest.raises(WebhookError) as err:
        events.read("github", {"X-GitHub-Event": "push"}, raw)
    assert err.value.status == 400
    raw = (b'{"ref": "refs/heads/main", "after": "' + b"a" * 40 + b'", "repository": {"full_name": "o/n"},'
           b' "pusher": {"name": "me\\udfff"}, "head_commit": {"message": "\\ud800 subject"}}')
    (push,) = events.read("github", {"X-GitHub-Event": "push"}, raw).pushes
    assert push.pusher == "me?" and push.subject == "? subject"
    push.pusher.encode("utf-8")


@pytest.mark.parametrize("after", ["0" * 40 + "\n", "a" * 40 + "\n"])
def test_a_sha_with_a_trailing_newline_is_400_not_a_teardown_or_deploy(after):
    raw = json.dumps({"ref": "refs/heads/main", "after": after, "repository": {"full_name": "o/n"}}).encode()
    with pytest.raises(WebhookError) as err:
        events.read("github", {"X-GitHub-Event": "push"}, raw)
    assert err.value.status == 400

"""/git/<app>.git before anything reaches git: which app, which paths, which credentials."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from mirage_git import config as config_mod
from mirage_git.push import barerepos
from mirage_git.store import Store
from mirage_git.web import create_app

TOKEN = "t0ken:with/odd chars"


@pytest.fixture
def cfg(tmp_path: Path, redis_url: str) -> config_mod.Config:
    file = tmp_path / "mirage.toml"
    file.write_text(f"""
data_dir = "data"
redis_url = "{redis_url}"
[apps.shop]
push_token = "{TOKEN}"
[apps.closed]
repo = "/nonexistent"
domain = "closed.localhost"
""")
    cfg = config_mod.load(file)
    barerepos.ensure_all(cfg)
    return cfg


@pytest.fixture
def client(cfg: config_mod.Config, store: Store):  # type: ignore[no-untyped-def]
    return create_app(cfg, store).test_client()


def basic(password: str, user: str = "git") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def refs(repo: Path) -> str:
    return subprocess.run(["git", "for-each-ref"], cwd=repo, capture_output=True, text=True, check=True).stdout


def test_startup_creates_bare_repos_with_the_hooks(cfg: config_mod.Config):
    for app in ("shop", "closed"):
        repo = barerepos.path(cfg, app)
        assert (repo / "HEAD").is_file()
        for hook in ("pre-receive", "update"):
            assert (repo / "hooks" / hook).stat().st_mode & 0o111, hook
            assert (repo / "hooks" / hook).read_bytes() == (barerepos.HOOKS_SOURCE / hook).read_bytes()
        got = subprocess.run(["git", "config", "http.getanyfile"], cwd=repo, capture_output=True, text=True)
        assert got.stdout.strip() == "false"
    barerepos.ensure_all(cfg)  # idempotent


def test_unknown_app_is_404_in_plain_text(client):  # type: ignore[no-untyped-def]
    resp = client.get("/git/nope.git/info/refs?service=git-upload-pack", headers=basic(TOKEN))
    assert resp.status_code == 404
    assert resp.mimetype == "text/plain" and "no app named 'nope'" in resp.get_data(as_text=True)


def test_only_the_smart_protocol_is_served(client):  # type: ignore[no-untyped-def]
    for path in ("/git/shop.git/HEAD", "/git/shop.git/config", "/git/shop.git/info/refs",
                 "/git/shop.git/info/refs?service=git-archive", "/git/shop.git/objects/info/packs"):
        assert client.get(path, headers=basic(TOKEN)).status_code == 404, path
    assert client.get("/git/shop.git/git-receive-pack", headers=basic(TOKEN)).status_code == 404


def test_missing_or_wrong_token_is_401_with_a_challenge(client):  # type: ignore[no-untyped-def]
    url = "/git/shop.git/info/refs?service=git-receive-pack"
    for headers in ({}, basic("wrong"), basic(TOKEN[:-1]), basic(""), {"Authorization": "Bearer " + TOKEN}):
        resp = client.get(url, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["WWW-Authenticate"].startswith('Basic realm="mirage-git shop"')


def test_an_app_without_push_token_refuses_with_the_fix(client):  # type: ignore[no-untyped-def]
    resp = client.get("/git/closed.git/info/refs?service=git-receive-pack", headers=basic("anything"))
    assert resp.status_code == 403
    assert "has no push_token" in resp.get_data(as_text=True)
    assert "[apps.closed]" in resp.get_data(as_text=True)


def test_right_token_with_any_user_gets_the_advertisement(client):  # type: ignore[no-untyped-def]
    for user in ("git", "alice", ""):
        resp = client.get("/git/shop.git/info/refs?service=git-upload-pack", headers=basic(TOKEN, user))
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert resp.mimetype == "application/x-git-upload-pack-advertisement"
        assert resp.get_data().startswith(b"001e# service=git-upload-pack\n")
    assert client.get("/git/shop/info/refs?service=git-receive-pack", headers=basic(TOKEN)).status_code == 200


def test_a_push_with_a_wrong_token_writes_nothing(client, cfg: config_mod.Config, tmp_path: Path):  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    (src / "f").write_text("x")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    subprocess.run(["git", "add", "f"], cwd=src, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=src, check=True, env={**env, "PATH": "/usr/bin:/bin"})
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs"], cwd=src, input=(sha + "\n").encode(),
                          capture_output=True, check=True).stdout
    command = f"{'0' * 40} {sha} refs/heads/main\0report-status\n".encode()
    body = b"%04x" % (len(command) + 4) + command + b"0000" + pack
    repo = barerepos.path(cfg, "shop")
    objects_before = sorted(p.name for p in (repo / "objects").rglob("*"))
    resp = client.post("/git/shop.git/git-receive-pack", data=body, headers=basic("wrong"),
                       content_type="application/x-git-receive-pack-request")
    assert resp.status_code == 401
    assert refs(repo) == ""
    assert sorted(p.name for p in (repo / "objects").rglob("*")) == objects_before


@pytest.mark.parametrize("user", ["a\x00b", "line\nbreak", "x" * 5000])
def test_a_hostile_user_name_is_no_crash(client, user: str):
    """The Basic user name becomes REMOTE_USER for git's CGI; a NUL in it must not be a 500."""
    resp = client.get("/git/shop.git/info/refs?service=git-receive-pack", headers=basic(TOKEN, user=user))
    assert resp.status_code == 200, resp.status_code

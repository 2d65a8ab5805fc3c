"""Auth: bearer tokens for the API, login + signed session + CSRF for people, open paths, and the
refusal to listen beyond loopback with no token."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mirage_git import config
from mirage_git.errors import UserError
from mirage_git.web.server import check_listen

from .conftest import TOKEN, csrf_of

BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def secured(make_app):
    return make_app(auth={"token": TOKEN})


def login(client, token: str = TOKEN, next_: str = "/"):
    page = client.get(f"/login?next={next_}")
    assert page.status_code == 200
    return client.post("/login", data={"token": token, "next": next_, "csrf_token": csrf_of(page.text)})


def test_api_needs_the_bearer_token(secured):
    client = secured.test_client()
    for method, path in (("get", "/api/envs"), ("get", "/api/jobs"), ("post", "/api/envs"),
                         ("delete", "/api/envs/x.preview.test"), ("post", "/api/purge"), ("get", "/api/apps")):
        resp = getattr(client, method)(path)
        assert resp.status_code == 401, (method, path)
        assert "error" in resp.get_json() and resp.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/api/envs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.get_json() == {"error": "the bearer token is wrong"}
    assert client.get("/api/envs", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/api/envs", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert client.get("/api/envs", headers=BEARER).status_code == 200
    resp = client.post("/api/envs", headers=BEARER, json={"app": "shop", "branch": "main", "params": {"TICKET": "A-1"}})
    assert resp.status_code == 202, "bearer requests need no CSRF token"


def test_open_paths_stay_open(secured):
    client = secured.test_client()
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/healthz").get_json() == {"ok": True}
    hook = client.post("/hooks/github", data=b"{}", headers={"X-GitHub-Event": "push",
                                                              "Content-Type": "application/json"})
    assert hook.status_code in (400, 404) and "WWW-Authenticate" not in hook.headers, hook.get_json()
    git = client.get("/git/shop.git/info/refs?service=git-receive-pack")
    assert git.status_code in (401, 403, 404), "/git/ answers for itself: no redirect to the login page"
    assert not git.headers.get("WWW-Authenticate", "").startswith("Bearer"), "/git/ has its own (Basic) auth"
    assert "sign in" not in git.get_data(as_text=True).lower()


def test_pages_redirect_to_login_and_login_gives_a_session(secured):
    client = secured.test_client()
    resp = client.get("/launch?app=shop")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login?next=/launch?app%3Dshop"
    assert client.get("/jobs/abc").status_code == 302
    assert client.get("/fragments/dashboard").status_code == 302

    bad = login(client, token="wrong")
    assert bad.status_code == 401 and "That token is not right." in bad.text
    assert 'aria-invalid="true"' in bad.text
    ok = login(client, next_="/launch")
    assert ok.status_code == 302 and ok.headers["Location"] == "/launch"
    cookie = client.get_cookie("mirage_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    assert TOKEN not in cookie.value, "the cookie holds a fingerprint, never the token"
    page = client.get("/")
    assert page.status_code == 200 and "Sign out" in page.text
    assert client.get("/api/envs").status_code == 200, "a signed-in browser may read the API"


def test_login_needs_its_csrf_token_and_refuses_foreign_next(secured):
    client = secured.test_client()
    client.get("/login")
    assert client.post("/login", data={"token": TOKEN}).status_code == 403
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        resp = login(client, next_=evil)
        assert resp.status_code == 302 and resp.headers["Location"] == "/", evil


def test_session_writes_need_csrf(secured):
    client = secured.test_client()
    login(client)
    page = client.get("/")
    token = csrf_of(page.text)
    body = {"app": "shop", "branch": "main", "params": {"TICKET": "A-1"}}
    assert client.post("/api/envs", json=body).status_code == 403
    assert client.post("/api/envs", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    launched = client.post("/api/envs", json=body, headers={"X-CSRF-Token": token})
    assert launched.status_code == 202
    assert client.post("/envs/main.preview.test/terminate").status_code == 403
    resp = client.post("/envs/main.preview.test/terminate", data={"csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    out = client.post("/logout", data={"csrf_token": token})
    assert out.status_code == 302
    assert client.get("/").status_code == 302, "signed out"


def test_changing_the_token_signs_everybody_out(make_app):
    first = make_app(auth={"token": TOKEN, "secret_key": "k" * 32})
    client = first.test_client()
    login(client)
    cookie = client.get_cookie("mirage_session").value
    rotated = make_app(auth={"token": "another-token", "secret_key": "k" * 32}).test_client()
    rotated.set_cookie("mirage_session", cookie)
    assert rotated.get("/").status_code == 302
    same = make_app(auth={"token": TOKEN, "secret_key": "k" * 32}).test_client()
    same.set_cookie("mirage_session", cookie)
    assert same.get("/").status_code == 200, "the same token and key keep the session across restarts"


def test_without_auth_the_ui_is_open_but_still_csrf_protected(client):
    page = client.get("/")
    assert page.status_code == 200 and "open access" in page.text
    token = csrf_of(page.text)
    body = {"app": "shop", "branch": "main", "params": {"TICKET": "A-1"}}
    assert client.post("/api/envs", json=body).status_code == 202, "API clients like curl need no CSRF token"
    refused = client.post("/api/envs", data="x", content_type="text/plain")  # a form: any site's page can send it
    assert refused.status_code == 403 and "Content-Type: application/json" in refused.json["error"], refused.json
    assert client.post("/api/envs", data={"app": "shop"}).status_code == 403
    assert client.post("/api/envs", json=body, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post("/envs/main.preview.test/redeploy").status_code == 403
    assert client.post("/envs/main.preview.test/redeploy", data={"csrf_token": token}).status_code == 302
    assert client.get("/login").status_code == 302


def _cfg(tmp_path, listen: str, auth: str = ""):
    path = tmp_path / "mirage.toml"
    path.write_text(f'[web]\nlisten = "{listen}"\n{auth}\n[apps.shop]\nrepo = "/srv/shop"\n')
    return config.load(path)


def test_check_listen(tmp_path):
    with pytest.raises(UserError, match=r"refusing to serve the web app on 0\.0\.0\.0:8080 with no \[auth\] token"):
        check_listen(_cfg(tmp_path, "0.0.0.0:8080"), insecure=False)
    with pytest.raises(UserError, match="--insecure"):
        check_listen(_cfg(tmp_path, "[::]:8080"), insecure=False)
    check_listen(_cfg(tmp_path, "0.0.0.0:8080"), insecure=True)
    check_listen(_cfg(tmp_path, "0.0.0.0:8080", '[auth]\ntoken = "t"'), insecure=False)
    for loopback in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.2:8080"):
        check_listen(_cfg(tmp_path, loopback), insecure=False)


@pytest.mark.parametrize("command", ["web", "up"])
def test_the_cli_refuses_to_listen_openly(tmp_path, redis_url, command):
    path = tmp_path / "mirage.toml"
    path.write_text(f'redis_url = "{redis_url}"\n[web]\nlisten = "0.0.0.0:1"\n[apps.shop]\nrepo = "/srv/shop"\n')
    proc = subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(path), command],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "refusing to serve the web app on 0.0.0.0:1 with no [auth] token" in proc.stderr
    assert "--insecure" in proc.stderr

"""Fixtures for the web app in-process: the real Flask app over a real Redis and a real git repo.

No worker runs here: jobs are enqueued into Redis for real, and tests that need a job to
move on write its progress into the store the way a worker does.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mirage_git import branches, config
from mirage_git.store import Store
from mirage_git.web import create_app

TOKEN = "s3cret-token-for-tests"
PARAMS = {
    "COLOR": {"env": "APP_COLOR", "options": ["red", "blue"], "default": "red", "description": "Theme colour"},
    "TICKET": {"required": True, "rule": "[A-Z]+-[0-9]+", "description": "The issue this preview is for"},
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with branches main, feature/login and fix-1."""
    path = tmp_path_factory.mktemp("webrepo") / "app"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "commit", "-q", "--allow-empty", "-m", "first")
    for name in ("feature/login", "fix-1"):
        git(path, "branch", name)
    return path


@pytest.fixture
def make_app(store: Store, repo: Path, tmp_path: Path) -> Callable[..., Flask]:
    """Build the app; `auth` is the [auth] table, `extra_apps` more [apps.*] tables."""
    branches.forget()

    def make(auth: dict[str, str] | None = None, extra_apps: dict[str, Any] | None = None,
             web: dict[str, Any] | None = None) -> Flask:
        data: dict[str, Any] = {
            "redis_url": store.where, "data_dir": str(tmp_path / "data"), "domain": "preview.test",
            "apps": {"shop": {"repo": str(repo), "parameters": PARAMS}, **(extra_apps or {})},
        }
        if auth:
            data["auth"] = auth
        if web:
            data["web"] = web
        app = create_app(config.parse(data), store)
        app.testing = True
        return app
    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf_of(html: str) -> str:
    """The CSRF token a page carries (in its <meta> tag and its forms)."""
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def launch(client: FlaskClient, branch: str = "main", **params: str) -> dict[str, Any]:
    resp = client.post("/api/envs", json={"app": "shop", "branch": branch,
                                          "params": {"TICKET": "WEB-1", **params}})
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()

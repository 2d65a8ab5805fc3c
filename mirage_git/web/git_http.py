"""`/git/<app>.git`: git's smart HTTP protocol, so `git push mirage <branch>` deploys.

Only the four smart-protocol requests are served (ref advertisement, fetch, push); the
dumb protocol's file paths are 404. Every request needs HTTP Basic credentials whose
password is the app's `push_token` (any user name; it is recorded as the pusher), and
nothing reaches git until they check out. These routes carry their own auth and must stay
outside any dashboard login.

Errors are plain text, because git shows a text/plain error body to the user as
`remote:` lines.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from pathlib import Path

from flask import Blueprint, Response, request

from ..config import AppConfig, Config
from ..errors import Unavailable
from ..push import barerepos
from . import http_backend
from .context import services

bp = Blueprint("git", __name__, url_prefix="/git")

UPLOAD, RECEIVE = "git-upload-pack", "git-receive-pack"
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # so the hooks import this very mirage_git


@bp.route("/<name>/<path:rest>", methods=["GET", "POST"])
def smart_http(name: str, rest: str) -> Response:
    cfg = services().config
    app = cfg.apps.get(name.removesuffix(".git"))
    if app is None:
        return _text(404, f"no app named {name.removesuffix('.git')!r} here; apps: {', '.join(cfg.apps)}")
    service = _service(request.method, rest, request.args.get("service"))
    if service is None:
        return _text(404, "only git's smart HTTP protocol is served here (git clone / fetch / push)")
    if not app.push_token:
        return _text(403, f"app {app.name!r} has no push_token, so it takes no pushes and serves no clones: "
                          f"set push_token under [apps.{app.name}] in the config and restart mirage-git")
    user = _authorised(app)
    if user is None:
        return _text(401, f"app {app.name!r} needs its push_token as the password (any user name)",
                     {"WWW-Authenticate": f'Basic realm="mirage-git {app.name}", charset="UTF-8"'})
    if service == RECEIVE and request.method == "GET":
        # The start of a push: refuse it now, before the pack is sent, if it could not be deployed.
        try:
            services().store.ping()
        except Unavailable as exc:
            return _text(503, f"push refused: {exc}")
    repo = barerepos.path(cfg, app.name)
    if not (repo / "HEAD").is_file():
        barerepos.ensure(cfg, app)
    length = request.content_length
    body = request.environ["wsgi.input"] if request.method == "POST" else None
    cgi = http_backend.run(_cgi_env(cfg, app, rest, user, length), body, length,
                           finish_on_disconnect=service == RECEIVE)
    return Response(cgi.body, status=cgi.status, headers=cgi.headers, direct_passthrough=True)


def _service(method: str, rest: str, query_service: str | None) -> str | None:
    if method == "GET" and rest == "info/refs" and query_service in (UPLOAD, RECEIVE):
        return query_service
    if method == "POST" and rest in (UPLOAD, RECEIVE):
        return rest
    return None


def _authorised(app: AppConfig) -> str | None:
    """The Basic user name when the password is the app's push_token (compared in constant time)."""
    auth = request.authorization
    if auth is None or auth.type != "basic" or app.push_token is None:
        return None
    # Digests first, so that not even the token's length shows in the timing.
    given = hashlib.sha256((auth.password or "").encode("utf-8")).digest()
    if not hmac.compare_digest(given, hashlib.sha256(app.push_token.encode("utf-8")).digest()):
        return None
    # It becomes REMOTE_USER for git's CGI (no NUL possible in an env var) and the recorded pusher.
    user = "".join(ch for ch in (auth.username or "") if ch.isprintable())[:100].strip()
    return user or "anonymous"


def _cgi_env(cfg: Config, app: AppConfig, rest: str, user: str, length: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({
        "GATEWAY_INTERFACE": "CGI/1.1",
        "GIT_PROJECT_ROOT": str(barerepos.path(cfg, app.name).parent),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{app.name}.git/{rest}",
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.query_string.decode("latin-1"),
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_USER": user,
        "REMOTE_ADDR": request.remote_addr or "",
        "SERVER_PROTOCOL": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        # For the hooks: which app, which config, which Python and which mirage_git.
        "MIRAGE_APP": app.name,
        "MIRAGE_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p),
    })
    if cfg.path is not None:
        env["MIRAGE_CONFIG"] = str(cfg.path)
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    for header in ("Content-Encoding", "Git-Protocol"):
        if header in request.headers:
            env["HTTP_" + header.upper().replace("-", "_")] = request.headers[header]
    return env


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain", headers=headers)

"""Who may use the web app: a bearer token for the API, a login and a signed session for people.

With `[auth] token` set, every request needs either `Authorization: Bearer <token>` or the
session cookie a login with that token gave. Without it the app is open, which
`server.check_listen` allows only on loopback (or with `--insecure`).

Three kinds of path never ask for either: `/hooks/*` (forges sign their deliveries),
`/git/*` (smart-HTTP push has its own Basic auth) and `/static/*`.

CSRF: a request that rides on a cookie (a person's browser) and changes something must
carry the session's CSRF token, as the form field `csrf_token` or the header
`X-CSRF-Token`. Bearer requests carry no cookie, so they need none. When no auth is set,
API writes without that token are still refused if a browser could have sent them from
another site (a form's content types, or `Sec-Fetch-Site: cross-site`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

import redis
from flask import Blueprint, Flask, g, jsonify, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response

from .context import services

OPEN_PREFIXES = ("/hooks/", "/git/", "/static/")
OPEN_PATHS = frozenset({"/login", "/healthz", "/api/openapi.json"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
SESSION_DAYS = 14

bp = Blueprint("auth", __name__)


def init_app(app: Flask) -> None:
    """Install the guard and the login pages on `app`."""
    cfg = app.extensions["mirage"].config
    app.config.update(
        SESSION_COOKIE_NAME="mirage_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.web.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(days=SESSION_DAYS),
    )
    if cfg.auth.secret_key:
        app.secret_key = cfg.auth.secret_key
    app.session_interface = _SessionInterface()
    app.before_request(_guard)
    app.context_processor(lambda: {"csrf_token": csrf_token, "auth_required": required(),
                                   "signed_in": g.get("via") == "session"})
    app.register_blueprint(bp)


def required() -> bool:
    return bool(services().config.auth.token)


def csrf_token() -> str:
    """The session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _fingerprint(token: str) -> str:
    """What a session remembers of the token: enough to notice it changed, useless to an attacker."""
    return hmac.new(b"mirage-git session", token.encode(), hashlib.sha256).hexdigest()[:32]


def _is_api() -> bool:
    return request.path.startswith("/api/")


def _guard() -> Response | None:
    path = request.path
    if path.startswith(OPEN_PREFIXES) or path in OPEN_PATHS:
        return None
    token = services().config.auth.token
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if token is None:
        g.via = "open"
    elif scheme.lower() == "bearer" and given.strip():
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _deny("the bearer token is wrong")
        g.via = "bearer"
    elif hmac.compare_digest(str(session.get("auth", "")), _fingerprint(token)):
        g.via = "session"
    elif _is_api():
        return _deny("authentication required: send Authorization: Bearer <token>")
    elif request.method in SAFE_METHODS:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    else:
        return _deny("sign in first")
    if request.method not in SAFE_METHODS and g.via != "bearer":
        return _check_csrf()
    return None


def _check_csrf() -> Response | None:
    sent = request.headers.get("X-CSRF-Token") or (request.form.get("csrf_token") if not _is_api() else None)
    expected = session.get("csrf")
    if sent and expected and hmac.compare_digest(sent.encode(), expected.encode()):
        return None
    if _is_api() and g.via == "open":
        if not _cross_site():
            return None
        if request.mimetype in FORM_TYPES:  # what a curl -d sends; any other site's page could send it too
            return _error(403, "the API takes JSON: send the body with Content-Type: application/json")
    return _error(403, "CSRF token missing or wrong: reload the page and try again")


def _cross_site() -> bool:
    """Could a page on another site have made this request without the browser asking us first?"""
    if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        return True
    return request.mimetype in FORM_TYPES


def _deny(message: str) -> Response:
    resp = _error(401, message)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="mirage-git"'
    return resp


def _error(status: int, message: str) -> Response:
    if _is_api() or not request.accept_mimetypes.accept_html:
        resp = jsonify(error=message)
    else:
        resp = Response(render_template("error.html", status=status, message=message), mimetype="text/html")
    resp.status_code = status
    return resp


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie sessions, with the key fetched from Redis on first use.

    Every web process (gunicorn runs several) must sign with the same key, and a key that
    changes on restart would sign everybody out; so without `[auth] secret_key` the key is
    made once and kept in Redis. Fetching it lazily lets the app start while Redis is down.
    """

    def get_signing_serializer(self, app: Flask):  # type: ignore[no-untyped-def]
        if not app.secret_key:
            try:
                app.secret_key = app.extensions["mirage"].store.web_secret()
            except redis.RedisError:
                return None  # a null session; the request then fails on Redis with a 503
        return super().get_signing_serializer(app)


def _safe_next(target: str | None) -> str:
    """Only paths on this site: never `//evil.example` or `https://evil.example`."""
    if not target:
        return url_for("ui.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("ui.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():  # type: ignore[no-untyped-def]
    token = services().config.auth.token
    nxt = _safe_next(request.values.get("next"))
    if token is None:
        return redirect(nxt)
    if request.method == "GET":
        return render_template("login.html", next=nxt, error=None)
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not (sent and expected and hmac.compare_digest(sent.encode(), expected.encode())):
        return render_template("login.html", next=nxt, error="The form expired; try again."), 403
    given = request.form.get("token", "").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        return render_template("login.html", next=nxt, error="That token is not right."), 401
    session.clear()
    session.permanent = True
    session["auth"] = _fingerprint(token)
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(nxt)


@bp.post("/logout")
def logout():  # type: ignore[no-untyped-def]
    session.clear()
    return redirect(url_for("auth.login") if required() else url_for("ui.index"))

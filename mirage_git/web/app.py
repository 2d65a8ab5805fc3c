"""The Flask app factory."""

from __future__ import annotations

import redis
from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .. import queue
from ..config import Config
from ..errors import Unavailable
from ..store import Store
from . import api, api_actions, auth, git_http, hooks, launcher, ui
from .context import Services

MAX_BODY = 25 * 1024 * 1024  # GitHub's own cap on webhook payloads


def create_app(config: Config, store: Store | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    store = store or Store.from_url(config.effective_redis_url)
    app.extensions["mirage"] = Services(config, store, queue.rq_queue(config))
    auth.init_app(app)
    app.register_blueprint(hooks.bp)
    assert api_actions.bp is api.bp  # api_actions adds the API's write endpoints to the same blueprint
    app.register_blueprint(api.bp)
    app.register_blueprint(ui.bp)
    app.register_blueprint(launcher.bp)
    app.register_blueprint(git_http.bp)  # /git/: its own Basic auth (push_token); keep it out of any UI login

    @app.after_request
    def no_sniffing(resp):  # type: ignore[no-untyped-def]
        # Logs and error texts carry what builds and pushers wrote: never let a browser guess they are HTML.
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify(ok=True)

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable):  # type: ignore[no-untyped-def]
        return _error(503, str(exc))

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError):  # type: ignore[no-untyped-def]
        return _error(503, str(Unavailable.redis(store.where, exc)))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        return _error(exc.code or 500, exc.description or exc.name)

    return app


def _error(status: int, message: str):  # type: ignore[no-untyped-def]
    """JSON for machines (API, webhooks, git), a small page for people."""
    if request.path.startswith(("/api/", "/hooks/")) or not request.accept_mimetypes.accept_html:
        return jsonify(error=message), status
    return render_template("error.html", status=status, message=message), status

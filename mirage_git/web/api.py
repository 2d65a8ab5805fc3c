"""The REST API under /api/: what exists (apps, envs, jobs, logs, access counts), as JSON.

Writes (launch, redeploy, terminate, purge) live in `api_actions`; the contract of both is
the OpenAPI document at /api/openapi.json (`openapi`). Errors are `{"error": "..."}`.
Times are ISO 8601 in UTC. Job logs are plain text; `?follow=1` streams until the job ends.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, stream_with_context

from .. import branches
from ..actions import Refused, app_named, env_at
from ..config import AppConfig
from ..models import ENV_STATUSES, JOB_STATUSES, Env, iso
from ..store import JOBS_KEPT, Store
from .context import services
from .openapi import document

bp = Blueprint("api", __name__, url_prefix="/api")
TRUE = ("1", "true", "yes", "on")


@bp.errorhandler(Refused)
def refused(exc: Refused):  # type: ignore[no-untyped-def]
    body: dict[str, Any] = {"error": str(exc)}
    if exc.fields:
        body["fields"] = exc.fields
    return jsonify(body), exc.status


@bp.before_request
def known_query_only():  # type: ignore[no-untyped-def]
    """Refuse query parameters the operation does not have: `?stauts=live` must not list everything."""
    rule = request.url_rule
    if rule is None or not request.args:
        return None
    allowed = query_names().get((rule.rule.replace("<", "{").replace(">", "}"), request.method.lower()), set())
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        abort(400, f"unknown query parameter {unknown[0]!r}; this operation takes: {known}")
    return None


@cache
def query_names() -> dict[tuple[str, str], set[str]]:
    """(path, method) → the query parameters the OpenAPI document gives that operation."""
    paths = document("")["paths"]
    return {(path, method): {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            for path, ops in paths.items() for method, op in ops.items()}


@bp.get("/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    return jsonify(document(request.host_url.rstrip("/")))


@bp.get("/apps")
def list_apps():  # type: ignore[no-untyped-def]
    return jsonify([app_json(a) for a in services().config.apps.values()])


@bp.get("/apps/<app>/branches")
def list_branches(app: str):  # type: ignore[no-untyped-def]
    svc = services()
    appcfg = app_named(svc.config, app)
    listed = branches.of(svc.config, appcfg, refresh=flag("refresh"))
    return jsonify({"app": appcfg.name, **listed.to_api()})


@bp.get("/envs")
def list_envs():  # type: ignore[no-untyped-def]
    store = services().store
    app, status = request.args.get("app"), request.args.get("status")
    if status is not None and status not in ENV_STATUSES:
        abort(400, f"status must be one of {', '.join(ENV_STATUSES)}")
    envs = [e for e in store.envs() if (app is None or e.app == app) and (status is None or e.status == status)]
    access = store.access()
    return jsonify([env_json(store, e, access.get(e.host)) for e in sorted(envs, key=lambda e: (e.app, e.branch))])


@bp.get("/envs/<host>")
def get_env(host: str):  # type: ignore[no-untyped-def]
    store = services().store
    env = env_at(store, host)
    return jsonify(env_json(store, env, store.access_of(env.host)))


@bp.get("/envs/<host>/jobs")
def env_jobs(host: str):  # type: ignore[no-untyped-def]
    store = services().store
    env = env_at(store, host)
    return jsonify([j.to_api() for j in store.jobs(limit=limit(20), host=env.host)])


@bp.get("/envs/<host>/access")
def env_access(host: str):  # type: ignore[no-untyped-def]
    store = services().store
    env = env_at(store, host)
    return jsonify(access_json(env, store.access_of(env.host)))


@bp.get("/access")
def list_access():  # type: ignore[no-untyped-def]
    store = services().store
    app = request.args.get("app")
    access = store.access()
    return jsonify([access_json(e, access.get(e.host)) for e in store.envs() if app is None or e.app == app])


@bp.get("/jobs")
def list_jobs():  # type: ignore[no-untyped-def]
    store = services().store
    app, branch, status = request.args.get("app"), request.args.get("branch"), request.args.get("status")
    if status is not None and status not in JOB_STATUSES:
        abort(400, f"status must be one of {', '.join(JOB_STATUSES)}")
    wanted = limit(50)
    filtered = app is not None or branch is not None or status is not None
    jobs = store.jobs(limit=JOBS_KEPT if filtered else wanted)
    jobs = [j for j in jobs if (app is None or j.app == app) and (branch is None or j.branch == branch)
            and (status is None or j.status == status)]
    return jsonify([j.to_api() for j in jobs[:wanted]])


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):  # type: ignore[no-untyped-def]
    job = services().store.job(job_id)
    if job is None:
        abort(404, f"no job {job_id!r}")
    return jsonify(job.to_api())


@bp.get("/jobs/<job_id>/log")
def job_log(job_id: str) -> Response:
    store = services().store
    if store.job(job_id) is None:
        abort(404, f"no job {job_id!r}")
    if not flag("follow"):
        return Response(store.log_text(job_id), mimetype="text/plain")

    def lines():  # type: ignore[no-untyped-def]
        for entry_id, fields in store.follow_log(job_id):
            yield fields.get("t", "") + "\n" if entry_id else ""
    return Response(stream_with_context(lines()), mimetype="text/plain",
                    headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})


# --- shapes and arguments, shared with api_actions and the pages -----------------------------
def flag(name: str) -> bool:
    return request.args.get(name, "").lower() in TRUE


def limit(default: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        abort(400, "limit must be a whole number from 1 to 500")
    return int(raw)


def app_json(app: AppConfig) -> dict[str, Any]:
    return {"name": app.name, "domain": app.domain, "repo": app.repo, "parameters": [
        {"name": p.name, "env": p.env, "required": p.required, "default": p.default, "options": list(p.options),
         "rule": p.rule, "description": p.description} for p in app.parameters.values()]}


def env_json(store: Store, env: Env, access: tuple[int, float | None] | None) -> dict[str, Any]:
    latest = store.job(env.job_id) if env.job_id else None
    count, last = access or (0, None)
    return {**env.to_api(), "requests": count, "last_request_at": iso(last),
            "last_job": None if latest is None else {"id": latest.id, "action": latest.action,
                                                     "status": latest.status, "log_url": latest.log_url}}


def access_json(env: Env, access: tuple[int, float | None] | None) -> dict[str, Any]:
    count, last = access or (0, None)
    return {"app": env.app, "branch": env.branch, "host": env.host, "requests": count,
            "last_request_at": iso(last)}

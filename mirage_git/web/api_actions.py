"""API writes: launch, redeploy and terminate envs, and purge idle ones.

Each answers 202 with the job it enqueued (the same shape as `GET /api/jobs/<id>`) and a
`Location` header pointing at it; the job's log shows how it goes. Request bodies are
JSON objects; an empty body counts as `{}` where every field is optional.
"""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify, request, url_for

from .. import actions, purge
from ..models import Job
from .api import bp
from .context import services


@bp.post("/envs")
def launch():  # type: ignore[no-untyped-def]
    body = json_body()
    params = body.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        abort(400, "params must be an object of strings")
    svc = services()
    job = actions.launch(svc.config, svc.store, svc.queue, text(body, "app", required=True),
                         text(body, "branch", required=True), params, commit=text(body, "commit"), source="api")
    return accepted(job)


@bp.post("/envs/<host>/redeploy")
def redeploy(host: str):  # type: ignore[no-untyped-def]
    body = json_body()
    svc = services()
    return accepted(actions.redeploy(svc.config, svc.store, svc.queue, host, commit=text(body, "commit"),
                                     source="api"))


@bp.delete("/envs/<host>")
def terminate(host: str):  # type: ignore[no-untyped-def]
    svc = services()
    return accepted(actions.terminate(svc.config, svc.store, svc.queue, host, source="api"))


@bp.post("/purge")
def purge_idle():  # type: ignore[no-untyped-def]
    body = json_body()
    older_than = body.get("older_than")
    if older_than is None:
        abort(400, "older_than is required (seconds, or text like 2h, 30m, 7d)")
    if isinstance(older_than, bool) or not isinstance(older_than, str | int | float):
        abort(400, "older_than must be a number of seconds or text like 2h")
    exclude = body.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(b, str) for b in exclude):
        abort(400, "exclude must be a list of branch names")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        abort(400, "dry_run must be true or false")
    svc = services()
    chosen = purge.purge(svc.config, svc.store, svc.queue, older_than, app=text(body, "app"), exclude=exclude,
                         exclude_regex=text(body, "exclude_regex"), dry_run=dry_run, source="api")
    return jsonify(dry_run=dry_run, envs=[c.to_api() for c in chosen])


def json_body() -> dict[str, Any]:
    """The request's JSON object; `{}` for an empty body."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    if not request.is_json:
        abort(415, "send a JSON body with Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # `[[[[...`: json raises this, not ValueError, so `silent` does not catch it
        abort(400, "the body is nested too deeply")
    if not isinstance(body, dict):
        abort(400, "the body must be a JSON object")
    return body


def text(body: dict[str, Any], key: str, required: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        if required:
            abort(400, f"{key} is required")
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > 1000:
        abort(400, f"{key} must be a string")
    return value


def accepted(job: Job):  # type: ignore[no-untyped-def]
    resp = jsonify(job.to_api())
    resp.status_code = 202
    resp.headers["Location"] = url_for("api.get_job", job_id=job.id)
    return resp

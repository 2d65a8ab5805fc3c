"""The API's contract as an OpenAPI 3 document, served at /api/openapi.json.

Written by hand next to the handlers it describes, and checked against them by the
schemathesis fuzz test (tests/test_api_fuzz.py): a field added to a response without
being added here, or a status code nobody documented, fails that test.
"""

from __future__ import annotations

from typing import Any

from ..models import ENV_STATUSES, JOB_STATUSES

VERSION = "1.0.0"


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **extra}


_TIME = _nullable("string", format="date-time")
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    why = {400: "The request is malformed.", 401: "Missing or wrong bearer token.",
           403: "A browser request without its CSRF token.", 404: "No such app, env or job.",
           409: "The env is busy with a conflicting job.", 413: "The body is too large.",
           415: "The body is not JSON.", 422: "The request is well-formed but refused; `fields` says why.",
           503: "Redis is not reachable."}
    return {str(c): _json(_ref("Error"), why[c]) for c in sorted({400, 401, 503, *codes})}


def _host_param() -> dict[str, Any]:
    return {"name": "host", "in": "path", "required": True, "description": "The env's host, e.g. "
            "`feature-login.app.dev.localhost` (hosts are unique across apps).",
            "schema": {"type": "string", "pattern": r"^[^/]+$"}}


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_LIMIT = _query("limit", "How many, newest first.", type="integer", minimum=1, maximum=500)

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string", "description": "One sentence saying what is wrong and, where possible, the fix."},
        "fields": {**_STRINGS, "description": "The problem with each request field (`params.NAME` for "
                   "parameters), for showing next to a form field."}}},
    "Step": {"type": "object", "required": ["name", "status"], "properties": {
        "name": {"type": "string", "description": "fetch, build, run, health, route, cleanup, ..."},
        "started_at": {"type": "number", "description": "Epoch seconds."},
        "ended_at": _nullable("number"), "status": {"type": "string", "enum": ["running", "ok", "failed"]}}},
    "Job": {"type": "object", "required": ["id", "app", "branch", "action", "status", "env_url", "host"],
            "properties": {
                "id": {"type": "string"}, "app": {"type": "string"}, "branch": {"type": "string"},
                "commit": _nullable("string"), "action": {"type": "string", "enum": ["deploy", "teardown"]},
                "status": {"type": "string", "enum": list(JOB_STATUSES)},
                "created_at": _TIME, "started_at": _TIME, "ended_at": _TIME,
                "duration": _nullable("number", description="Seconds, so far while it runs."),
                "env_url": {"type": "string"}, "host": {"type": "string"}, "error": _nullable("string"),
                "source": {"type": "string", "description": "github, gitlab, gitea, push, api, ui or cli."},
                "pusher": _nullable("string"), "subject": _nullable("string"), "params": _STRINGS,
                "steps": {"type": "array", "items": _ref("Step")}, "log_url": {"type": "string"}}},
    "Env": {"type": "object", "required": ["app", "branch", "slug", "host", "url", "status"], "properties": {
        "app": {"type": "string"}, "branch": {"type": "string"}, "slug": {"type": "string"},
        "host": {"type": "string"}, "url": {"type": "string"}, "commit": _nullable("string"),
        "status": {"type": "string", "enum": list(ENV_STATUSES)}, "deployed_at": _TIME,
        "job_id": _nullable("string"), "live_job_id": _nullable("string"), "pusher": _nullable("string"),
        "subject": _nullable("string"), "params": _STRINGS, "created_at": _TIME,
        "requests": {"type": "integer", "description": "Requests the proxy has served for this env."},
        "last_request_at": _TIME,
        "last_job": {"type": "object", "nullable": True, "properties": {
            "id": {"type": "string"}, "action": {"type": "string"}, "status": {"type": "string"},
            "log_url": {"type": "string"}}}}},
    "Access": {"type": "object", "required": ["app", "branch", "host", "requests"], "properties": {
        "app": {"type": "string"}, "branch": {"type": "string"}, "host": {"type": "string"},
        "requests": {"type": "integer"}, "last_request_at": _TIME}},
    "Parameter": {"type": "object", "required": ["name", "env", "required"], "properties": {
        "name": {"type": "string"}, "env": {"type": "string", "description": "The container's env var."},
        "required": {"type": "boolean"}, "default": _nullable("string"),
        "options": {"type": "array", "items": {"type": "string"}}, "rule": _nullable("string"),
        "description": {"type": "string"}}},
    "App": {"type": "object", "required": ["name", "domain", "parameters"], "properties": {
        "name": {"type": "string"}, "domain": {"type": "string"}, "repo": _nullable("string"),
        "parameters": {"type": "array", "items": _ref("Parameter")}}},
    "Branches": {"type": "object", "required": ["app", "origin", "branches"], "properties": {
        "app": {"type": "string"}, "origin": {"type": "string"}, "error": _nullable("string"),
        "branches": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "commit": {"type": "string"},
            "origin": {"type": "string", "description": "`repo`, or the push repository."}}}}}},
    "Launch": {"type": "object", "required": ["app", "branch"], "properties": {
        "app": {"type": "string"}, "branch": {"type": "string", "description": "Must exist in the app's repo."},
        "commit": {"type": "string", "description": "Build this commit instead of the branch tip."},
        "params": {**_STRINGS, "description": "Launch parameters by name; see GET /api/apps."}}},
    "Redeploy": {"type": "object", "properties": {
        "commit": {"type": "string", "description": "Build this commit instead of the branch tip."}}},
    "Purge": {"type": "object", "required": ["older_than"], "properties": {
        "older_than": {"oneOf": [{"type": "number"}, {"type": "string"}],
                       "description": "Idle longer than this: seconds, or text like `30m`, `2h`, `7d`."},
        "app": {"type": "string", "description": "Only this app's envs."},
        "exclude": {"type": "array", "items": {"type": "string"}, "description": "Branches to keep."},
        "exclude_regex": {"type": "string", "description": "Keep branches this regex finds."},
        "dry_run": {"type": "boolean", "description": "Only list what would be terminated."}}},
    "Purged": {"type": "object", "required": ["dry_run", "envs"], "properties": {
        "dry_run": {"type": "boolean"}, "envs": {"type": "array", "items": {"type": "object", "properties": {
            "app": {"type": "string"}, "branch": {"type": "string"}, "host": {"type": "string"},
            "url": {"type": "string"}, "idle_seconds": {"type": "integer"}, "last_request_at": _TIME,
            "deployed_at": _TIME, "job_id": _nullable("string")}}}}},
}


def _op(summary: str, ok: dict[str, Any], *errors: int, params: list[dict[str, Any]] | None = None,
        body: str | None = None, body_required: bool = False, tag: str = "envs") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "parameters": params or [],
                          "responses": {**ok, **_errors(*errors)}}
    if body:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _accepted(what: str) -> dict[str, Any]:
    ok = _json(_ref("Job"), f"{what} is queued; follow the job. `Location` points at it.")
    ok["headers"] = {"Location": {"schema": {"type": "string"}, "description": "The job's API URL."}}
    return {"202": ok}


def _list(name: str, what: str) -> dict[str, Any]:
    return {"200": _json({"type": "array", "items": _ref(name)}, what)}


def document(server: str) -> dict[str, Any]:
    """The OpenAPI document, with `server` (the address it was asked at) as its server."""
    host = _host_param()
    app = {"name": "app", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^[^/]+$"}}
    job = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^[^/]+$"}}
    paths = {
        "/api/apps": {"get": _op("List the configured apps and their launch parameters",
                                 _list("App", "Every app in the config."), tag="apps")},
        "/api/apps/{app}/branches": {"get": _op(
            "List the branches of an app's repository (cached for 30 s)",
            {"200": _json(_ref("Branches"), "The branches; `error` says why the list is empty.")}, 404,
            params=[app, _query("refresh", "Ask git again instead of the cache.", type="boolean")], tag="apps")},
        "/api/envs": {
            "get": _op("List envs", _list("Env", "Envs, by app and branch."), 400, params=[
                _query("app", "Only this app's envs."),
                _query("status", "Only envs with this status.", type="string", enum=list(ENV_STATUSES))]),
            "post": _op("Launch a branch with parameters, without a push", _accepted("The deploy"), 400, 404,
                        413, 415, 422, body="Launch", body_required=True)},
        "/api/envs/{host}": {
            "get": _op("Get one env", {"200": _json(_ref("Env"), "The env.")}, 404, params=[host]),
            "delete": _op("Terminate an env: route, containers, images and records",
                          _accepted("The teardown"), 404, 409, params=[host])},
        "/api/envs/{host}/redeploy": {"post": _op(
            "Build the env's branch again with the same parameters", _accepted("The deploy"), 400, 404, 409, 413,
            415, 422, params=[host], body="Redeploy")},
        "/api/envs/{host}/jobs": {"get": _op("An env's job history, newest first",
                                             _list("Job", "The env's jobs."), 400, 404, params=[host, _LIMIT])},
        "/api/envs/{host}/access": {"get": _op(
            "Requests the proxy served for an env", {"200": _json(_ref("Access"), "Its counters.")}, 404,
            params=[host], tag="access")},
        "/api/access": {"get": _op("Request counts of every env", _list("Access", "Counters per env."),
                                   params=[_query("app", "Only this app's envs.")], tag="access")},
        "/api/purge": {"post": _op(
            "Terminate envs idle for longer than a duration (mirage-ecs's purge)",
            {"200": _json(_ref("Purged"), "What was (or, with dry_run, would be) terminated.")}, 400, 413, 415,
            422, body="Purge", body_required=True, tag="access")},
        "/api/jobs": {"get": _op("List jobs, newest first", _list("Job", "Jobs."), 400, params=[
            _query("app", "Only this app's jobs."), _query("branch", "Only this branch's jobs."),
            _query("status", "Only jobs with this status.", type="string", enum=list(JOB_STATUSES)), _LIMIT],
            tag="jobs")},
        "/api/jobs/{job_id}": {"get": _op("Get a job", {"200": _json(_ref("Job"), "The job.")}, 404, params=[job],
                                          tag="jobs")},
        "/api/jobs/{job_id}/log": {"get": _op(
            "A job's log as plain text",
            {"200": {"description": "The log so far; with follow, streamed until the job ends.",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}}, 404,
            params=[job, _query("follow", "Keep the response open and stream lines until the job ends.",
                                type="boolean")], tag="jobs")},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "mirage-git", "version": VERSION, "description": (
            "Preview environments per branch. Every endpoint needs `Authorization: Bearer <token>` when the "
            "service has `[auth] token` configured; errors are JSON `{\"error\": \"...\"}`.")},
        "servers": [{"url": server}],
        "security": [{"bearer": []}],
        "tags": [{"name": t} for t in ("envs", "jobs", "apps", "access")],
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }

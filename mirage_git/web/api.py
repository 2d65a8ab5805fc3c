"""The REST API under /api/: envs, jobs and job logs, as JSON (logs as plain text)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, request, stream_with_context

from .context import services

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/envs")
def list_envs():  # type: ignore[no-untyped-def]
    return jsonify([env.to_api() for env in services().store.envs()])


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
    if request.args.get("follow") not in ("1", "true", "yes"):
        return Response(store.log_text(job_id), mimetype="text/plain")

    def lines():  # type: ignore[no-untyped-def]
        for entry_id, fields in store.follow_log(job_id):
            if entry_id:
                yield fields.get("t", "") + "\n"
    return Response(stream_with_context(lines()), mimetype="text/plain",
                    headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})


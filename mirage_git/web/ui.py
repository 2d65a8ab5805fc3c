"""Pages for people: the env list and the job log page that tails a build live."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from flask import Blueprint, Response, abort, render_template, request, stream_with_context

from ..models import iso
from ..store import LogEntry
from .context import services

bp = Blueprint("ui", __name__)


@bp.get("/")
def index() -> str:
    store = services().store
    envs = sorted(store.envs(), key=lambda e: (e.app, e.branch))
    return render_template("index.html", envs=envs, jobs=store.jobs(limit=20), iso=iso)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    job = services().store.job(job_id)
    if job is None:
        abort(404, f"no job {job_id!r}")
    return render_template("job.html", job=job, iso=iso)


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    """The job's log as server-sent events, resuming after `Last-Event-ID` on reconnect."""
    store = services().store
    if store.job(job_id) is None:
        abort(404, f"no job {job_id!r}")
    after = request.headers.get("Last-Event-ID") or request.args.get("after") or "0-0"
    if not _valid_entry_id(after):
        abort(400, "Last-Event-ID must be a log entry id like 1700000000000-0")
    stream = stream_with_context(_sse(store.follow_log(job_id, after), store, job_id))
    return Response(stream, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(entries: Iterable[LogEntry], store, job_id: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield "retry: 1000\n\n"
    for entry_id, fields in entries:
        if not entry_id:
            yield ": keep-alive\n\n"
            continue
        data = {k: fields[k] for k in ("t", "ts", "step", "end") if k in fields}
        yield f"id: {entry_id}\nevent: line\ndata: {json.dumps(data)}\n\n"
    job = store.job(job_id)
    yield f"event: end\ndata: {json.dumps(job.to_api() if job else {})}\n\n"


def _valid_entry_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())

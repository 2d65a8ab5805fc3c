"""Pages for people: the dashboard, an env's page with its job history, and the job log page.

The dashboard's live part is one fragment (`/fragments/dashboard`) that the page polls with
`If-None-Match`; it is the same template the page was first rendered with, so there is one
way to draw a row. Buttons are plain forms, so every action works without JavaScript.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from .. import actions
from ..models import Env, Job, iso
from ..store import LogEntry, Store
from .context import services

bp = Blueprint("ui", __name__)
HISTORY_DOTS = 8
RECENT_JOBS = 15


@bp.app_context_processor
def helpers() -> dict[str, object]:
    return {"iso": iso, "ago": ago, "seconds": seconds}


def ago(ts: float | None) -> str:
    """How long ago, the way a person says it: `just now`, `5 min ago`, `3 h ago`, `2 days ago`."""
    if ts is None:
        return ""
    delta = max(0.0, time.time() - ts)
    if delta < 45:
        return "just now"
    if delta < 3600:
        return f"{round(delta / 60)} min ago"
    if delta < 86400:
        return f"{round(delta / 3600)} h ago"
    days = round(delta / 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {int(value % 60):02d} s"


@dataclass
class Row:
    env: Env
    latest: Job | None
    jobs: list[Job]

    @property
    def status(self) -> str:
        if self.latest is not None and self.latest.action == "teardown" and not self.latest.done:
            return "terminating"
        return self.env.status


def _rows(store: Store) -> list[Row]:
    rows = []
    for env in sorted(store.envs(), key=lambda e: (e.app, e.branch.lower())):
        jobs = store.jobs(limit=HISTORY_DOTS, host=env.host)
        latest = next((j for j in jobs if j.id == env.job_id), None)
        rows.append(Row(env, latest, jobs))
    return rows


def _dashboard_context() -> dict[str, object]:
    svc = services()
    return {"rows": _rows(svc.store), "jobs": svc.store.jobs(limit=RECENT_JOBS), "multi_app": len(svc.config.apps) > 1}


@bp.get("/")
def index() -> str:
    return render_template("index.html", **_dashboard_context())


@bp.get("/fragments/dashboard")
def dashboard_fragment() -> Response:
    """The live part of the dashboard; 304 when nothing changed since the page's last poll."""
    html = render_template("_dashboard.html", **_dashboard_context())
    resp = Response(html, mimetype="text/html")
    resp.set_etag(hashlib.sha256(html.encode()).hexdigest()[:32])
    resp.headers["Cache-Control"] = "no-cache"
    return resp.make_conditional(request)


@bp.get("/envs/<host>")
def env_page(host: str) -> str:
    store = services().store
    env = store.env(host.lower())
    if env is None:
        abort(404, f"no env at {host!r}; it may have been terminated")
    jobs = store.jobs(limit=30, host=env.host)
    row = Row(env, next((j for j in jobs if j.id == env.job_id), None), jobs)
    requests, last = store.access_of(env.host)
    return render_template("env.html", env=env, status=row.status, latest=row.latest, jobs=jobs,
                           requests=requests, last_request=last)


@bp.post("/envs/<host>/redeploy")
def redeploy(host: str):  # type: ignore[no-untyped-def]
    svc = services()
    try:
        job = actions.redeploy(svc.config, svc.store, svc.queue, host, source="ui")
    except actions.Refused as exc:
        flash(str(exc), "error")
        return redirect(url_for("ui.index"))
    return redirect(url_for("ui.job_page", job_id=job.id))


@bp.post("/envs/<host>/terminate")
def terminate(host: str):  # type: ignore[no-untyped-def]
    svc = services()
    try:
        job = actions.terminate(svc.config, svc.store, svc.queue, host, source="ui")
    except actions.Refused as exc:
        flash(str(exc), "error")
    else:
        flash(f"Terminating {job.app}/{job.branch}; it disappears from this list when its job ends.", "info")
    return redirect(url_for("ui.index"))


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    job = services().store.job(job_id)
    if job is None:
        abort(404, f"no job {job_id!r}")
    return render_template("job.html", job=job)


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    """The job's log as server-sent events, resuming after `Last-Event-ID` on reconnect.

    Entries go out in batches (one event per Redis read, up to 1000 lines), each event's
    id being the last entry it carries, so a 100,000-line log is 100 events, not 100,000.
    """
    store = services().store
    if store.job(job_id) is None:
        abort(404, f"no job {job_id!r}")
    after = request.headers.get("Last-Event-ID") or request.args.get("after") or "0-0"
    if not _valid_entry_id(after):
        abort(400, "Last-Event-ID must be a log entry id like 1700000000000-0")
    limit = services().config.web.stream_max
    stream = stream_with_context(_sse(store.follow_log_batches(job_id, after), store, job_id, limit))
    return Response(stream, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(batches: Iterable[list[LogEntry]], store: Store, job_id: str, limit: float) -> Iterator[str]:
    """Events until the job ends, or until `limit` seconds passed: then the browser reconnects
    and resumes, which frees the server's thread now and then and proves resuming works."""
    deadline = time.monotonic() + limit
    yield "retry: 1000\n\n"
    for batch in batches:
        if batch:
            lines = [{k: fields[k] for k in ("t", "ts", "step", "end") if k in fields} for _, fields in batch]
            yield f"id: {batch[-1][0]}\nevent: lines\ndata: {json.dumps(lines, separators=(',', ':'))}\n\n"
        else:
            yield ": keep-alive\n\n"
        if time.monotonic() > deadline:
            return  # not the end: the browser reconnects after `retry` and resumes after the last id
    job = store.job(job_id)
    yield f"event: end\ndata: {json.dumps(job.to_api() if job else {})}\n\n"


def _valid_entry_id(value: str) -> bool:
    """A Redis stream entry id, `<ms>-<seq>` or `<ms>`: ASCII digits, each part below 2**64.

    Anything else would make Redis refuse the read after the stream's 200 was already sent.
    """
    ms, dash, seq = value.partition("-")
    parts = [ms, seq] if dash else [ms]
    return all(p.isascii() and p.isdigit() and int(p) < 2**64 for p in parts)

"""The launcher (mirage parity): deploy any branch of an app without a push, with parameters.

One form per app (`/launch?app=NAME`): a branch picked from the app's repository (listed
by `branches`, cached briefly) and the app's `[apps.NAME.parameters.*]` as fields. The
server checks everything with the same `actions.launch` the API uses, and a refused form
comes back with each problem next to its field.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from .. import actions, branches
from .context import services

bp = Blueprint("launcher", __name__)
PARAM_PREFIX = "param."


@bp.route("/launch", methods=["GET", "POST"])
def form():  # type: ignore[no-untyped-def]
    svc = services()
    names = list(svc.config.apps)
    chosen = request.values.get("app") or names[0]
    if chosen not in svc.config.apps:
        chosen = names[0]
    app = svc.config.apps[chosen]
    values = {k.removeprefix(PARAM_PREFIX): v for k, v in request.form.items() if k.startswith(PARAM_PREFIX)}
    branch = request.values.get("branch", "").strip()
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        try:
            job = actions.launch(svc.config, svc.store, svc.queue, app.name, branch, values, source="ui")
        except actions.Refused as exc:
            errors = exc.fields or {"form": str(exc)}
            status = exc.status
        else:
            return redirect(url_for("ui.job_page", job_id=job.id))
    listed = branches.of(svc.config, app, refresh=request.args.get("refresh") == "1")
    return render_template("launch.html", apps=svc.config.apps, app=app, branch=branch, branches=listed,
                           values=values, errors=errors, prefix=PARAM_PREFIX), status

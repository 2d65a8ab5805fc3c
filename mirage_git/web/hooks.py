"""Forge webhooks: `POST /hooks/github`, `/hooks/gitlab`, `/hooks/gitea` (Forgejo too).

The order of checks decides what an outsider can learn or cause: the body is parsed only
to find which app it claims to be for, and nothing is enqueued until that app's secret
verifies the raw bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, jsonify, request

from .. import events, queue, repos
from ..config import AppConfig
from .context import services

bp = Blueprint("hooks", __name__, url_prefix="/hooks")


@bp.post("/<forge>")
def receive(forge: str):  # type: ignore[no-untyped-def]
    svc = services()
    body = request.get_data(cache=False)
    headers = dict(request.headers)
    try:
        delivery = events.read(forge, headers, body)
    except events.WebhookError as exc:
        return jsonify(error=str(exc)), exc.status
    apps = _apps_for(svc.config.apps.values(), delivery.repo_ids)
    if not apps:
        named = ", ".join(sorted(delivery.repo_ids)) or "no repository"
        return jsonify(error=f"no app is configured for this repository ({named})"), 404
    verified = [a for a in apps if events.verify(forge, headers, body, a.webhook_secret)]
    if not verified:
        return jsonify(error=_why_unverified(forge, apps)), 401
    if delivery.kind == "ping":
        return jsonify(ok=True, apps=[a.name for a in verified]), 200
    if delivery.kind == "ignored":
        return jsonify(ignored=delivery.reason), 202
    jobs = []
    for app in verified:
        for push in delivery.pushes:
            if push.deleted:
                job = queue.teardown(svc.config, svc.store, svc.queue, app, push.branch, source=forge,
                                     pusher=push.pusher)
            else:
                job = queue.deploy(svc.config, svc.store, svc.queue, app, push.branch, push.commit, source=forge,
                                   pusher=push.pusher, subject=push.subject)
            jobs.append({"id": job.id, "app": job.app, "branch": job.branch, "action": job.action,
                         "log_url": job.log_url, "env_url": job.env_url})
    return jsonify(jobs=jobs), 202


def _apps_for(apps: Iterable[AppConfig], ids: frozenset[str]) -> list[AppConfig]:
    return [a for a in apps if any(repos.matches(i, a.repo_ids) for i in ids)]


def _why_unverified(forge: str, apps: list[AppConfig]) -> str:
    if all(not a.webhook_secret for a in apps):
        return f"app {apps[0].name!r} has no webhook_secret configured, so no delivery can be trusted"
    if forge == "gitlab":
        return "X-Gitlab-Token is missing or wrong"
    header = "X-Hub-Signature-256" if forge == "github" else "X-Gitea-Signature (or X-Forgejo-Signature)"
    return f"{header} is missing or does not match the app's webhook_secret"

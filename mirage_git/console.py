"""What the CLI prints: env tables, job logs, and the outcome of a deploy or teardown."""

from __future__ import annotations

import json

import click

from . import actions, queue
from .config import Config
from .errors import UserError
from .models import iso
from .store import Store


def envs(store: Store, as_json: bool) -> None:
    items = sorted(store.envs(), key=lambda e: (e.app, e.branch))
    if as_json:
        click.echo(json.dumps([e.to_api() for e in items], indent=2))
        return
    if not items:
        click.echo("no environments yet: push a branch, or run `mirage-git deploy APP BRANCH`")
        return
    rows = [("APP", "BRANCH", "STATUS", "COMMIT", "DEPLOYED", "URL")]
    rows += [(e.app, e.branch, e.status, (e.commit or "")[:12], iso(e.deployed_at) or "-", e.url) for e in items]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])


def logs(store: Store, job_id: str, follow: bool) -> int:
    """Print a job's log; with `follow`, until it ends. Exit status: 0 unless the job failed."""
    job = store.job(job_id)
    if job is None:
        raise UserError(f"no job {job_id!r}; `mirage-git envs` shows each env's last job")
    if not follow:
        click.echo(store.log_text(job_id), nl=False)
        return 1 if job.status == "failed" else 0
    for entry_id, fields in store.follow_log(job_id):
        if entry_id:
            click.echo(fields.get("t", ""))
    final = store.job(job_id)
    return 1 if final is None or final.status == "failed" else 0


def deploy(cfg: Config, store: Store, app_name: str, branch: str, commit: str | None, raw_params: tuple[str, ...],
           follow: bool) -> int:
    params = {}
    for item in raw_params:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        params[name] = value
    try:
        job = actions.launch(cfg, store, queue.rq_queue(cfg), app_name, branch, params, commit=commit, source="cli")
    except actions.Refused:
        raise  # a UserError already: the CLI prints it as one line
    return _report(cfg, store, job.id, job.env_url, follow)


def destroy(cfg: Config, store: Store, app_name: str, branch: str, follow: bool) -> int:
    app = _app(cfg, app_name)
    if store.slug_of(app.name, branch) is None:
        raise UserError(f"{app.name} has no env for branch {branch!r}; `mirage-git envs` lists them")
    job = queue.teardown(cfg, store, queue.rq_queue(cfg), app, branch, source="cli")
    return _report(cfg, store, job.id, job.env_url, follow)


def _app(cfg: Config, name: str):  # type: ignore[no-untyped-def]
    try:
        return cfg.app(name)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None


def _report(cfg: Config, store: Store, job_id: str, env_url: str, follow: bool) -> int:
    click.echo(f"job {job_id}: {env_url}", err=True)
    if not queue.workers_alive(cfg):
        click.echo("mirage-git: no worker is running, so the job waits in the queue until one starts "
                   "(`mirage-git up`, or `mirage-git worker`)", err=True)
    if not follow:
        click.echo(job_id)
        return 0
    return logs(store, job_id, follow=True)


def purge(cfg: Config, store: Store, older_than: str, app: str | None, exclude: tuple[str, ...],
          exclude_regex: str | None, dry_run: bool, as_json: bool) -> None:
    from . import purge as purge_mod

    chosen = purge_mod.purge(cfg, store, queue.rq_queue(cfg), older_than, app=app, exclude=exclude,
                             exclude_regex=exclude_regex, dry_run=dry_run, source="cli")
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "envs": [c.to_api() for c in chosen]}, indent=2))
        return
    if not chosen:
        click.echo("nothing to purge: every env was used or deployed recently")
        return
    verb = "would terminate" if dry_run else "terminating"
    for c in chosen:
        last = iso(c.last_request_at) or "never requested"
        job = f"  job {c.job_id}" if c.job_id else ""
        click.echo(f"{verb} {c.env.app}/{c.env.branch}  idle {_human(c.idle_seconds)}  (last request: {last}){job}")


def branches(cfg: Config, app_name: str) -> int:
    from . import branches as branches_mod

    listed = branches_mod.of(cfg, _app(cfg, app_name))
    if listed.error:
        click.echo(f"mirage-git: {listed.error}", err=True)
        return 1
    for b in listed.branches:
        click.echo(f"{b.commit[:12]}  {b.name}")
    return 0


def _human(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"

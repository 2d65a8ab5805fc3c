"""What a person or a client can ask for by hand: launch a branch, redeploy an env, terminate one.

The launcher form, the REST API and the CLI all call these, so they accept and refuse the
same things and say so in the same words. Each checks everything first and raises one
`Refused` that carries a status code and, for a form, the problem of each field; only then
does it enqueue through `queue`, which owns the records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import rq

from . import branches, naming, queue
from . import params as params_mod
from .config import AppConfig, Config
from .errors import UserError
from .models import Env, Job
from .store import Store

_COMMIT = re.compile(r"^[0-9a-fA-F]{4,64}$")


class Refused(UserError):
    """A request that cannot be carried out; `fields` maps a form field to its problem."""

    def __init__(self, message: str, status: int = 400, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.fields = dict(fields or {})


def app_named(config: Config, name: str) -> AppConfig:
    if name not in config.apps:
        raise Refused(f"no app named {name!r}; configured apps: {', '.join(config.apps)}", 404, {"app": "unknown app"})
    return config.apps[name]


def env_at(store: Store, host: str) -> Env:
    env = store.env(host.lower())
    if env is None:
        raise Refused(f"no env at {host!r}", 404)
    return env


def launch(config: Config, store: Store, rq_queue: rq.Queue, app_name: str, branch: str,
           given: Mapping[str, str] | None = None, *, commit: str | None = None, source: str = "api",
           pusher: str | None = None, check_branch: bool = True) -> Job:
    """Deploy `branch` of `app_name` with launch parameters, as if it had been pushed.

    With `check_branch`, a branch that the repository does not have is refused up front
    (when the repository can be listed at all), rather than failing later in the worker.
    """
    fields: dict[str, str] = {}
    origin: str | None = None
    app = config.apps.get(app_name)
    if app is None:
        fields["app"] = f"no app named {app_name!r} (configured: {', '.join(config.apps)})" if app_name \
            else "is required"
    if not branch:
        fields["branch"] = "is required"
    elif not naming.is_valid_branch(branch):
        fields["branch"] = "is not a valid git branch name"
    elif app is not None and check_branch:
        listed = branches.of(config, app)
        if not listed.error and not listed.has(branch):
            listed = branches.of(config, app, refresh=True)
        if not listed.error and not listed.has(branch) and commit is None:
            fields["branch"] = f"no such branch in {' or '.join(branches.origins(config, app))}"
        origin = listed.origin_of(branch)
    if commit is not None and not _COMMIT.fullmatch(commit):
        fields["commit"] = "must be a commit id (4 to 64 hex digits)"
    given = dict(given or {})
    if app is not None:
        fields.update({f"params.{k}": v for k, v in params_mod.problems(app.parameters, given).items()})
    if fields:
        raise Refused(_summary(fields), 422, fields)
    assert app is not None
    return queue.deploy(config, store, rq_queue, app, branch, commit, source=source, pusher=pusher,
                        params=params_mod.resolve(app.parameters, given), repo=_unless_default(app, origin))


def redeploy(config: Config, store: Store, rq_queue: rq.Queue, host: str, *, commit: str | None = None,
             source: str = "api", pusher: str | None = None) -> Job:
    """Build the env's branch again (its tip, or `commit`) with the parameters it runs with now."""
    env = env_at(store, host)
    app = app_named(config, env.app)
    if commit is not None and not _COMMIT.fullmatch(commit):
        raise Refused("commit must be a commit id (4 to 64 hex digits)", 422, {"commit": "is not a commit id"})
    if _tearing_down(store, env):
        raise Refused(f"{env.host} is being terminated; launch it again once that job ends", 409)
    given = {k: v for k, v in env.params.items() if k in app.parameters}
    problems = params_mod.problems(app.parameters, given)
    if problems:  # the config changed since the env was launched
        raise Refused("its parameters no longer fit the app's config: " + _summary(problems), 409)
    # Build from where the env's code came from: a pushed branch from the push repository.
    last = store.job(env.live_job_id or env.job_id or "")
    return queue.deploy(config, store, rq_queue, app, env.branch, commit, source=source, pusher=pusher,
                        params=params_mod.resolve(app.parameters, given), repo=last.repo if last else None)


def _unless_default(app: AppConfig, origin: str | None) -> str | None:
    """The repository a job must fetch from, or None for the app's own `repo`."""
    return None if origin is None or origin == app.repo else origin


def terminate(config: Config, store: Store, rq_queue: rq.Queue, host: str, *, source: str = "api",
              pusher: str | None = None) -> Job:
    """Tear the env down: route, containers, images and records. Asking twice returns the same job."""
    env = env_at(store, host)
    running = _tearing_down(store, env)
    if running is not None:
        return running
    return queue.teardown(config, store, rq_queue, app_named(config, env.app), env.branch, source=source,
                          pusher=pusher)


def _tearing_down(store: Store, env: Env) -> Job | None:
    latest = store.job(env.job_id) if env.job_id else None
    if latest is not None and latest.action == "teardown" and not latest.done:
        return latest
    return None


def _summary(fields: Mapping[str, str]) -> str:
    return "; ".join(f"{name}: {problem}" for name, problem in fields.items())

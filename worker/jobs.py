"""The RQ entry points: `deploy` and `teardown`. Orchestration only.

Each function is a plain RQ job. Its record (host, source, parameters) was written by
`mirage_git.queue` when it was enqueued; the RQ job id is the mirage job id. Whatever
fails, the version that was live before stays live: the route moves only after the new
container answers, and only while this job is still the newest for its env.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import docker
import rq
from rq.timeouts import JobTimeoutException

from mirage_git import config as config_mod
from mirage_git import naming
from mirage_git.config import AppConfig, Config
from mirage_git.errors import Unavailable
from mirage_git.models import Job, Route
from mirage_git.push import barerepos
from mirage_git.store import Store

from . import docker_runtime as runtime
from . import source
from .joblog import JobLog

DRAIN_SECONDS = 0.25


class Superseded(Exception):
    """A newer job for the same env took over; this one stops without changing anything."""


@dataclass
class Context:
    config: Config
    store: Store

    @property
    def docker(self) -> docker.DockerClient:
        return _docker()


@cache
def context() -> Context:
    """Config and connections for this worker process, built once (from $MIRAGE_CONFIG)."""
    cfg = config_mod.load()
    return Context(cfg, Store.from_url(cfg.effective_redis_url))


@cache
def _docker() -> docker.DockerClient:
    return runtime.connect()


def _current() -> tuple[Context, Job, JobLog]:
    ctx = context()
    rq_job = rq.get_current_job()
    job = ctx.store.job(rq_job.id) if rq_job else None
    if job is None:
        raise RuntimeError("this job has no mirage record; enqueue it with mirage_git.queue")
    return ctx, job, JobLog(ctx.store, job.id)


def deploy(app: str, branch: str, commit: str | None = None) -> str:
    """Fetch, build, run, wait until healthy, route, then retire the previous container."""
    ctx, job, log = _current()
    if _superseded_before_start(ctx, job, log):
        return "superseded"
    log.start()
    ctx.store.update_env(job.host, status="building", job_id=job.id)
    new_container: str | None = None
    new_image: str | None = None  # the tag this job built, until it goes live
    workdir = Path(tempfile.mkdtemp(prefix=f"build-{job.id}-", dir=_builds_dir(ctx.config)))
    try:
        appcfg = _app(ctx.config, app)
        client = ctx.docker
        with log.step("fetch", "Fetching the commit"):
            origin = job.repo or appcfg.repo or str(barerepos.path(ctx.config, app))
            cache = ctx.config.data_dir / "cache" / f"{app}.git"
            if job.source == "push" and commit:
                commit = source.fetch_pushed(cache, origin, branch, commit, job.quarantine, log)
            else:
                commit = source.fetch(cache, origin, branch, commit, log)
            subject = job.subject or source.subject(cache, commit)
            ctx.store.update_job(job.id, commit=commit, subject=subject)
            log(f"commit {commit}")
            source.export(cache, commit, appcfg.context, workdir)
        _check_latest(ctx, job)
        slug = _slug(job)
        instance = ctx.config.instance
        labels = {runtime.LABEL_INSTANCE: instance, runtime.LABEL_APP: app, runtime.LABEL_BRANCH: branch,
                  runtime.LABEL_COMMIT: commit, runtime.LABEL_JOB: job.id, "mirage.host": job.host}
        with log.step("build", "Building the image"):
            tag = runtime.image_tag(instance, app, slug, commit)
            image = runtime.build(client, workdir, appcfg.dockerfile, tag, log)
            new_image = tag
            log(f"built {tag} ({image[:19]})")
        _check_latest(ctx, job)
        with log.step("run", "Starting the container"):
            port = runtime.container_port(client, image, appcfg.port)
            extra = sorted({p.target for p in ctx.config.proxy.ports} - {port})
            container, host_ports = runtime.run(
                client, image, f"mirage-{app}-{slug}-{job.id}", labels,
                _container_env(appcfg, job, commit, port), [port, *extra])
            new_container = container.id
            log(f"container {container.short_id}: port {port} published on 127.0.0.1:{host_ports[port]}")
        with log.step("health", f"Waiting for {appcfg.health_path} to answer"):
            runtime.wait_healthy(client, container, host_ports[port], appcfg.health_path, job.host,
                                 appcfg.health_timeout, log)
        with log.step("route", "Routing traffic to the new version"):
            previous = ctx.store.env(job.host)
            route = Route(job.host, app, branch, "live", port=host_ports[port],
                          ports={str(p): host_ports[p] for p in extra}, job_id=job.id)
            promoted = ctx.store.promote(
                job.id, route, status="live", commit=commit, live_job_id=job.id, container=container.id,
                image=image, port=host_ports[port], ports={str(p): host_ports[p] for p in extra},
                deployed_at=time.time(), pusher=job.pusher, subject=subject, params=job.params)
            if not promoted:
                raise Superseded
            new_container = new_image = None  # it is live now: never remove it on the way out
            log(f"{job.host} → 127.0.0.1:{host_ports[port]}")
        with log.step("cleanup", "Retiring the previous version"):
            runtime.keep_running(container)  # live now: Docker restarts it after a crash or an engine restart
            time.sleep(DRAIN_SECONDS)  # let requests already sent to the old version finish
            for old in runtime.branch_containers(client, instance, app, branch):
                if old["Id"] != container.id:
                    runtime.remove(client, old["Id"])
                    log(f"removed container {old['Id'][:12]}")
            removed = runtime.remove_branch_images(client, instance, app, slug, keep=image)
            if removed:
                log(f"removed {removed} old image(s)")
            if previous and previous.commit and previous.commit != commit:
                log(f"replaced {naming.short_sha(previous.commit)}")
        log.finish("succeeded", f"live at {job.env_url}")
        return job.env_url
    except Superseded:
        # Not the image: a newer job may have built the very same tag.
        _discard(ctx, job, log, new_container, None)
        new_container = new_image = None
        _superseded(ctx, job, log)
        return "superseded"
    except Exception as exc:
        superseded = ctx.store.latest(job.host) != job.id
        # Before the last line: whoever acts on it (a pusher, a script) must not find this container.
        _discard(ctx, job, log, new_container, None if superseded else new_image)
        new_container = new_image = None
        if superseded:
            _superseded(ctx, job, log)
            return "superseded"
        reason = _reason(exc)
        _fail_env(ctx, job)
        log.finish("failed", f"deploy failed: {reason}", error=reason)
        raise DeployFailed(reason) from None
    finally:
        # Cut short by what is no Exception (SystemExit, KeyboardInterrupt): still clean up.
        _discard(ctx, job, log, new_container, new_image)
        shutil.rmtree(workdir, ignore_errors=True)


def teardown(app: str, branch: str) -> str:
    """Route first, then the branch's containers, then its images; then forget the env."""
    ctx, job, log = _current()
    if _superseded_before_start(ctx, job, log):
        return "superseded"
    log.start()
    try:
        client = ctx.docker
        with log.step("route", "Removing the route"):
            ctx.store.delete_route(job.host)
            log(f"{job.host} no longer routed")
        with log.step("containers", "Removing the containers"):
            for c in runtime.branch_containers(client, ctx.config.instance, app, branch):
                runtime.remove(client, c["Id"])
                log(f"removed container {c['Id'][:12]}")
        with log.step("images", "Removing the images"):
            removed = runtime.remove_branch_images(client, ctx.config.instance, app, _slug(job))
            log(f"removed {removed} image(s)")
        if not ctx.store.forget_env(job.id, job.host, app, branch):
            log("a newer job was queued for this branch; it will bring the env back")
        log.finish("succeeded", f"torn down {job.env_url}")
        return "torn down"
    except Exception as exc:
        reason = _reason(exc)
        log.finish("failed", f"teardown failed: {reason}", error=reason)
        raise DeployFailed(reason) from None


class DeployFailed(Exception):
    """Raised so RQ records the job as failed; the log already holds the reason."""


def _discard(ctx: Context, job: Job, log: JobLog, container: str | None, image_tag: str | None) -> None:
    """Remove what a deploy that did not go live made: its container, and its image unless live."""
    if not container and not image_tag:
        return
    try:
        runtime.remove(ctx.docker, container)
        if image_tag:
            env = ctx.store.env(job.host)
            live_image = env.image if env else None
            if live_image is None or ctx.docker.images.get(image_tag).id != live_image:
                runtime.remove_image_tag(ctx.docker, image_tag)
    except (docker.errors.DockerException, Unavailable) as exc:
        log(f"warning: could not remove what this deploy made ({' '.join(str(exc).split())[:200]})")


def _app(cfg: Config, name: str) -> AppConfig:
    if name not in cfg.apps:
        raise runtime.DeployError(f"app {name!r} is no longer in the config")
    return cfg.apps[name]


def _slug(job: Job) -> str:
    return job.host.split(".", 1)[0]


def _check_latest(ctx: Context, job: Job) -> None:
    if ctx.store.latest(job.host) != job.id:
        raise Superseded


def _superseded_before_start(ctx: Context, job: Job, log: JobLog) -> bool:
    if job.status == "superseded":  # queue.py marked it when the newer job arrived
        return True
    if ctx.store.latest(job.host) != job.id:
        _superseded(ctx, job, log)
        return True
    return False


def _superseded(ctx: Context, job: Job, log: JobLog) -> None:
    newer = ctx.store.latest(job.host)
    why = f"job {newer}" if newer else "a teardown"
    log.finish("superseded", f"superseded by {why}; this job changed nothing")


def _fail_env(ctx: Context, job: Job) -> None:
    """Record the failure; keep whatever is live. With nothing live, the proxy says it failed."""
    env = ctx.store.env(job.host)
    ctx.store.update_env(job.host, status="failed")
    if env is not None and not env.live_job_id:
        route = ctx.store.route(job.host)
        if route is None or route.state != "live":
            ctx.store.set_route(Route(job.host, job.app, job.branch, "failed", job_id=job.id))


def _container_env(app: AppConfig, job: Job, commit: str, port: int) -> dict[str, str]:
    env: dict[str, str] = {"PORT": str(port)}
    env.update(app.env)
    for name, value in job.params.items():
        param = app.parameters.get(name)
        env[param.env if param else name] = value
    env.update({"GIT_BRANCH": job.branch, "GIT_COMMIT": commit, "MIRAGE_APP": job.app,
                "MIRAGE_URL": job.env_url, "MIRAGE_HOST": job.host, "MIRAGE_JOB": job.id})
    return env


def _builds_dir(cfg: Config) -> Path:
    path = cfg.data_dir / "builds"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, JobTimeoutException):
        return f"the job ran longer than [worker] job_timeout ({context().config.worker.job_timeout}s)"
    if isinstance(exc, runtime.DeployError | source.SourceError | Unavailable):
        return str(exc)
    if isinstance(exc, docker.errors.DockerException):
        return f"Docker error: {' '.join(str(exc).split())[:300]}"
    return f"internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"

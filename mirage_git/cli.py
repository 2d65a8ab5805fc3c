"""The `mirage-git` command. Thin: each command loads the config and calls one module."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import config as config_mod
from .config import Config, ConfigError
from .errors import UserError


class _Cli(click.Group):
    """Turns the failures users cause into one line on stderr and a fitting exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"mirage-git: {exc}", err=True)
            sys.exit(2)
        except UserError as exc:
            click.echo(f"mirage-git: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config_path", envvar=config_mod.CONFIG_ENV, metavar="FILE",
              help="The TOML config (default: $MIRAGE_CONFIG, else ./mirage.toml).")
@click.version_option(package_name="mirage-git")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Push a branch, get a live preview environment at <branch>.<domain>."""
    ctx.obj = config_path


def _config(ctx: click.Context) -> Config:
    return config_mod.load(ctx.find_root().obj)


def _store(cfg: Config):  # type: ignore[no-untyped-def]
    from .store import Store

    store = Store.from_url(cfg.effective_redis_url)
    store.ping()
    return store


@main.command()
@click.option("--insecure", is_flag=True, help="Let the web app listen beyond loopback without [auth].")
@click.pass_context
def up(ctx: click.Context, insecure: bool) -> None:
    """Start everything: embedded Redis, web, proxy and workers."""
    from . import runner

    sys.exit(runner.up(_config(ctx), insecure=insecure))


@main.command()
@click.option("--insecure", is_flag=True, help="Let the web app listen beyond loopback without [auth].")
@click.pass_context
def web(ctx: click.Context, insecure: bool) -> None:
    """Serve webhooks, the dashboard, the API and job logs."""
    from .web import server

    cfg = _config(ctx)
    _store(cfg)
    server.serve(cfg, insecure=insecure)


@main.command()
@click.pass_context
def proxy(ctx: click.Context) -> None:
    """Serve every env at its own hostname."""
    from . import proxy as proxy_mod

    cfg = _config(ctx)
    _store(cfg)
    proxy_mod.serve(cfg)


@main.command("build-proxy")
@click.option("--if-needed", is_flag=True, help="Do nothing when the build already matches the source.")
def build_proxy(if_needed: bool) -> None:
    """Compile the proxy's hot path with mypyc (about a third less CPU per request)."""
    from .proxy import native

    if if_needed and native.unusable() is None:
        click.echo(f"proxy hot path: native build is up to date ({native.BUILD_DIR})")
        return
    click.echo("proxy hot path: compiling client, upstream, headers and server with mypyc (about 12 s)...")
    try:
        where = native.build()
    except (RuntimeError, OSError) as exc:
        raise UserError(f"the proxy's native build failed; the proxy runs as pure Python until it works.\n{exc}"
                        ) from None
    click.echo(f"proxy hot path: native build in {where}")


@main.command()
@click.option("--count", type=int, default=None, help="Worker processes (default: [worker] count).")
@click.pass_context
def worker(ctx: click.Context, count: int | None) -> None:
    """Run deploy and teardown jobs."""
    from worker import service

    cfg = _config(ctx)
    store = _store(cfg)
    service.run(cfg, store, count or cfg.worker.count)


@main.command()
@click.pass_context
def redis(ctx: click.Context) -> None:
    """Run the embedded Redis in the foreground (what `up` does when redis_url is unset)."""
    import os

    from . import embedded_redis

    cfg = _config(ctx)
    if not cfg.embedded_redis:
        raise click.UsageError("redis_url is set in the config, so there is no embedded Redis to run")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = embedded_redis.command(cfg.data_dir, cfg.redis_socket)
    click.echo(f"redis: listening on unix://{cfg.redis_socket}")
    os.execv(cmd[0], cmd)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def envs(ctx: click.Context, as_json: bool) -> None:
    """List environments and their URLs."""
    from . import console

    console.envs(_store(_config(ctx)), as_json)


@main.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@click.pass_context
def logs(ctx: click.Context, job_id: str, follow: bool) -> None:
    """Print a job's log."""
    from . import console

    sys.exit(console.logs(_store(_config(ctx)), job_id, follow))


@main.command()
@click.argument("app")
@click.argument("branch")
@click.option("--commit", help="Build this commit (default: the branch tip).")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="A launch parameter.")
@click.option("--follow/--no-follow", default=True, help="Print the log until the job ends (default).")
@click.pass_context
def deploy(ctx: click.Context, app: str, branch: str, commit: str | None, params: tuple[str, ...],
           follow: bool) -> None:
    """Deploy a branch now, without a push."""
    from . import console

    cfg = _config(ctx)
    sys.exit(console.deploy(cfg, _store(cfg), app, branch, commit, params, follow))


@main.command()
@click.argument("app")
@click.argument("branch")
@click.option("--follow/--no-follow", default=True, help="Print the log until the job ends (default).")
@click.pass_context
def destroy(ctx: click.Context, app: str, branch: str, follow: bool) -> None:
    """Tear down a branch's env: route, containers, images."""
    from . import console

    cfg = _config(ctx)
    sys.exit(console.destroy(cfg, _store(cfg), app, branch, follow))


@main.command()
@click.option("--older-than", required=True, metavar="DURATION",
              help="Idle for longer than this: seconds, or 30m, 2h, 7d.")
@click.option("--app", "app_name", help="Only this app's envs.")
@click.option("--exclude", multiple=True, metavar="BRANCH", help="Keep this branch (repeatable).")
@click.option("--exclude-regex", metavar="REGEX", help="Keep branches this regular expression finds.")
@click.option("--dry-run", is_flag=True, help="Only list what would be terminated.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def purge(ctx: click.Context, older_than: str, app_name: str | None, exclude: tuple[str, ...],
          exclude_regex: str | None, dry_run: bool, as_json: bool) -> None:
    """Terminate envs nobody has requested (or deployed) for a while."""
    from . import console

    cfg = _config(ctx)
    console.purge(cfg, _store(cfg), older_than, app_name, exclude, exclude_regex, dry_run, as_json)


@main.command()
@click.argument("app")
@click.pass_context
def branches(ctx: click.Context, app: str) -> None:
    """List the branches an app's repository has (what `deploy` and the launcher can launch)."""
    from . import console

    sys.exit(console.branches(_config(ctx), app))


@main.command()
@click.argument("app")
@click.option("--show-token", is_flag=True, help="Put the app's real push_token in the URL instead of a placeholder.")
@click.pass_context
def remote(ctx: click.Context, app: str, show_token: bool) -> None:
    """Print the `git remote add` line that makes `git push mirage BRANCH` deploy APP."""
    from .push import remote as remote_mod

    click.echo(remote_mod.instructions(_config(ctx), app, show_token))


@main.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check Docker, Redis, git and the config; say what is missing and how to fix it."""
    from . import doctor as doctor_mod

    sys.exit(doctor_mod.run(ctx.find_root().obj))


if __name__ == "__main__":
    main()

"""The git hooks of an app's bare repository: `python -m mirage_git.push.hook pre-receive|update`.

pre-receive (once per push) enqueues a deploy for every pushed branch and a teardown for
every deleted one, all at once, then follows their logs concurrently, so the pusher sees
the builds scroll by as `remote:` lines. It records a verdict per ref and exits 0; the
`update` hook (once per ref, right after) then lets through only the refs whose job
succeeded. One bad branch thus fails alone, the way a Heroku or Dokku build gate does: the
ref does not move and the version that was live keeps serving. (When no ref passes,
pre-receive declines the whole push itself, which reads better: see the end of `pre_receive`.)

The deploy runs before the ref moves, while git still keeps the pushed objects in its
quarantine directory; the job is told where that is (see `worker.source.fetch_pushed`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import config as config_mod
from .. import naming, queue
from .. import params as params_mod
from ..config import AppConfig, Config, ConfigError
from ..errors import UserError
from ..store import Store
from . import verdicts, watch
from .watch import Outcome, Output

WAIT_SLACK = 300  # seconds on top of the job timeout: time spent queued behind other jobs


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def name(self) -> str:
        return self.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")

    @property
    def deleted(self) -> bool:
        return naming.is_null_sha(self.new)


def main(argv: list[str]) -> int:
    out = Output(_print)
    if argv[:1] == ["pre-receive"]:
        return pre_receive(_read_updates(sys.stdin), out)
    if argv[:1] == ["update"] and len(argv) == 4:
        return update(*argv[1:4], out=out)
    out.say("usage: python -m mirage_git.push.hook pre-receive|update REF OLD NEW")
    return 2


def pre_receive(updates: list[RefUpdate], out: Output) -> int:
    try:
        cfg = config_mod.load()
        app = cfg.app(os.environ.get("MIRAGE_APP") or Path.cwd().name.removesuffix(".git"))
        store = Store.from_url(cfg.effective_redis_url)
        store.ping()
    except (ConfigError, UserError, KeyError) as exc:
        out.say(f"push refused: {exc.args[0] if isinstance(exc, KeyError) else exc}")
        return 1
    prefixed = len(updates) > 1
    if any(_refusal(u) is None for u in updates) and not _workers_alive(cfg):
        out.say("warning: no worker is running, so nothing will build until one starts (`mirage-git up`)")
    rq_queue = queue.rq_queue(cfg)
    deadline = time.monotonic() + cfg.worker.job_timeout + WAIT_SLACK
    outcomes: dict[RefUpdate, Outcome] = {}
    threads = []
    for upd in updates:
        say = _sayer(out, f"[{upd.name}] " if prefixed else "")
        refusal = _refusal(upd)
        if refusal is not None:
            outcomes[upd] = refusal
            say(refusal.last_line)
            continue
        try:
            job = _enqueue(cfg, store, rq_queue, app, upd)
        except Exception as exc:  # Redis gone mid-push, no free hostname, a bad push option...
            outcomes[upd] = Outcome(False, f"push refused: {' '.join(str(exc).split())}")
            say(outcomes[upd].last_line)
            continue
        if job is None:
            outcomes[upd] = Outcome(True, f"deleted; {upd.name} had no env")
            say(outcomes[upd].last_line)
            continue
        log_url = f"{cfg.web.base_url}{job.log_url}"
        say(f"log: {log_url} (Ctrl-C stops watching; the {job.action} carries on)")

        def run(upd: RefUpdate = upd, job=job, log_url: str = log_url, say=say) -> None:  # type: ignore[no-untyped-def]
            try:
                outcome = watch.follow(store, job, log_url, say, deadline)
            except Exception as exc:  # e.g. Redis went away while we waited
                outcome = Outcome(False, f"lost track of the job ({' '.join(str(exc).split())}) (log: {log_url})")
            outcomes[upd] = outcome
            say(outcome.last_line)
        thread = threading.Thread(target=run, name=f"watch-{upd.name}")
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    if not any(o.accept for o in outcomes.values()):
        # Nothing to let through: decline here. git then rejects every ref without running `update`
        # and without adding its own "hook declined" line, so our outcome stays the pusher's last line.
        return 1
    verdicts.save(Path.cwd(), os.getppid(),
                  [verdicts.Verdict(u.ref, u.old, u.new, outcomes[u].accept) for u in updates])
    return 0


def update(ref: str, old: str, new: str, out: Output) -> int:
    verdict = verdicts.accepts(Path.cwd(), os.getppid(), ref, old, new)
    if verdict is None:
        out.say(f"mirage-git: no deploy outcome was recorded for {ref}; refusing to update it")
        return 1
    return 0 if verdict else 1


def _refusal(upd: RefUpdate) -> Outcome | None:
    """Refs that start no job: tags (kept, not deployed), and anything that is not a deployable branch."""
    if upd.ref.startswith("refs/tags/"):
        return Outcome(True, "ignored (tag)")
    if not upd.ref.startswith("refs/heads/"):
        return Outcome(False, f"refused {upd.ref}: only branches (refs/heads/...) deploy, and tags are kept")
    if not naming.is_valid_branch(upd.name):
        return Outcome(False, f"refused branch {upd.name[:80]!r}: not a valid branch name (see git-check-ref-format)")
    return None


def _enqueue(cfg: Config, store: Store, rq_queue, app: AppConfig, upd: RefUpdate):  # type: ignore[no-untyped-def]
    pusher = os.environ.get("REMOTE_USER") or None
    if upd.deleted:
        if store.slug_of(app.name, upd.name) is None:
            return None
        return queue.teardown(cfg, store, rq_queue, app, upd.name, source="push", pusher=pusher)
    params = _params(store, app, upd.name, _push_options())
    quarantine = os.environ.get("GIT_QUARANTINE_PATH")
    return queue.deploy(cfg, store, rq_queue, app, upd.name, upd.new, source="push", pusher=pusher,
                        subject=_subject(upd.new), params=params, repo=str(Path.cwd()),
                        quarantine=os.path.abspath(quarantine) if quarantine else None)


def _params(store: Store, app: AppConfig, branch: str, given: dict[str, str]) -> dict[str, str]:
    """Launch parameters: the env's current ones, overridden by `git push -o NAME=VALUE`."""
    slug = store.slug_of(app.name, branch)
    env = store.env(naming.host(slug, app.domain)) if slug else None
    merged = {**(env.params if env else {}), **given}
    problems = params_mod.problems(app.parameters, merged)
    if problems:
        raise ValueError("; ".join(f"parameter {k} {v}" for k, v in problems.items())
                         + " (pass launch parameters with `git push -o NAME=VALUE`)")
    return params_mod.resolve(app.parameters, merged)


def _workers_alive(cfg: Config) -> bool:
    try:
        return queue.workers_alive(cfg) > 0
    except Exception:  # only a hint: never refuse a push over it
        return True


def _push_options() -> dict[str, str]:
    options = {}
    for i in range(int(os.environ.get("GIT_PUSH_OPTION_COUNT") or 0)):
        name, sep, value = os.environ.get(f"GIT_PUSH_OPTION_{i}", "").partition("=")
        if not sep:
            raise ValueError(f"push option {name!r} is not NAME=VALUE")
        options[name] = value
    return options


def _subject(commit: str) -> str | None:
    """The commit's subject line; git's environment here can read the quarantined objects."""
    proc = subprocess.run(["git", "log", "-1", "--format=%s", commit], capture_output=True, text=True)
    subject = proc.stdout.strip()[:200] if proc.returncode == 0 else ""
    return subject or None


def _read_updates(lines: Iterable[str]) -> list[RefUpdate]:
    return [RefUpdate(*line.split()) for line in lines if len(line.split()) == 3]


def _sayer(out: Output, prefix: str):  # type: ignore[no-untyped-def]
    return lambda line: out.say(line, prefix)


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

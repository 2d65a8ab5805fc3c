"""`mirage-git up`: the whole service in one command, as supervised child processes.

Children are the same commands a Procfile runs (`web`, `proxy`, `worker`) plus the
embedded Redis. Their output is prefixed with their name, like foreman. A child that dies
right after starting stops everything (it will not get better by itself, e.g. a port in
use); one that dies later is restarted. Containers are never touched on the way out:
they keep running and are served again on the next `up`.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

from . import embedded_redis
from .config import Address, Config
from .errors import Unavailable, UserError
from .store import Store

START_GRACE = 8.0  # a child that exits sooner than this after starting is a fatal error
STOP_TIMEOUT = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.name, self.proc.stdout), daemon=True).start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _say(f"{self.name} did not stop within {STOP_TIMEOUT:.0f}s; killing it")
            self.proc.kill()
            self.proc.wait()


def up(config: Config, insecure: bool = False) -> int:
    from worker import docker_runtime  # the supervisor checks Docker before starting anything

    from .web.server import check_listen

    if config.path is None:
        raise UserError("`up` needs a config file, so that its children can read it")
    check_listen(config, insecure)
    docker_runtime.connect()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    for name, addr in [("web", config.web.listen), ("proxy", config.proxy.listen),
                       *((f"proxy port {p.target}", p.listen) for p in config.proxy.ports)]:
        if _answers(addr):
            raise UserError(f"{addr} ({name}) is already in use: stop what listens there, or change its listen "
                            f"address in {config.path}")
    children = _children(config, insecure)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return _supervise(config, children, stopping)
    finally:
        _say("stopping")
        for child in reversed(children):
            child.stop()
        _say("stopped; deployed containers keep running and are served again on the next `up`")


def _children(config: Config, insecure: bool) -> list[Child]:
    me = [sys.executable, "-m", "mirage_git", "--config", str(config.path)]
    children = []
    if config.embedded_redis:
        if config.redis_socket.exists():
            try:
                Store.from_url(config.effective_redis_url).ping()
                raise UserError(f"another mirage-git is already using {config.data_dir} (its Redis answers at "
                                f"{config.redis_socket}); stop it first")
            except Unavailable:
                config.redis_socket.unlink()  # left behind by a crash
        children.append(Child("redis", embedded_redis.command(config.data_dir, config.redis_socket)))
    children.append(Child("web", [*me, "web", *(["--insecure"] if insecure else [])]))
    children.append(Child("proxy", [*me, "proxy"]))
    children.append(Child("worker", [*me, "worker"]))
    return children


def _supervise(config: Config, children: list[Child], stopping: threading.Event) -> int:
    for child in children:
        child.start()
        if child.name == "redis":
            embedded_redis.wait_ready(config.effective_redis_url, child.proc)
    if not _wait_listening(config, children, stopping):
        return 1
    _banner(config)
    while not stopping.wait(0.5):
        for child in children:
            assert child.proc is not None
            code = child.proc.poll()
            if code is None:
                continue
            if time.monotonic() - child.started < START_GRACE:
                _say(f"{child.name} exited with status {code} right after starting; see its output above")
                return 1
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < 60] + [now]
            if len(child.restarts) > 5:
                _say(f"{child.name} keeps exiting (status {code}); giving up")
                return 1
            _say(f"{child.name} exited with status {code}; restarting it")
            child.start()
    return 0


def _wait_listening(config: Config, children: list[Child], stopping: threading.Event) -> bool:
    deadline = time.monotonic() + 30
    wanted = [config.web.listen, config.proxy.listen]
    while not all(_answers(a) for a in wanted):
        for child in children:
            if child.proc is not None and child.proc.poll() is not None:
                _say(f"{child.name} exited with status {child.proc.returncode} while starting; see above")
                return False
        if stopping.is_set():
            return False
        if time.monotonic() > deadline:
            _say("web or proxy did not start listening within 30s; see their output above")
            return False
        time.sleep(0.1)
    return True


def _banner(config: Config) -> None:
    web = config.web.base_url
    example = config.env_url(f"<branch>.{next(iter(config.apps.values())).domain}")
    lines = [
        "mirage-git is up",
        f"  web      {web}/  (dashboard, API, job logs; webhooks at {web}/hooks/github|gitlab|gitea)",
        f"  proxy    {example}  (listening on {config.proxy.listen})",
        f"  git      {web}/git/<app>.git  (git push; `mirage-git remote APP` prints the remote)",
        f"  redis    {config.effective_redis_url}" + ("  (embedded)" if config.embedded_redis else ""),
        f"  workers  {config.worker.count}",
        f"  apps     {', '.join(f'{a.name} → *.{a.domain}' for a in config.apps.values())}",
    ]
    try:
        live = [e for e in Store.from_url(config.effective_redis_url).envs() if e.live_job_id]
    except Exception:  # the banner must never stop the service from starting
        live = []
    lines += [f"  live     {e.url}  ({e.app}/{e.branch})" for e in live]
    lines.append("Ctrl-C stops the service; deployed containers keep running.")
    _say("\n".join(lines))


def _answers(addr: Address) -> bool:
    host = "127.0.0.1" if addr.host in ("0.0.0.0", "") else "::1" if addr.host == "::" else addr.host
    try:
        with socket.create_connection((host, addr.port), timeout=0.5):
            return True
    except OSError:
        return False


_print_lock = threading.Lock()


def _say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def _pump(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        with _print_lock:
            print(f"{name:<7}| {line}", flush=True)

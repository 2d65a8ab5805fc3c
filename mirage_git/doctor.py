"""`mirage-git doctor`: check everything mirage-git stands on and say how to fix what is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import click

from . import config as config_mod
from . import embedded_redis
from .config import Config, ConfigError
from .errors import Unavailable
from .store import Store

Check = tuple[str, str, str]  # (status: ok|warn|FAIL, subject, message)


def run(config_path: str | None) -> int:
    results: list[Check] = []
    cfg: Config | None = None
    try:
        cfg = config_mod.load(config_path)
        results.append(("ok", "config", f"{cfg.path}: {len(cfg.apps)} app(s): {', '.join(cfg.apps)}"))
    except ConfigError as exc:
        results.append(("FAIL", "config", str(exc)))
    results += [_git(), _proxy_hot_path(), _docker()]
    if results[-1][0] == "ok":  # the engine's settings mean something only when it answers
        results.append(_userland_proxy())
    if cfg is not None:
        results.append(_redis(cfg))
    for status, subject, message in results:
        colour = {"ok": "green", "warn": "yellow"}.get(status, "red")
        click.echo(f"{click.style(status.ljust(4), fg=colour)}  {subject:<13} {message}")
    return 1 if any(status == "FAIL" for status, _, _ in results) else 0


def _git() -> Check:
    git = shutil.which("git")
    if not git:
        return "FAIL", "git", "git is not installed: apt-get install -y git"
    version = subprocess.run([git, "--version"], capture_output=True, text=True).stdout.strip()
    return "ok", "git", version


def _proxy_hot_path() -> Check:
    from .proxy import native

    why = native.unusable()
    if why is None:
        return "ok", "proxy build", "the hot path's mypyc build matches the source (a proxy started now uses it)"
    return "warn", "proxy build", f"a proxy started now runs pure Python (about 15% more CPU per request): {why}"


def _docker() -> Check:
    from worker import docker_runtime

    try:
        client = docker_runtime.connect()
    except Unavailable as exc:
        return "FAIL", "docker", str(exc)
    version = client.version().get("Version", "?")
    return "ok", "docker", f"engine {version}"


def _userland_proxy() -> Check:
    """docker-proxy roughly halves what a published port can carry; iptables NAT does not."""
    if _dockerd_flag_off():
        return "ok", "docker ports", "userland proxy is off (published ports run at full speed)"
    return ("warn", "docker ports",
            "userland proxy is on: published ports are about half as fast; set \"userland-proxy\": false in "
            "/etc/docker/daemon.json (or start dockerd --userland-proxy=false) and restart dockerd")


def _dockerd_flag_off() -> bool:
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = proc.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dockerd"):
            return b"--userland-proxy=false" in argv
    try:
        return json.loads(Path("/etc/docker/daemon.json").read_text()).get("userland-proxy") is False
    except (OSError, ValueError, AttributeError):
        return False


def _redis(cfg: Config) -> Check:
    probe: Callable[[], None] = Store.from_url(cfg.effective_redis_url).ping
    if cfg.embedded_redis:
        try:
            binary = embedded_redis.executable()
        except FileNotFoundError as exc:
            return "FAIL", "redis", str(exc)
        try:
            probe()
            return "ok", "redis", f"embedded, running at {cfg.effective_redis_url}"
        except Unavailable:
            return "ok", "redis", f"embedded ({binary}); `mirage-git up` starts it at {cfg.effective_redis_url}"
    try:
        probe()
        return "ok", "redis", f"answers at {cfg.redis_url}"
    except Unavailable as exc:
        return "FAIL", "redis", str(exc)

"""Load and validate the TOML configuration once, into frozen objects.

Every mistake a user can make ends in one `ConfigError` whose text names the file,
the key and the problem, so the CLI can print it as a single line and exit 2.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from . import repos

DEFAULT_DOMAIN = "dev.localhost"
CONFIG_ENV = "MIRAGE_CONFIG"

_APP_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_URL_PATH = re.compile(r"/[\x21-\x7e]*")  # what an HTTP request line can carry as is (checked with fullmatch)


class ConfigError(Exception):
    """A problem with the configuration, phrased for a single line of output."""

    def __init__(self, path: Path | str | None, key: str, problem: str) -> None:
        self.path, self.key, self.problem = path, key, problem
        super().__init__(_one_line(f"{path or '<config>'}: {key}: {problem}"))


@dataclass(frozen=True)
class Address:
    """A `host:port` listen address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class Parameter:
    """A launch parameter: a value a user fills in, passed to the container as an env var."""

    name: str
    env: str
    required: bool = False
    default: str | None = None
    options: tuple[str, ...] = ()
    rule: str | None = None
    description: str = ""

    def check(self, value: str | None) -> str | None:
        """Return the problem with `value` in one sentence, or None when it is acceptable."""
        if value is None or value == "":
            return "is required" if self.required else None
        if self.options and value not in self.options:
            return "must be one of " + ", ".join(self.options)
        if self.rule and not re.fullmatch(self.rule, value):
            return f"must match {self.rule}"
        if "\x00" in value or len(value) > 4096 or not _utf8(value):
            return "is not a valid value"
        return None


@dataclass(frozen=True)
class AppConfig:
    name: str
    domain: str
    repo: str | None = None
    webhook_repo: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    push_token: str | None = field(default=None, repr=False)
    port: int | None = None
    health_path: str = "/"
    health_timeout: float = 60.0
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    dockerfile: str = "Dockerfile"
    context: str = "."
    parameters: Mapping[str, Parameter] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def repo_ids(self) -> frozenset[str]:
        """Normalised identities a webhook payload may name this app's repository by."""
        return frozenset(repos.normalise(r) for r in (self.repo, self.webhook_repo) if r)


@dataclass(frozen=True)
class PortMap:
    """An extra proxy listener that forwards to another port of every env's container."""

    listen: Address
    target: int


@dataclass(frozen=True)
class WebConfig:
    listen: Address = Address("127.0.0.1", 8080)
    threads: int = 32
    public_url: str = ""  # how people reach the web app; links from the proxy's pages use it
    stream_max: float = 600.0  # seconds a log page's event stream stays open; the browser then resumes it

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.listen.host in ("0.0.0.0", "::") else self.listen.host
        return f"http://{Address(host, self.listen.port)}"


@dataclass(frozen=True)
class ProxyConfig:
    listen: Address = Address("127.0.0.1", 8000)
    workers: int = 1
    ports: tuple[PortMap, ...] = ()
    connect_timeout: float = 5.0
    idle_timeout: float = 300.0


@dataclass(frozen=True)
class WorkerConfig:
    count: int = 2
    job_timeout: int = 1800


@dataclass(frozen=True)
class AuthConfig:
    token: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Config:
    path: Path | None
    data_dir: Path
    apps: Mapping[str, AppConfig]
    # Names this installation's containers and images, so that two mirage-gits sharing one
    # Docker engine never touch each other's. Default: derived from `data_dir`.
    instance: str = "default"
    domain: str = DEFAULT_DOMAIN
    redis_url: str | None = None
    web: WebConfig = WebConfig()
    proxy: ProxyConfig = ProxyConfig()
    worker: WorkerConfig = WorkerConfig()
    auth: AuthConfig = AuthConfig()

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def redis_socket(self) -> Path:
        """Where the embedded Redis listens (a unix socket, so nothing else can reach it)."""
        return self.data_dir / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"

    def env_url(self, host: str) -> str:
        """The URL a person opens to reach the env served at `host`."""
        port = self.proxy.listen.port
        return f"http://{host}/" if port == 80 else f"http://{host}:{port}/"

    def app(self, name: str) -> AppConfig:
        try:
            return self.apps[name]
        except KeyError:
            raise KeyError(f"no app named {name!r}; configured apps: {', '.join(self.apps)}") from None


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config from `path`, else `$MIRAGE_CONFIG`, else `./mirage.toml`."""
    chosen = path or os.environ.get(CONFIG_ENV)
    if not chosen:
        if not Path("mirage.toml").is_file():
            raise ConfigError(None, "--config", f"no config given and no ./mirage.toml here; pass --config FILE "
                              f"or set {CONFIG_ENV} (the quick start's is examples/mirage.toml)")
        chosen = "mirage.toml"
    file = Path(chosen).expanduser().resolve()
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(file, "--config", f"cannot read the file ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(file, "(syntax)", f"not valid TOML: {exc}") from None
    return parse(data, file)


def parse(data: Mapping[str, Any], path: Path | None = None) -> Config:
    """Validate an already-decoded TOML document; relative paths resolve against its folder."""
    base = path.parent if path else Path.cwd()
    top = _Table(path, "", data)
    domain = top.domain("domain", DEFAULT_DOMAIN)
    redis_url = top.str("redis_url", None)
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        top.fail("redis_url", "must start with redis://, rediss:// or unix://")
    data_dir = _resolve(base, top.str("data_dir", ".mirage"))
    instance = top.str("instance", None) or hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
    if not _APP_NAME.match(instance):
        top.fail("instance", "must be lower-case letters, digits and '-', at most 40 characters")

    web_t = top.table("web")
    web = WebConfig(
        listen=web_t.address("listen", "127.0.0.1:8080"),
        threads=web_t.int("threads", 32, 1, 1024),
        public_url=web_t.str("public_url", ""),
        stream_max=web_t.number("stream_max", 600.0, 1.0),
    )
    if web.public_url and not web.public_url.startswith(("http://", "https://")):
        web_t.fail("public_url", "must start with http:// or https://")
    web_t.done()

    proxy_t = top.table("proxy")
    proxy = ProxyConfig(
        listen=proxy_t.address("listen", "127.0.0.1:8000"),
        workers=proxy_t.int("workers", 1, 1, 64),
        ports=tuple(_port_map(t) for t in proxy_t.tables("ports")),
        connect_timeout=proxy_t.number("connect_timeout", 5.0, 0.01),
        idle_timeout=proxy_t.number("idle_timeout", 300.0, 0.01),
    )
    proxy_t.done()

    worker_t = top.table("worker")
    worker = WorkerConfig(
        count=worker_t.int("count", 2, 1, 64), job_timeout=worker_t.int("job_timeout", 1800, 10, 86400)
    )
    worker_t.done()

    auth_t = top.table("auth")
    auth = AuthConfig(token=auth_t.secret("token"), secret_key=auth_t.secret("secret_key"))
    auth_t.done()

    apps_t = top.table("apps")
    apps: dict[str, AppConfig] = {}
    for name in apps_t.names():
        if not _APP_NAME.fullmatch(name):
            apps_t.fail(name, "app names are lower-case letters, digits and '-', at most 40 characters")
        apps[name] = _app(apps_t.table(name), name, domain, base)
    apps_t.done()
    if not apps:
        top.fail("apps", "no apps configured; add an [apps.<name>] table with a repo")
    owners: dict[str, str] = {}
    for app in apps.values():
        if app.domain in owners:
            top.fail(f"apps.{app.name}.domain", f"{app.domain!r} is already used by app {owners[app.domain]!r}")
        owners[app.domain] = app.name
    ports = [proxy.listen.port, *(p.listen.port for p in proxy.ports)]
    if len(set(ports)) != len(ports):
        top.fail("proxy.ports", "two proxy listeners share a port")
    top.done()
    return Config(
        path=path, data_dir=data_dir, apps=MappingProxyType(apps), instance=instance, domain=domain,
        redis_url=redis_url,
        web=web, proxy=proxy, worker=worker, auth=auth,
    )


def _app(t: _Table, name: str, default_domain: str, base: Path) -> AppConfig:
    repo = t.str("repo", None)
    if repo is not None and repos.is_local(repo):
        repo = str(_resolve(base, repo))
    elif repo is not None and "://" in repo:
        try:
            urlsplit(repo).port  # noqa: B018  (raises for "https://[::1" or a port that is no number)
        except ValueError as exc:
            t.fail("repo", f"{repo!r} is not a valid URL ({exc})")
    health_path = t.str("health_path", "/")
    if not health_path.startswith("/"):
        t.fail("health_path", "must start with '/'")
    if not _URL_PATH.fullmatch(health_path):
        t.fail("health_path", "must be a URL path without spaces, control or non-ASCII characters "
                              "(percent-encode them)")
    env_t = t.table("env")
    env = {}
    for key in env_t.names():
        if not _ENV_NAME.fullmatch(key):
            env_t.fail(key, "is not a valid environment variable name")
        env[key] = env_t.scalar(key)
    params_t = t.table("parameters")
    params = {key: _parameter(params_t.table(key), key) for key in params_t.names()}
    params_t.done()
    app = AppConfig(
        name=name,
        domain=t.domain("domain", default_domain),
        repo=repo,
        webhook_repo=t.str("webhook_repo", None),
        webhook_secret=t.secret("webhook_secret"),
        push_token=t.secret("push_token"),
        port=t.int("port", None, 1, 65535),
        health_path=health_path,
        health_timeout=t.number("health_timeout", 60.0, 0.1),
        env=MappingProxyType(env),
        dockerfile=t.relpath("dockerfile", "Dockerfile", file=True),
        context=t.relpath("context", "."),
        parameters=MappingProxyType(params),
    )
    t.done()
    return app


def _parameter(t: _Table, name: str) -> Parameter:
    env = t.str("env", name)
    if not _ENV_NAME.fullmatch(env):
        t.fail("env", "is not a valid environment variable name")
    options = tuple(t.list_of_str("options"))
    rule = t.str("rule", None)
    if rule is not None:
        try:
            re.compile(rule)
        except (re.error, OverflowError, RecursionError) as exc:  # x{99999999999}; ((((…)))) nested too deep
            t.fail("rule", f"is not a valid regular expression ({exc})")
    param = Parameter(
        name=name, env=env, required=t.bool("required", False), default=t.str("default", None),
        options=options, rule=rule, description=t.str("description", ""),
    )
    if param.default is not None and (problem := param.check(param.default)):
        t.fail("default", problem)
    t.done()
    return param


def _port_map(t: _Table) -> PortMap:
    port_map = PortMap(listen=t.address("listen", None), target=t.int("target", _MISSING, 1, 65535))
    t.done()
    return port_map


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


_MISSING: Any = object()


class _Table:
    """A TOML table being read: typed getters that remember which keys were used."""

    def __init__(self, path: Path | None, prefix: str, data: Any) -> None:
        self.path, self.prefix = path, prefix
        if not isinstance(data, Mapping):
            raise ConfigError(path, prefix.rstrip(".") or "(top)", "must be a table")
        self.data, self.used = data, set[str]()

    def fail(self, key: str, problem: str) -> None:
        raise ConfigError(self.path, self.prefix + key, problem)

    def names(self) -> list[str]:
        self.used.update(self.data)
        return list(self.data)

    def done(self) -> None:
        for key in self.data:
            if key not in self.used:
                self.fail(key, "unknown key")

    def _get(self, key: str, default: Any, kind: type | tuple[type, ...], what: str) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                self.fail(key, "is required")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            self.fail(key, f"must be {what}, not {type(value).__name__} {value!r}")
        return value

    def table(self, key: str) -> _Table:
        return _Table(self.path, f"{self.prefix}{key}.", self._get(key, {}, Mapping, "a table"))

    def tables(self, key: str) -> list[_Table]:
        items = self._get(key, [], list, "an array of tables ([[...]])")
        return [_Table(self.path, f"{self.prefix}{key}[{i}].", item) for i, item in enumerate(items)]

    def str(self, key: str, default: str | None) -> Any:
        value = self._get(key, default, str, "a string")
        if isinstance(value, str) and "\x00" in value:
            self.fail(key, "must not contain NUL characters")
        return value

    def secret(self, key: str) -> str | None:
        value = self.str(key, None)
        if value is not None and not value.strip():
            self.fail(key, "is empty; remove the key or give it a value")
        return value

    def scalar(self, key: str) -> str:
        value = self._get(key, _MISSING, (str, int, float, bool), "a string, number or boolean")
        return str(value).lower() if isinstance(value, bool) else str(value)

    def bool(self, key: str, default: bool) -> bool:
        return self._get(key, default, bool, "true or false")

    def int(self, key: str, default: Any, low: int, high: int) -> Any:
        value = self._get(key, default, int, "an integer")
        if value is not None and not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}")
        return value

    def number(self, key: str, default: float, low: float) -> float:
        value = self._get(key, default, (int, float), "a number")
        if not math.isfinite(value):  # TOML has nan and inf; a timeout of nan never expires, inf breaks ticks
            self.fail(key, f"must be a finite number, not {value}")
        if value < low:
            self.fail(key, f"must be at least {low}")
        return float(value)

    def list_of_str(self, key: str) -> list[str]:
        values = self._get(key, [], list, "a list of strings")
        if not all(isinstance(v, str) for v in values):
            self.fail(key, "must be a list of strings")
        return values

    def domain(self, key: str, default: str) -> str:
        value = self._get(key, default, str, "a string").lower().rstrip(".")
        if len(value) > 190 or not value or not all(_DNS_LABEL.fullmatch(part) for part in value.split(".")):
            self.fail(key, f"{value!r} is not a valid DNS domain")
        return value

    def relpath(self, key: str, default: str, file: bool = False) -> str:
        value = self._get(key, default, str, "a string")
        parts = Path(value).parts
        if Path(value).is_absolute() or ".." in parts or "\x00" in value:
            self.fail(key, "must be a path inside the repository (relative, without '..')")
        if file and not parts:
            self.fail(key, "must name a file in the repository, like 'Dockerfile'")
        return value

    def address(self, key: str, default: str | None) -> Address:
        value = self._get(key, _MISSING if default is None else default, str, "a string like '127.0.0.1:8080'")
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            self.fail(key, f"{value!r} is not a 'host:port' address")
        return Address(host, int(port))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry ("\ud800")
        return False


def _one_line(text: str) -> str:
    """Keys and values may hold line breaks (quoted TOML keys, a rule); the message stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)

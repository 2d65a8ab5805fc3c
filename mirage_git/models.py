"""The records mirage-git keeps: jobs, envs and routes, and how each travels as text.

Plain data with no I/O; `store` moves them in and out of Redis, the API renders them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "superseded")
JOB_DONE = frozenset({"succeeded", "failed", "superseded"})
ENV_STATUSES = ("queued", "building", "live", "failed", "stopped")


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 in UTC, the only time format the API speaks."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _to_hash(obj: Any, json_fields: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for key, value in asdict(obj).items():
        if key in json_fields:
            out[key] = json.dumps(value)
        elif value is not None:
            out[key] = str(value)
    return out


def _from_hash(cls: type, data: Mapping[str, str], json_fields: tuple[str, ...]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        raw = data[f.name]
        if f.name in json_fields:
            kwargs[f.name] = json.loads(raw)
        elif f.type in ("float | None", "float"):
            kwargs[f.name] = float(raw)
        elif f.type in ("int | None", "int"):
            kwargs[f.name] = int(raw)
        else:
            kwargs[f.name] = raw
    return cls(**kwargs)


@dataclass
class Job:
    """One deploy or teardown of one branch of one app."""

    id: str
    app: str
    branch: str
    action: str  # "deploy" | "teardown"
    host: str
    env_url: str
    status: str = "queued"
    commit: str | None = None
    source: str = "cli"  # "github" | "gitlab" | "gitea" | "push" | "api" | "cli" | "ui"
    pusher: str | None = None
    subject: str | None = None
    error: str | None = None
    repo: str | None = None  # the repository a push landed in, when it differs from the app's
    quarantine: str | None = None  # a push's object directory while its pre-receive hook waits (see worker.source)
    runner: str | None = None  # "<hostname>:<pid>" of the process running it, to spot one that died
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    params: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    _JSON = ("params", "steps")

    @property
    def done(self) -> bool:
        return self.status in JOB_DONE

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    @property
    def log_url(self) -> str:
        return f"/jobs/{self.id}"

    def to_hash(self) -> dict[str, str]:
        return _to_hash(self, self._JSON)

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> Job:
        return _from_hash(cls, data, cls._JSON)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "app": self.app, "branch": self.branch, "commit": self.commit,
            "action": self.action, "status": self.status, "created_at": iso(self.created_at),
            "started_at": iso(self.started_at), "ended_at": iso(self.ended_at),
            "duration": None if self.duration is None else round(self.duration, 3),
            "env_url": self.env_url, "host": self.host, "error": self.error, "source": self.source,
            "pusher": self.pusher, "subject": self.subject, "params": self.params, "steps": self.steps,
            "log_url": self.log_url,
        }


@dataclass
class Env:
    """One branch of one app at its own host: what is live there and what happened last."""

    app: str
    branch: str
    slug: str
    host: str
    url: str
    status: str = "queued"
    job_id: str | None = None  # the latest job, whatever its outcome
    commit: str | None = None  # the live commit
    live_job_id: str | None = None
    container: str | None = None
    image: str | None = None
    port: int | None = None  # host port of the live container
    pusher: str | None = None
    subject: str | None = None
    deployed_at: float | None = None
    created_at: float = field(default_factory=time.time)
    params: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # extra container port → host port

    _JSON = ("params", "ports")

    def to_hash(self) -> dict[str, str]:
        return _to_hash(self, self._JSON)

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> Env:
        return _from_hash(cls, data, cls._JSON)

    def to_api(self) -> dict[str, Any]:
        return {
            "app": self.app, "branch": self.branch, "slug": self.slug, "host": self.host, "url": self.url,
            "commit": self.commit, "status": self.status, "deployed_at": iso(self.deployed_at),
            "job_id": self.job_id, "live_job_id": self.live_job_id, "pusher": self.pusher,
            "subject": self.subject, "params": self.params, "created_at": iso(self.created_at),
        }


@dataclass(frozen=True)
class Route:
    """What the proxy needs to answer for one host.

    `state` is "live" (forward to `port` on 127.0.0.1), "building" (no live version yet:
    answer 503 with a link to `job_id`'s log) or "failed" (the first deploy failed).
    `ports` maps extra container ports (see `[[proxy.ports]]`) to their host ports.
    """

    host: str
    app: str
    branch: str
    state: str
    port: int | None = None
    ports: Mapping[str, int] = field(default_factory=dict)
    job_id: str | None = None

    def to_json(self) -> str:
        return json.dumps({"app": self.app, "branch": self.branch, "state": self.state, "port": self.port,
                           "ports": dict(self.ports), "job_id": self.job_id}, separators=(",", ":"))

    @classmethod
    def from_json(cls, host: str, raw: str | bytes) -> Route:
        """Parse a route as stored in Redis. Raises ValueError for anything but a well-formed route.

        Anyone who can write Redis can write a route, and the proxy (compiled, strictly typed)
        reads every field on the request path, so each one is checked here, once.
        """
        try:
            d = json.loads(raw)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(d, dict):
            raise ValueError("a route is a JSON object")
        ports = d.get("ports") or {}
        if not isinstance(ports, dict):
            raise ValueError("ports must be an object")
        job_id = d.get("job_id")
        if job_id is not None and not isinstance(job_id, str):
            raise ValueError("job_id must be a string")
        return cls(host=host, app=_text(d, "app"), branch=_text(d, "branch"), state=_text(d, "state"),
                   port=None if d.get("port") is None else _port(d["port"]),
                   ports={str(k): _port(v) for k, v in ports.items()}, job_id=job_id)


def _text(d: dict[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _port(value: object) -> int:
    """A TCP port, given as a JSON number or a string of digits."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 5:
        value = int(value)
    if type(value) is not int or not 0 < value < 65536:
        raise ValueError(f"not a TCP port: {value!r:.40}")
    return value

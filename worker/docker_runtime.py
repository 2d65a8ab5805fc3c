"""Docker, through the SDK: build with a streaming log, run, wait until healthy, clean up.

Containers carry `mirage.instance` / `mirage.app` / `mirage.branch` labels and images are
tagged `mirage/<instance>/<app>:<slug>_<sha>`, so whatever Redis forgets can be found again,
nothing is left behind by a teardown, and two installations sharing one engine never touch
each other's containers. (Images get no labels: the classic builder turns each label
into an extra build step that costs a container start.)
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from mirage_git.errors import Unavailable

from .joblog import MAX_LINE

Log = Callable[[str], None]
LABEL_INSTANCE, LABEL_APP, LABEL_BRANCH = "mirage.instance", "mirage.app", "mirage.branch"
LABEL_COMMIT, LABEL_JOB = "mirage.commit", "mirage.job"


class DeployError(Exception):
    """A step failed for a reason the user can act on; the message is one sentence."""


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise Unavailable.docker(exc) from None


def image_tag(instance: str, app: str, slug: str, commit: str) -> str:
    """`mirage/<instance>/<app>:<slug>_<sha>`; slugs never contain '_', so a slug's images are `<slug>_*`."""
    return f"{_image_repo(instance, app)}:{slug}_{commit[:12]}"


def _image_repo(instance: str, app: str) -> str:
    return f"mirage/{instance}/{app}"


def build(client: docker.DockerClient, context: Path, dockerfile: str, tag: str, log: Log) -> str:
    """Build `context` and return the image id, streaming Docker's output into `log`."""
    if not (context / dockerfile).is_file():
        raise DeployError(f"there is no {dockerfile} in the build context")
    image_id = None
    pending = ""
    skipping = False  # the rest of an endless line is dropped, up to its newline
    try:
        for chunk in client.api.build(path=str(context), dockerfile=dockerfile, tag=tag, rm=True, forcerm=True,
                                      pull=False, decode=True):
            if "stream" in chunk:
                text = chunk["stream"]
                if skipping:
                    if "\n" not in text:
                        continue
                    text, skipping = text.split("\n", 1)[1], False
                pending += text
                *lines, pending = pending.split("\n")
                for line in lines:
                    log(line.rstrip("\r"))
                if len(pending) > MAX_LINE:  # output with no line break in sight: never hold it whole
                    log(pending)
                    pending, skipping = "", True
            elif "error" in chunk:
                if pending:
                    log(pending)
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise DeployError(f"docker build failed: {_one_line(detail)}")
            elif "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            elif "status" in chunk:
                log(chunk["status"])
    except docker.errors.APIError as exc:
        raise DeployError(f"docker build failed: {_one_line(exc.explanation or str(exc))}") from None
    if pending:
        log(pending)
    return image_id or client.images.get(tag).id


def container_port(client: docker.DockerClient, image_id: str, configured: int | None) -> int:
    """The app's port: configured, else the image's single EXPOSEd TCP port, else 8080."""
    if configured:
        return configured
    exposed = client.images.get(image_id).attrs.get("Config", {}).get("ExposedPorts") or {}
    tcp = [int(p.split("/")[0]) for p in exposed if p.endswith("/tcp")]
    return tcp[0] if len(tcp) == 1 else 8080


def run(client: docker.DockerClient, image_id: str, name: str, labels: Mapping[str, str],
        env: Mapping[str, str], ports: list[int]) -> tuple[Container, dict[int, int]]:
    """Start a container with each of `ports` published on 127.0.0.1; returns it and its host ports.

    Host ports are picked here rather than left to Docker so that they survive a restart of
    the engine (Docker re-picks dynamic ports on restart, which would strand the route).
    """
    for attempt in range(5):
        bindings = {p: ("127.0.0.1", free_port()) for p in ports}
        try:
            container = client.containers.run(
                image_id, name=name, detach=True, labels=dict(labels), environment=dict(env),
                ports={f"{p}/tcp": b for p, b in bindings.items()},
            )
            return container, {p: b[1] for p, b in bindings.items()}
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            remove(client, name)
            if attempt < 4 and ("port is already allocated" in text or "address already in use" in text):
                continue
            raise DeployError(f"docker could not start the container: {_one_line(text)}") from None
    raise AssertionError("unreachable")


def keep_running(container: Container) -> None:
    """Once healthy, have Docker restart the container after a crash or an engine restart.

    Not before: a container that exits while starting must stay exited, so the deploy can
    say so, rather than be restarted in a loop behind the health check's back.
    """
    container.update(restart_policy={"Name": "unless-stopped"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(client: docker.DockerClient, container: Container, host_port: int, path: str, host: str,
                 timeout: float, log: Log) -> None:
    """Return once `path` answers with a status below 500; fail early if the container dies."""
    deadline = time.monotonic() + timeout
    delay, last_problem, next_inspect = 0.02, "no answer yet", 0.0
    while True:
        now = time.monotonic()
        if now >= next_inspect:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                tail_logs(container, log)
                raise DeployError(f"the container exited with status {code} before answering on {path}")
            next_inspect = now + 1.0
        status = _probe(host_port, path, host)
        if isinstance(status, int):
            if status < 500:
                log(f"health check: {path} answered {status}")
                return
            last_problem = f"answered {status}"
        else:
            last_problem = status
        if time.monotonic() + delay > deadline:
            tail_logs(container, log)
            raise DeployError(f"the app did not answer {path} with a status below 500 within {timeout:g}s "
                              f"({last_problem})")
        time.sleep(delay)
        delay = min(delay * 1.3, 0.5)  # quick at first: most apps answer within a second


def _probe(port: int, path: str, host: str) -> int | str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "mirage-git health check"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return _one_line(str(exc) or type(exc).__name__)
    finally:
        conn.close()


def tail_logs(container: Container, log: Log, lines: int = 30) -> None:
    try:
        out = container.logs(tail=lines).decode("utf-8", "replace").rstrip()
    except docker.errors.DockerException:
        return
    if out:
        log(f"--- last {lines} lines of the container's output ---")
        for line in out.splitlines():
            log(line)


def remove(client: docker.DockerClient, container_id: str | None) -> None:
    """Stop and remove a container; a missing one is fine."""
    if not container_id:
        return
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "is already in progress" not in str(exc):
            raise


def branch_containers(client: docker.DockerClient, instance: str, app: str, branch: str) -> list[dict]:
    """Every container (running or not) of one branch, as the engine's summary dicts."""
    labels = [f"{LABEL_INSTANCE}={instance}", f"{LABEL_APP}={app}", _branch_label(branch)]
    return client.api.containers(all=True, filters={"label": labels})


def remove_image_tag(client: docker.DockerClient, tag: str) -> None:
    """Untag one image; the image itself goes when nothing else uses it."""
    try:
        client.api.remove_image(tag)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "being used by" not in str(exc):
            raise


def remove_branch_images(client: docker.DockerClient, instance: str, app: str, slug: str,
                         keep: str | None = None) -> int:
    """Remove the images built for one branch (by its slug), except `keep`; returns how many went.

    By tag, not by id: branches at the same commit share one image id (and the build cache
    may share it with other images), so removing a tag untags this branch's copy and frees
    the image only when nothing else uses it.
    """
    removed = 0
    prefix = f"{_image_repo(instance, app)}:{slug}_"
    for image in client.api.images(filters={"reference": f"{prefix}*"}):
        if image["Id"] == keep:
            continue
        for tag in [t for t in image.get("RepoTags") or [] if t.startswith(prefix)]:
            remove_image_tag(client, tag)
            removed += 1
    return removed


def _branch_label(branch: str) -> str:
    # Label values are matched verbatim by the engine; JSON-escaping is not needed, '=' is fine.
    return f"{LABEL_BRANCH}={branch}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:400]

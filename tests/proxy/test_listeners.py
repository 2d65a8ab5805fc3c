"""Listeners and processes: `[[proxy.ports]]`, SO_REUSEPORT workers, clean shutdown, a real container upstream."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from .conftest import Client, add_route, free_port, start_proxy, wait_for


def test_extra_listener_routes_to_the_containers_target_port(redis_url, store, tmp_path, upstreams) -> None:
    a, b = upstreams
    extra = free_port()
    pp = start_proxy(tmp_path, redis_url, ports=[(extra, 9229)])
    try:
        add_route(store, pp.port, "debug.dev.localhost", a.port, ports={"9229": b.port})
        add_route(store, pp.port, "plain.dev.localhost", a.port)
        add_route(store, pp.port, "wait.dev.localhost", state="building")
        c = Client(extra)
        try:
            assert c.get("debug.dev.localhost").json()["name"] == "B"  # main port → A, port 9229 → B
            missing = c.get("plain.dev.localhost")
            assert missing.status == 502 and "9229" in missing.body.decode()
            assert c.get("nobody.dev.localhost").status == 404
            assert c.get("wait.dev.localhost").status == 503
        finally:
            c.close()
        assert Client(pp.port).get("debug.dev.localhost").json()["name"] == "A"
    finally:
        pp.stop()


def _listening_sockets(port: int) -> list[str]:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def _pids_connected_to(port: int) -> set[int]:
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"dport = :{port}"],
                         capture_output=True, text=True, check=True).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def test_two_workers_share_the_listener_with_reuseport(redis_url, store, tmp_path, upstreams) -> None:
    a, _ = upstreams
    pp = start_proxy(tmp_path, redis_url, workers=2)
    try:
        add_route(store, pp.port, "multi.dev.localhost", a.port)
        assert len(_listening_sockets(pp.port)) == 2  # one SO_REUSEPORT socket per worker
        for _ in range(40):  # new connections: the kernel spreads them over both sockets
            c = Client(pp.port)
            assert c.get("multi.dev.localhost").status == 200
            c.close()
        workers = _pids_connected_to(a.port) - {pp.proc.pid}
        children = {int(p) for p in Path(f"/proc/{pp.proc.pid}/task/{pp.proc.pid}/children").read_text().split()}
        assert workers == children and len(children) == 2, (workers, children)
        assert pp.stop() == 0
    finally:
        pp.stop()


def test_sigterm_stops_cleanly_after_answering_requests_in_flight(redis_url, store, tmp_path, upstreams) -> None:
    a, _ = upstreams
    pp = start_proxy(tmp_path, redis_url)
    try:
        add_route(store, pp.port, "bye.dev.localhost", a.port)
        c = Client(pp.port)
        c.send(b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: bye.dev.localhost\r\n\r\n")
        time.sleep(0.1)
        pp.proc.send_signal(signal.SIGTERM)
        assert c.read().status == 200  # the request in flight is still answered
        assert pp.proc.wait(10) == 0
        assert "proxy stopping" in pp.logs()
    finally:
        pp.stop()


@pytest.fixture(scope="module")
def busybox_container():
    """A real container upstream: static busybox httpd in a scratch image, port published on 127.0.0.1."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure means no usable Docker engine here
        pytest.skip(f"no Docker engine: {exc}")
    tag = f"mirage-proxytest-busybox-{uuid.uuid4().hex[:8]}"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", b'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n'
                          b'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n')
        add("busybox", Path("/bin/busybox").read_bytes(), 0o755)
        add("www/index.html", b"hello from a container\n")
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    container = client.containers.run(tag, detach=True, name=tag, ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        container.reload()
        port = int(container.ports["8080/tcp"][0]["HostPort"])
        yield port
    finally:
        container.remove(force=True)
        client.images.remove(tag, force=True)


def test_forwards_to_a_real_container(proxy, store, busybox_container: int) -> None:
    add_route(store, proxy.port, "boxed.dev.localhost", busybox_container, expect=404)  # "/echo" is not there
    c = proxy.client()
    try:
        wait_for(lambda: Client(proxy.port).get("boxed.dev.localhost", "/").status == 200, timeout=10)
        page = c.get("boxed.dev.localhost", "/index.html")
    finally:
        c.close()
    assert page.status == 200 and page.body == b"hello from a container\n"

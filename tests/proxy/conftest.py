"""Fixtures for the proxy tests: real sockets, a real Redis, the proxy as a subprocess.

The proxy runs as `python -m mirage_git.proxy --config FILE`, exactly as in production,
so tests see its real process (RSS, workers, signals) and nothing is shared in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mirage_git.models import Route
from mirage_git.store import Store

from .upstream import Upstream

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def json(self) -> dict:
        return json.loads(self.body)


class Client:
    """A raw HTTP/1.1 client on one socket: send any bytes, read responses one by one."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, host: str, path: str = "/echo", headers: str = "", method: str = "GET") -> Response:
        self.send(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        return self.read(head_only=method == "HEAD")

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            if not self._fill():
                raise ConnectionError("connection closed mid-response")
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("connection closed mid-body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self, head_only: bool = False) -> Response:
        """Read exactly one response (bytes after it stay buffered for the next call)."""
        if not self.buf and not self._fill():
            raise ConnectionError("connection closed before a response")
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        resp = Response(status, headers, b"")
        if head_only or status < 200 or status in (204, 304):
            return resp
        if (resp.header("transfer-encoding") or "").lower().endswith("chunked"):
            parts = []
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                parts.append(self._exactly(size + 2)[:-2])
            while self._until(b"\r\n"):  # trailers
                pass
            resp.body = b"".join(parts)
        elif resp.header("content-length") is not None:
            resp.body = self._exactly(int(resp.header("content-length")))
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within `timeout` (any unread bytes are skipped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


@dataclass
class ProxyProcess:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    config: Path
    extra_ports: list[int] = field(default_factory=list)

    def client(self, port: int | None = None) -> Client:
        return Client(port or self.port)

    def logs(self) -> str:
        return self.log.read_text()

    def rss_peak_kb(self) -> int:
        return _status_kb(self.proc.pid, "VmHWM")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def start_proxy(tmp: Path, redis_url: str, *, extra: str = "", ports: list[tuple[int, int]] = (),
                workers: int = 1, connect_timeout: float = 2.0, idle_timeout: float = 30.0,
                native: bool = True) -> ProxyProcess:
    """Start `python -m mirage_git.proxy` with a config written to `tmp`, once it accepts connections.

    `native=False` runs the hot path as pure Python (MIRAGE_PROXY_NATIVE=0), as it runs wherever
    `mirage-git build-proxy` has not been run.
    """
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    listeners = "".join(f'[[proxy.ports]]\nlisten = "127.0.0.1:{p}"\ntarget = {t}\n' for p, t in ports)
    config = tmp / "mirage.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\ndata_dir = "{tmp}/data"\n{extra}\n'
        f'[proxy]\nlisten = "127.0.0.1:{port}"\nworkers = {workers}\n'
        f"connect_timeout = {connect_timeout}\nidle_timeout = {idle_timeout}\n{listeners}\n"
        f'[web]\npublic_url = "http://mirage.test:8080"\n'
        f'[apps.demo]\nrepo = "{tmp}"\n'
    )
    log = tmp / "proxy.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MIRAGE_PROXY_NATIVE": "1" if native else "0"}
    proc = subprocess.Popen([sys.executable, "-m", "mirage_git.proxy", "--config", str(config)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    pp = ProxyProcess(port, proc, log, config, [p for p, _ in ports])
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                pp.stop()
                raise RuntimeError(f"proxy did not listen:\n{log.read_text()}") from None
            time.sleep(0.05)
    return pp


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    with Upstream("A") as a, Upstream("B") as b:
        yield a, b


@pytest.fixture(scope="module", params=["native", "python"])
def proxy(request: pytest.FixtureRequest, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """One proxy per test module (most tests only add routes), once with each build of the hot path."""
    pp = start_proxy(tmp_path_factory.mktemp("proxy"), redis_url, native=request.param == "native")
    yield pp
    pp.stop()


def wait_for(check: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def add_route(store: Store, proxy_port: int, host: str, port: int | None = None, *, state: str = "live",
              ports: dict[str, int] | None = None, job_id: str | None = "job-1", expect: int | None = None) -> Route:
    """Write a route, and wait until the proxy answers `host` with `expect` (default: by its state)."""
    route = Route(host=host, app="demo", branch=host.split(".")[0], state=state, port=port, ports=ports or {},
                  job_id=job_id)
    store.set_route(route)
    want = expect or (200 if state == "live" else 503)

    def answered() -> bool:
        c = Client(proxy_port)
        try:
            return c.get(host).status == want
        finally:
            c.close()

    wait_for(answered)
    return route

"""The proxy under hostile clients: a real `mirage-git proxy` process, a real Redis, a keep-alive upstream.

Each one was a real bug: request smuggling through `Connection`, an endless head, a client
that reads nothing, a head that trickles in (slowloris).
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirage_git.models import Route
from mirage_git.proxy import headers as h
from mirage_git.store import Store

HOST = "up.px.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """A keep-alive HTTP/1.1 server that records every request line it parses (as a container would)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                self.requests.append(lines[0])
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                body = b"ok:" + lines[0].split(b" ")[1]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[int, Upstream, int]]:
    """(proxy port, upstream, proxy pid): `HOST` routes to the upstream; idle_timeout is 1 s."""
    url = f"{redis_url}?db=7"
    store = Store.from_url(url)
    store.r.flushdb()
    upstream = Upstream()
    store.set_route(Route(HOST, "px", "main", "live", port=upstream.port, job_id="j"))
    root = tmp_path_factory.mktemp("proxy")
    port = free_port()
    config = root / "mirage.toml"
    config.write_text(f'redis_url = "{url}"\ndomain = "px.test"\n[proxy]\nlisten = "127.0.0.1:{port}"\n'
                      f'idle_timeout = 1\n[apps.px]\nrepo = "/nonexistent"\n')
    proc = subprocess.Popen([sys.executable, "-m", "mirage_git", "--config", str(config), "proxy"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        assert request(port, b"GET /ready HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n").endswith(b"ok:/ready")
        yield port, upstream, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        store.r.flushdb()


def request(port: int, raw: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(TimeoutError):
            while chunk := s.recv(65536):
                out += chunk
        return out


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


# --- request smuggling through the Connection header -------------------------------------------


@pytest.mark.parametrize("framing", [b"Content-Length: 5", b"Transfer-Encoding: chunked"])
def test_connection_options_cannot_drop_the_request_framing(framing: bytes):
    name = framing.split(b":")[0]
    head = b"POST / HTTP/1.1\r\nHost: a.test\r\nConnection: " + name.lower() + b"\r\n" + framing + b"\r\n\r\n"
    req = h.request(head, b"127.0.0.1")
    assert b"\r\n" + framing + b"\r\n" in req.head, req.head


def test_connection_options_cannot_drop_the_response_framing():
    head = b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n"
    new_head, framing, _ = h.response(head, bodyless=False, keep_alive=True, upgrade=False)
    assert b"\r\nContent-Length: 2\r\n" in new_head and framing == h.LENGTH, new_head


def test_a_body_cannot_smuggle_a_second_request_to_the_upstream(proxy):
    """`Connection: content-length` made the body reach the upstream as a request of its own."""
    port, upstream, _ = proxy
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
    before = len(upstream.requests)
    request(port, b"POST /form HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nConnection: content-length\r\n"
                  b"Content-Length: %d\r\n\r\n%b" % (len(smuggled), smuggled))
    time.sleep(0.5)
    assert b"POST /form HTTP/1.1" in upstream.requests[before:], "the request itself must arrive"
    assert b"GET /smuggled HTTP/1.1" not in upstream.requests[before:], upstream.requests[before:]


# --- resources a single client can take --------------------------------------------------------
def test_an_endless_request_head_is_refused(proxy):
    port, _, _ = proxy
    line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n")
        with contextlib.suppress(OSError):
            for _ in range((8 << 20) // len(line)):  # 8 MB of headers, never ending the head
                s.sendall(line)
        with contextlib.suppress(OSError):
            answer = s.recv(65536)
    assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer[:100]


def test_a_client_that_reads_nothing_cannot_grow_the_proxy(proxy):
    port, _, pid = proxy
    start = rss_kb(pid)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with contextlib.suppress(OSError):
            for i in range(2000):  # 200,000 pipelined requests (6 MB), each for another unknown host
                s.sendall(b"".join(b"GET / HTTP/1.1\r\nHost: h%d.px.test\r\n\r\n" % (i * 100 + j)
                                   for j in range(100)))
        grown, last, deadline = 0, -1, time.monotonic() + 30
        while time.monotonic() < deadline and grown != last:  # until the proxy has read it all
            time.sleep(1)
            last, grown = grown, rss_kb(pid) - start
    assert grown < 64 * 1024, f"the proxy grew by {grown // 1024} MB for one client that reads nothing"


def _closed_while_dripping(port: int, first: bytes, drip: bytes, seconds: float = 8) -> bool:
    """Send `first`, then `drip` every 0.3 s: does the proxy answer or close within `seconds`?"""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(first)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                s.sendall(drip)
            except OSError:
                return True
            if select.select([s], [], [], 0.3)[0]:  # an answer (408) or the close
                return True
    return False


def test_a_request_head_that_trickles_in_is_timed_out(proxy):
    port, _, _ = proxy  # idle_timeout = 1 s
    # One more byte, again and again, of a header line that never ends.
    assert _closed_while_dripping(port, b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n", b"X"), \
        "the proxy kept a never-ending request head open for 8 s with idle_timeout = 1 s"


def test_empty_lines_alone_do_not_keep_a_connection_open(proxy):
    port, _, _ = proxy  # idle_timeout = 1 s
    # "Empty lines before a request", forever.
    assert _closed_while_dripping(port, b"", b"\r\n"), \
        "the proxy kept a connection sending only empty lines open for 8 s with idle_timeout = 1 s"


def test_a_request_head_over_the_limit_in_one_read_is_refused(proxy):
    port, upstream, _ = proxy
    head = b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert not any(b"X-Big" in r for r in upstream.requests)

"""The proxy's own answers: 404/502/503/504 pages, the idle timeout, and refusing smuggling attempts."""

from __future__ import annotations

import socket
import time

import pytest

from .conftest import ProxyProcess, add_route, free_port, start_proxy


def test_unknown_host_gets_404_listing_live_envs(proxy: ProxyProcess, store, upstreams) -> None:
    a, _ = upstreams
    add_route(store, proxy.port, "live-one.dev.localhost", a.port)
    add_route(store, proxy.port, "cooking.dev.localhost", state="building")
    c = proxy.client()
    try:
        page = c.get("nobody.dev.localhost")
        again = c.get("live-one.dev.localhost")  # a page does not end the keep-alive connection
    finally:
        c.close()
    assert page.status == 404 and page.header("content-type").startswith("text/html")
    html = page.body.decode()
    assert f'href="http://live-one.dev.localhost:{proxy.port}/"' in html
    assert "cooking" not in html and "nobody.dev.localhost" in html
    assert again.status == 200


def test_building_env_gets_self_refreshing_503_with_log_link(proxy, store) -> None:
    add_route(store, proxy.port, "wip.dev.localhost", state="building", job_id="job-42")
    c = proxy.client()
    try:
        page = c.get("wip.dev.localhost")
    finally:
        c.close()
    html = page.body.decode()
    assert page.status == 503
    assert 'href="http://mirage.test:8080/jobs/job-42"' in html
    assert '<meta http-equiv="refresh"' in html


def test_failed_first_deploy_gets_503_saying_so(proxy, store) -> None:
    add_route(store, proxy.port, "broken.dev.localhost", state="failed", job_id="job-7")
    c = proxy.client()
    try:
        page = c.get("broken.dev.localhost")
    finally:
        c.close()
    html = page.body.decode()
    assert page.status == 503 and "failed" in html and "http://mirage.test:8080/jobs/job-7" in html
    assert "refresh" not in html


def test_refused_upstream_gets_502(proxy, store) -> None:
    dead = free_port()  # nothing listens there
    add_route(store, proxy.port, "dead.dev.localhost", dead, expect=502)
    c = proxy.client()
    try:
        page = c.get("dead.dev.localhost")
        assert page.status == 502 and "refused" in page.body.decode()
    finally:
        c.close()


def test_page_html_escapes_what_it_shows(proxy, store) -> None:
    c = proxy.client()
    try:
        page = c.get("it's&(odd).dev.localhost")  # sub-delims are valid in a host name, and HTML-special
    finally:
        c.close()
    assert page.status == 404 and b"it's&" not in page.body and b"it&#x27;s&amp;(odd)" in page.body
    c = proxy.client()
    try:
        page = c.get("<script>x</script>")  # not a host name at all
    finally:
        c.close()
    assert page.status == 400 and b"<script>" not in page.body


@pytest.fixture(scope="module")
def strict_proxy(redis_url: str, tmp_path_factory) -> ProxyProcess:
    """A proxy with short timeouts: 0.3 s to connect, 0.6 s idle."""
    pp = start_proxy(tmp_path_factory.mktemp("strict"), redis_url, connect_timeout=0.3, idle_timeout=0.6)
    yield pp
    pp.stop()


def test_connect_timeout_gets_504(strict_proxy: ProxyProcess, store) -> None:
    # A listener that never accepts, with its backlog full: further SYNs go unanswered.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(hang.getsockname())
        fillers.append(s)
    time.sleep(0.1)
    try:
        add_route(store, strict_proxy.port, "slow.dev.localhost", hang.getsockname()[1], expect=504)
        c = strict_proxy.client()
        started = time.monotonic()
        page = c.get("slow.dev.localhost")
        took = time.monotonic() - started
        c.close()
    finally:
        for s in fillers:
            s.close()
        hang.close()
    assert page.status == 504 and "0.3" in page.body.decode()
    assert 0.25 <= took < 5


def test_idle_connections_are_closed_after_idle_timeout(strict_proxy: ProxyProcess, store, upstreams) -> None:
    a, _ = upstreams
    add_route(store, strict_proxy.port, "idle.dev.localhost", a.port)
    busy, idle = strict_proxy.client(), strict_proxy.client()
    try:
        assert idle.get("idle.dev.localhost").status == 200
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # a connection in use outlives the idle timeout
            assert busy.get("idle.dev.localhost").status == 200
            time.sleep(0.1)
        assert idle.closed(timeout=3)
        assert busy.get("idle.dev.localhost").status == 200
    finally:
        busy.close()
        idle.close()


SMUGGLING = {
    "content-length and chunked": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 6\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
    "two different content-lengths": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\n"
                                     b"Content-Length: 6\r\n\r\n",
    "duplicate content-length": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    "invalid content-length": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5x\r\n\r\n",
    "signed content-length": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: +5\r\n\r\n",
    "chunked not last": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    "unknown coding": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: xchunked\r\n\r\n",
    "space before colon": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length : 5\r\n\r\n",
    "obsolete line folding": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 0\r\n 5\r\n\r\n",
    "bad chunk size": b"POST /echo HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",
    "two hosts": b"GET /echo HTTP/1.1\r\nHost: {h}\r\nHost: other.dev.localhost\r\n\r\n",
    "no host": b"GET /echo HTTP/1.1\r\n\r\n",
    "bare LF": b"GET /echo HTTP/1.1\nHost: {h}\n\n",
}


@pytest.mark.parametrize("payload", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_ambiguous_requests_get_400_and_the_connection_closes(proxy, store, upstreams, payload: bytes) -> None:
    a, _ = upstreams
    add_route(store, proxy.port, "target.dev.localhost", a.port)
    before = a.requests
    c = proxy.client()
    try:
        c.send(payload.replace(b"{h}", b"target.dev.localhost")
               + b"GET /smuggled HTTP/1.1\r\nHost: target.dev.localhost\r\n\r\n")
        answer = c.read()
        assert answer.status == 400 and answer.header("connection") == "close"
        assert c.closed()
    finally:
        c.close()
    time.sleep(0.1)
    assert a.requests == before
    assert not any(s["target"] == "/smuggled" for s in a.seen)

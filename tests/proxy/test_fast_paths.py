"""Hostile and unusual input against the request and response fast paths (`ClientConnection._fast`,
`UpstreamConnection._head`) and the upstream connection a client keeps between its requests.

The upstream here is raw: it records every head exactly as it arrived and answers from a script,
so a test can see what the proxy really sent and make the upstream misbehave at a precise moment.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from mirage_git.models import Route

from .conftest import ProxyProcess, add_route

Script = Callable[[int, int, bytes], "tuple[bytes | None, bool]"]


def echo(conn: int, index: int, head: bytes) -> tuple[bytes | None, bool]:
    """The default script: the head as it arrived, as the body."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(head), head), False


class RawUpstream:
    """A keep-alive upstream on raw sockets. `script(conn, index, head)` gives (answer or None, close after)."""

    def __init__(self, script: Script = echo) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        self.leftover: list[bytes] = []  # bytes a connection held when it closed: half a request, or garbage
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf, index = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        if buf.strip():
                            self.leftover.append(buf)
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                head += b"\r\n\r\n"
                self.heads.append(head)
                answer, close = self.script(number, index, head)
                index += 1
                if answer is not None:
                    conn.sendall(answer)
                if close:
                    return


_HOSTS = itertools.count()


@contextmanager
def routed(store, proxy: ProxyProcess, name: str, script: Script = echo) -> Iterator[tuple[str, RawUpstream]]:
    """A `RawUpstream` running `script`, routed at a host of its own, closed afterwards.

    A host of its own: with a reused name, add_route could be satisfied by the last test's
    upstream, still answering on a pooled connection, before the proxy has seen the new route.
    The heads add_route's probe left are cleared.
    """
    up = RawUpstream(script)
    host = f"{name}-{next(_HOSTS)}.dev.localhost"
    try:
        add_route(store, proxy.port, host, up.port)
        up.heads.clear()
        yield host, up
    finally:
        up.close()


@pytest.fixture
def raw(store, proxy: ProxyProcess) -> Iterator[tuple[str, RawUpstream]]:
    with routed(store, proxy, "raw") as pair:
        yield pair


def exchange(proxy: ProxyProcess, raw_request: bytes, n: int = 1) -> list:
    c = proxy.client()
    try:
        c.send(raw_request)
        return [c.read() for _ in range(n)]
    finally:
        c.close()


# --- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("trailer", [b"\r\n", b"\r\n\r\n", b"\n\n\r\n\r\n", b"\r\r\n\r\n"])
def test_stray_line_ends_after_a_request_do_not_cut_the_forwarded_headers_off(proxy, raw, trailer) -> None:
    """llhttp skips line ends after a message, so `_fast` took `GET ...\\r\\n\\r\\n\\r\\n` for one request and
    appended X-Forwarded-* after a blank line: the upstream got a request without them, then garbage."""
    host, up = raw
    (resp,) = exchange(proxy, b"GET /x HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n" + trailer)
    time.sleep(0.2)
    assert resp.status == 200
    assert b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in resp.body, resp.body
    assert resp.body.endswith(b"\r\nX-Forwarded-Host: " + host.encode() + b"\r\n\r\n"), resp.body
    assert len(up.heads) == 1 and not up.leftover, (up.heads, up.leftover)


@pytest.mark.parametrize("before", [b"\n", b"\r", b"\r\n\r\n", b"\n\r\n"])
def test_empty_lines_before_a_request_are_dropped_not_forwarded(proxy, store, before) -> None:
    """A HEAD behind a stray LF was once not seen as HEAD: the proxy waited for a body that never came."""
    def script(conn: int, index: int, head: bytes) -> tuple[bytes | None, bool]:
        if head.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", False  # no body: it answers a HEAD
        return echo(conn, index, head)

    with routed(store, proxy, "lines", script) as (host, up):
        c = proxy.client()
        try:
            c.send(before + b"HEAD /h HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
            head = c.read(head_only=True)
            c.send(b"GET /after HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
            after = c.read()
        finally:
            c.close()
    assert head.status == 200 and after.status == 200 and after.body.startswith(b"GET /after ")
    assert [h.split(b" ")[0] for h in up.heads] == [b"HEAD", b"GET"], up.heads  # no line ends in front


@pytest.mark.parametrize("coding", [b"identity, chunked", b"gzip, chunked", b"chunked, chunked"])
def test_a_request_transfer_coding_other_than_chunked_is_refused(proxy, raw, coding) -> None:
    host, up = raw
    c = proxy.client()
    try:
        c.send(b"POST /c HTTP/1.1\r\nHost: " + host.encode() + b"\r\nTransfer-Encoding: " + coding
               + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        answer = c.read()
        assert c.closed()
    finally:
        c.close()
    assert answer.status == 400 and up.heads == []


@pytest.mark.parametrize("name", [b"X-Forwarded-For", b"x-forwarded-for", b"X-FORWARDED-FOR", b"x-FoRwArDeD-fOr"])
def test_a_client_x_forwarded_for_in_any_casing_is_appended_to(proxy, raw, name) -> None:
    host, _ = raw
    (resp,) = exchange(proxy, b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + name + b": 6.6.6.6\r\n"
                              b"X-FORWARDED-HOST: evil\r\nx-forwarded-PROTO: https\r\n\r\n")
    head = resp.body.lower()
    assert head.count(b"\r\nx-forwarded-for:") == 1 and b"\r\nx-forwarded-for: 6.6.6.6, 127.0.0.1\r\n" in head
    assert b"evil" not in head and b"https" not in head, head


@pytest.mark.parametrize("header", [b"CONNECTION: close", b"Connection: Close", b"connection:close",
                                    b"Connection: keep-alive, close"])
def test_connection_close_in_any_casing_is_honoured_and_not_forwarded(proxy, raw, header) -> None:
    host, _ = raw
    c = proxy.client()
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + header + b"\r\n\r\n")
        resp = c.read()
        assert c.closed()
    finally:
        c.close()
    assert resp.status == 200 and resp.header("connection") == "close"
    assert b"close" not in resp.body.lower(), resp.body


@pytest.mark.parametrize("header", [b"KEEP-ALIVE: timeout=5", b"te: trailers", b"TRAILER: X-T", b"UPGRADE: h2c",
                                    b"Proxy-Authorization: x", b"PROXY-CONNECTION: keep-alive"])
def test_request_hop_by_hop_headers_in_any_casing_are_dropped(proxy, raw, header) -> None:
    host, _ = raw
    (resp,) = exchange(proxy, b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + header + b"\r\n\r\n")
    assert resp.status == 200 and header.split(b":")[0].lower() not in resp.body.lower(), resp.body


@pytest.mark.parametrize("headers", [b"Connection: TE\r\nTE: trailers", b"Connection: te, close2\r\nTE: trailers",
                                     b"Connection: Proxy-Authorization\r\nProxy-Authorization: x",
                                     b"Connection: x-forwarded-host\r\nX-Forwarded-Host: evil"])
def test_a_hop_by_hop_header_that_connection_also_names_is_dropped_once(proxy, raw, headers) -> None:
    """Cut twice (hop-by-hop itself, and named in Connection): the compiled build once crashed on it."""
    host, _ = raw
    (resp,) = exchange(proxy, b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + headers + b"\r\n\r\n")
    assert resp.status == 200, resp
    name = headers.split(b"\r\n")[1].split(b":")[0].lower()
    forwarded = resp.body.lower()
    assert b"\r\n" + name + b": " + headers.split(b": ")[-1].lower() not in forwarded, resp.body
    assert b"\r\nconnection:" not in forwarded and b"\r\nhost: " + host.encode() in forwarded, resp.body


@pytest.mark.parametrize("size", [b"-6", b"-52", b"0x5", b"+5", b"5_0"])
def test_a_chunk_size_that_is_not_plain_hex_is_refused_not_looped_on(proxy, raw, size) -> None:
    """int(x, 16) takes all of these; a negative size once sent the body scanner back over its own line forever."""
    host, _ = raw
    (resp,) = exchange(proxy, b"POST / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + size + b"\r\nhello\r\n0\r\n\r\n")
    assert resp.status == 400, resp
    (after,) = exchange(proxy, b"GET /after HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
    assert after.status == 200  # the worker is not stuck


def test_a_connection_token_that_is_no_header_name_cannot_cut_the_host(proxy, raw) -> None:
    host, _ = raw
    (resp,) = exchange(proxy, b"GET /h HTTP/1.1\r\nConnection: host:" + host.encode() + b"\r\nHost:" + host.encode()
                       + b"\r\n\r\n")
    assert resp.status == 200 and b"\r\nHost:" + host.encode() + b"\r\n" in resp.body, resp.body


def test_an_upstream_connection_that_served_http10_is_not_reused(proxy, store) -> None:
    """HTTP/1.0 goes upstream without keep-alive, so the upstream may treat the connection as done."""
    served_http10: set[int] = set()

    def script(conn: int, index: int, head: bytes) -> tuple[bytes | None, bool]:
        if head.startswith(b"GET /old HTTP/1.0"):
            served_http10.add(conn)
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False  # and it keeps the socket open
        if conn in served_http10:
            return None, True  # the next request on it is dropped unanswered
        return echo(conn, index, head)

    with routed(store, proxy, "http10", script) as (host, _):
        (old,) = exchange(proxy, b"GET /old HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
        (new,) = exchange(proxy, b"POST /new HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Length: 0\r\n\r\n")
    assert old.status == 200 and old.body == b"ok"
    assert new.status == 200 and new.body.startswith(b"POST /new "), new  # not a 502 from a reused connection


def test_a_good_request_then_a_malformed_one_in_the_same_read(proxy, raw) -> None:
    host, up = raw
    c = proxy.client()
    try:
        c.send(b"GET /good HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"
               b"GET /bad HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        first, second = c.read(), c.read()
    finally:
        c.close()
    assert first.status == 200 and first.body.startswith(b"GET /good ")
    assert second.status == 400
    assert [head.split(b" ")[1] for head in up.heads] == [b"/good"]


# --- responses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [b"CONNECTION: x-hop", b"KEEP-ALIVE: timeout=5", b"Proxy-Authenticate: Basic",
                                    b"TRAILER: X-T", b"Upgrade: h2c", b"connection: keep-alive, X-Hop",
                                    b"Connection: te, x-hop\r\nTE: trailers",  # TE is cut twice
                                    b"Proxy-Authenticate: Basic\r\nConnection: Proxy-Authenticate"])
def test_response_hop_by_hop_headers_in_any_casing_are_dropped(proxy, store, header) -> None:
    def script(conn: int, index: int, head: bytes) -> tuple[bytes, bool]:
        return b"HTTP/1.1 200 OK\r\n" + header + b"\r\nX-Hop: secret\r\nContent-Length: 2\r\n\r\nok", False

    with routed(store, proxy, "hop", script) as (host, _):
        c = proxy.client()
        try:
            resp = c.get(host)
            again = c.get(host)
        finally:
            c.close()
    assert resp.body == b"ok" and again.body == b"ok"
    name = header.split(b":")[0].decode()
    assert resp.header(name) is None, resp.headers
    if b"x-hop" in header.lower():
        assert resp.header("x-hop") is None, resp.headers


def test_hop_by_hop_lookalikes_in_a_response_body_are_body(proxy, store) -> None:
    """The response scan stops where the head ends: header-like lines after it are passed on untouched."""
    body = b"\nConnection: close\r\nKeep-Alive: 1\r\n\nUpgrade: x\r\n\r\n"

    def script(conn: int, index: int, head: bytes) -> tuple[bytes, bool]:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body, False

    with routed(store, proxy, "lookalike", script) as (host, _):
        c = proxy.client()
        try:
            first, second = c.get(host), c.get(host)
        finally:
            c.close()
    assert first.body == body and second.body == body
    assert first.header("connection") is None and second.status == 200


def test_an_upstream_connection_close_is_not_reused_even_if_the_socket_lingers(proxy, store) -> None:
    """The upstream says `Connection: close` and closes a little later: no request may be sent after it."""
    def script(conn: int, index: int, head: bytes) -> tuple[bytes, bool]:
        if head.startswith(b"GET /probe"):
            return echo(conn, index, head)
        time.sleep(0.05) if index else None
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False

    with routed(store, proxy, "linger", script) as (host, _):
        c = proxy.client()
        try:
            answers = [c.get(host, "/x") for _ in range(3)]
        finally:
            c.close()
    assert [(r.status, r.body) for r in answers] == [(200, b"ok")] * 3


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_status_with_content_length_does_not_swallow_the_next_response(proxy, store, status) -> None:
    def script(conn: int, index: int, head: bytes) -> tuple[bytes, bool]:
        if head.startswith(b"GET /empty"):
            return b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status, False
        return echo(conn, index, head)

    with routed(store, proxy, "empty", script) as (host, _):
        c = proxy.client()
        try:
            first = c.get(host, "/empty")
            second = c.get(host, "/next")
        finally:
            c.close()
    assert first.status == status and second.status == 200 and second.body.startswith(b"GET /next ")


def test_a_kept_upstream_connection_closed_on_the_next_request_is_retried(proxy, store) -> None:
    """The upstream's keep-alive timer fires just as the next request arrives: a GET is resent once."""
    def script(conn: int, index: int, head: bytes) -> tuple[bytes | None, bool]:
        if head.startswith(b"GET /probe") or conn != 2 or index == 0:
            return echo(conn, index, head)
        return None, True  # the second request on the client's kept connection: closed unanswered

    with routed(store, proxy, "stale", script) as (host, _):  # the probe uses connection 1, then pools it
        a, b = proxy.client(), proxy.client()
        try:
            assert a.get(host, "/probe").status == 200  # a keeps connection 1
            assert b.get(host, "/one").status == 200  # b opens connection 2 and keeps it
            second = b.get(host, "/two")
        finally:
            a.close()
            b.close()
    assert second.status == 200 and second.body.startswith(b"GET /two "), second


@pytest.mark.parametrize("request_head", [
    b"POST /two HTTP/1.1\r\nHost: {h}\r\n\r\n",  # the fast path
    b"PATCH /two HTTP/1.1\r\nHost: {h}\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",  # the general one
])
def test_a_non_idempotent_request_on_a_connection_that_dies_is_never_resent(proxy, store, request_head) -> None:
    """The upstream may have acted on a POST it never answered: the client gets 502, the upstream one copy."""
    def script(conn: int, index: int, head: bytes) -> tuple[bytes | None, bool]:
        if index == 0:
            return echo(conn, index, head)
        return None, True  # read, perhaps acted on, and closed unanswered

    with routed(store, proxy, "dies", script) as (host, up):
        c = proxy.client()
        try:
            assert c.get(host, "/one").status == 200
            c.send(request_head.replace(b"{h}", host.encode()))
            second = c.read()
        finally:
            c.close()
    assert second.status == 502, second
    assert sum(head.startswith(request_head.split(b" ")[0] + b" /two ") for head in up.heads) == 1, up.heads


def test_a_route_moving_to_another_port_between_two_requests_is_followed(proxy, store) -> None:
    one, two = RawUpstream(lambda c, i, head: (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none", False)), \
        RawUpstream(lambda c, i, head: (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo", False))
    try:
        host = "moving.dev.localhost"
        add_route(store, proxy.port, host, one.port)
        c = proxy.client()
        try:
            assert c.get(host).body == b"one"
            # Not add_route: `one` answers 200 too, so it could return before the proxy saw the change.
            store.set_route(Route(host, "demo", "moving", "live", port=two.port))
            deadline = time.monotonic() + 5
            while c.get(host).body != b"two":  # the client's kept upstream connection must not pin it to `one`
                assert time.monotonic() < deadline, "the kept connection still goes to the old port"
            store.delete_route(host)
            time.sleep(0.3)
            gone = c.get(host)
        finally:
            c.close()
    finally:
        one.close()
        two.close()
    assert gone.status == 404


ALONE = {  # each alone in one read, so `_fast` sees it first (test_pages sends these with a request after)
    "two hosts": b"GET / HTTP/1.1\r\nHost: {h}\r\nHost: other.dev.localhost\r\n\r\n",
    "two hosts, odd casing": b"GET / HTTP/1.1\r\nhost: {h}\r\nHOST: other.dev.localhost\r\n\r\n",
    "no host": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "content-length and chunked": b"GET / HTTP/1.1\r\nHost: {h}\r\nCONTENT-LENGTH: 0\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding : chunked\r\n\r\n",
    "tab before colon": b"GET / HTTP/1.1\r\nHost: {h}\r\nContent-Length\t: 0\r\n\r\n",
    "folded host": b"GET / HTTP/1.1\r\nHost: {h}\r\n other.dev.localhost\r\n\r\n",
    "bare LF in a header": b"GET / HTTP/1.1\r\nHost: {h}\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    "bare CR in a header": b"GET / HTTP/1.1\r\nHost: {h}\rX-Forwarded-For: 6.6.6.6\r\n\r\n",
    # llhttp takes up to 2**64-1; a server that reads a signed 64-bit length would frame the body otherwise
    "HTTP/2.0 request line": b"GET / HTTP/2.0\r\nHost: {h}\r\n\r\n",  # llhttp takes it; it would go upstream as is
    "HTTP/1.2 request line": b"GET / HTTP/1.2\r\nHost: {h}\r\n\r\n",
    "length over 2**63-1": b"POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: 9223372036854775808\r\n\r\n",
}


@pytest.mark.parametrize("payload", ALONE.values(), ids=ALONE.keys())
def test_a_refused_request_alone_in_its_read_gets_400(proxy, raw, payload) -> None:
    host, up = raw
    c = proxy.client()
    try:
        c.send(payload.replace(b"{h}", host.encode()))
        answer = c.read()
        assert c.closed()
    finally:
        c.close()
    assert answer.status == 400 and answer.header("connection") == "close"
    assert up.heads == []


@pytest.mark.parametrize(("line", "forwarded"), [
    (b"OPTIONS * HTTP/1.1", b"OPTIONS * HTTP/1.1"),
    (b"GET http://{h}/abs HTTP/1.1", b"GET /abs HTTP/1.1"),
    (b"GET http://{h}?q=1 HTTP/1.1", b"GET /?q=1 HTTP/1.1"),  # no path: the query still ends the authority
    (b"GET http://{h} HTTP/1.1", b"GET / HTTP/1.1"),
])
def test_unusual_request_targets_are_forwarded_in_origin_or_asterisk_form(proxy, raw, line, forwarded) -> None:
    host, _ = raw
    (resp,) = exchange(proxy, line.replace(b"{h}", host.encode()) + b"\r\nHost: " + host.encode() + b"\r\n\r\n")
    assert resp.status == 200
    assert resp.body.split(b"\r\n")[0] == forwarded, resp.body
    assert resp.body.lower().count(b"\r\nhost:") == 1


def test_a_body_until_close_without_connection_close_closes_the_client_too(proxy, store) -> None:
    def script(conn: int, index: int, head: bytes) -> tuple[bytes, bool]:
        if head.startswith(b"GET /probe"):
            return echo(conn, index, head)
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"y" * 3000, True

    with routed(store, proxy, "eof", script) as (host, _):
        c = proxy.client()
        try:
            c.send(b"GET /x HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
            resp = c.read()  # reads to the close
        finally:
            c.close()
    assert resp.header("connection") == "close" and resp.body == b"y" * 3000


def test_http10_keep_alive_request_is_answered_and_closed(proxy, raw) -> None:
    host, _ = raw
    c = proxy.client()
    try:
        c.send(b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\nConnection: keep-alive\r\n\r\n")
        resp = c.read()
        assert c.closed()
    finally:
        c.close()
    assert resp.status == 200 and resp.header("connection") == "close"
    assert b"\r\nConnection: keep-alive" not in resp.body, resp.body


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\nX-A: b\r\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\n\n"])
def test_a_response_head_with_some_bare_lf_line_ends_is_accepted(proxy, store, head) -> None:
    """What `headers.crlf_head` accepts on the general path, the fast path must not turn into a 502."""
    def script(conn: int, index: int, req: bytes) -> tuple[bytes, bool]:
        if req.startswith(b"GET /echo"):  # add_route's probe
            return echo(conn, index, req)
        return head + b"from cgi\r\n\r\nstill body\n", True

    with routed(store, proxy, "cgi", script) as (host, _):
        c = proxy.client()
        try:
            c.send(b"GET /x HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
            resp = c.read()
        finally:
            c.close()
    assert resp.status == 200 and resp.header("content-type") == "text/plain"
    assert resp.body == b"from cgi\r\n\r\nstill body\n"


def test_an_unasked_for_101_is_a_bad_gateway_and_not_resent(proxy, store) -> None:
    """llhttp raises HttpParserUpgrade (not an HttpParserError) for any 101: it escaped data_received,
    asyncio logged a fatal error, and the request was sent again on a new connection."""
    def script(conn: int, index: int, head: bytes) -> tuple[bytes, bool]:
        if head.startswith(b"GET /echo"):  # add_route's probe
            return echo(conn, index, head)
        return b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n", False

    with routed(store, proxy, "switch", script) as (host, up):
        c = proxy.client()
        try:
            resp = c.get(host, "/x")
        finally:
            c.close()
    assert resp.status == 502
    assert len(up.heads) == 1, up.heads
    assert "Fatal error" not in proxy.logs()

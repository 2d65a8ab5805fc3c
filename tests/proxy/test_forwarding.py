"""Forwarding: per-request routing, pipelining, body framing both ways, streaming, upgrades, headers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import zlib

import pytest
import websockets.asyncio.client

from .conftest import Client, ProxyProcess, add_route
from .upstream import Upstream


@pytest.fixture
def two_envs(store, proxy: ProxyProcess, upstreams) -> tuple[str, str]:
    a, b = upstreams
    add_route(store, proxy.port, "alpha.dev.localhost", a.port)
    add_route(store, proxy.port, "beta.dev.localhost", b.port)
    return "alpha.dev.localhost", "beta.dev.localhost"


def test_routes_each_request_of_a_keepalive_connection_by_its_own_host(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        first = c.get("alpha.dev.localhost")
        second = c.get("BETA.Dev.Localhost:8000")  # case-insensitive, port ignored
        third = c.get("alpha.dev.localhost.")
    finally:
        c.close()
    assert [first.json()["name"], second.json()["name"], third.json()["name"]] == ["A", "B", "A"]


def test_a_response_head_with_bare_lf_line_ends_is_accepted_like_nginx_does(proxy, two_envs) -> None:
    """CGI servers pass a script's `Header: x\\n\\n` through; the body must stay byte for byte."""
    c = proxy.client()
    try:
        resp = c.get("alpha.dev.localhost", "/bare-lf")
    finally:
        c.close()
    assert resp.status == 200 and resp.header("content-type") == "text/plain"
    assert resp.body == b"from cgi\r\n\r\nstill body\n"


def test_pipelined_requests_are_answered_in_order(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        # The first answer is the slowest; the answers must still come back in request order.
        c.send(b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: alpha.dev.localhost\r\n\r\n"
               b"GET /echo?n=2 HTTP/1.1\r\nHost: beta.dev.localhost\r\n\r\n"
               b"GET /nowhere HTTP/1.1\r\nHost: nobody.dev.localhost\r\n\r\n"
               b"GET /echo?n=4 HTTP/1.1\r\nHost: alpha.dev.localhost\r\n\r\n")
        answers = [c.read() for _ in range(4)]
    finally:
        c.close()
    assert [r.status for r in answers] == [200, 200, 404, 200]
    assert answers[0].json()["target"] == "/sleep?s=0.3"
    assert (answers[1].json()["name"], answers[1].json()["target"]) == ("B", "/echo?n=2")
    assert (answers[3].json()["name"], answers[3].json()["target"]) == ("A", "/echo?n=4")


def test_request_bodies_with_content_length_and_chunked_arrive_intact(proxy, two_envs) -> None:
    body = bytes(range(256)) * 300
    c = proxy.client()
    try:
        c.send(b"POST /echo HTTP/1.1\r\nHost: alpha.dev.localhost\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        by_length = c.read().json()
        chunked = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (body[:1000], body[1000:50000], body[50000:]))
        c.send(b"POST /echo HTTP/1.1\r\nHost: beta.dev.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked + b"0\r\nX-Trailer: t\r\n\r\n"
               + b"GET /echo?after HTTP/1.1\r\nHost: alpha.dev.localhost\r\n\r\n")  # pipelined after the body
        by_chunks = c.read().json()
        after = c.read().json()
    finally:
        c.close()
    for seen in (by_length, by_chunks):
        assert (seen["length"], seen["crc"]) == (len(body), zlib.crc32(body))
    assert by_chunks["name"] == "B" and ("Transfer-Encoding", "chunked") in [tuple(h) for h in by_chunks["headers"]]
    assert after["target"] == "/echo?after"


@pytest.mark.parametrize("spelling", [b"Transfer-Encoding: CHUNKED", b"transfer-encoding:\tchunked ",
                                      b"TRANSFER-ENCODING:  Chunked"])
def test_a_chunked_request_goes_upstream_with_one_canonical_transfer_encoding(proxy, two_envs, spelling) -> None:
    c = proxy.client()
    try:
        c.send(b"POST /echo HTTP/1.1\r\nHost: beta.dev.localhost\r\n" + spelling
               + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        seen = c.read().json()
    finally:
        c.close()
    assert (seen["length"], seen["crc"]) == (5, zlib.crc32(b"hello"))
    assert [h for h in seen["headers"] if h[0].lower() == "transfer-encoding"] == [["Transfer-Encoding", "chunked"]]


def test_response_bodies_chunked_length_and_until_close_reach_the_client(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        chunked = c.get("alpha.dev.localhost", "/chunked?n=50")
        length = c.get("alpha.dev.localhost", "/echo")
        until_close = c.get("alpha.dev.localhost", "/close")
        assert c.closed()
    finally:
        c.close()
    assert chunked.header("transfer-encoding") == "chunked"
    assert chunked.body == b"".join(f"chunk {i}\n".encode() for i in range(50))
    assert int(length.header("content-length")) == len(length.body)
    assert until_close.body == b"x" * 5000 and until_close.header("connection") == "close"


def test_head_request_gets_headers_and_no_body(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        head = c.get("alpha.dev.localhost", "/echo", method="HEAD")
        after = c.get("alpha.dev.localhost", "/echo?after")  # the connection is still in step
    finally:
        c.close()
    assert head.status == 200 and int(head.header("content-length")) > 0 and head.body == b""
    assert after.json()["target"] == "/echo?after"


def test_server_sent_events_arrive_as_they_are_sent(proxy, two_envs) -> None:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    try:
        start = time.monotonic()
        sock.sendall(b"GET /sse HTTP/1.1\r\nHost: alpha.dev.localhost\r\n\r\n")
        got, first_event_at = b"", None
        while b"0\r\n\r\n" not in got:
            got += sock.recv(65536)
            if first_event_at is None and b"event 0" in got:
                first_event_at = time.monotonic() - start
        total = time.monotonic() - start
    finally:
        sock.close()
    # The upstream spaces the three events 0.3 s apart: the first must not wait for the last.
    assert first_event_at is not None and total >= 0.6
    assert first_event_at < total - 0.4, (first_event_at, total)


def test_websocket_echo_both_ways(proxy, store, upstreams) -> None:
    a, _ = upstreams
    add_route(store, proxy.port, "ws.dev.localhost", a.ws_port, expect=426)  # plain GET: websockets says 426

    async def talk() -> list[str | bytes]:
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        async with websockets.asyncio.client.connect("ws://ws.dev.localhost/ws", sock=sock) as ws:
            out = []
            for message in ("hello", b"\x00\x01binary", "x" * 100_000):
                await ws.send(message)
                out.append(await ws.recv())
            return out

    assert asyncio.run(talk()) == ["hello", b"\x00\x01binary", "x" * 100_000]


def test_hop_by_hop_headers_are_dropped_and_forwarded_headers_set(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        c.send(b"GET /echo HTTP/1.1\r\nHost: alpha.dev.localhost:8000\r\nConnection: keep-alive, X-Private\r\n"
               b"X-Private: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
               b"Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nProxy: http://evil\r\n"
               b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: spoofed\r\n"
               b"Accept: text/html\r\n\r\n")
        seen = c.read().json()
        hop = c.get("alpha.dev.localhost", "/hop")
    finally:
        c.close()
    names = [name.lower() for name, _ in seen["headers"]]
    for dropped in ("connection", "x-private", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
                    "proxy-connection", "proxy"):
        assert dropped not in names, dropped
    got = {name.lower(): value for name, value in seen["headers"]}
    assert got["accept"] == "text/html" and got["host"] == "alpha.dev.localhost:8000"
    assert got["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == "alpha.dev.localhost:8000"
    assert names.count("x-forwarded-for") == 1 and names.count("x-forwarded-host") == 1
    assert hop.body == b"hop" and hop.header("x-end-to-end") == "kept"
    for dropped in ("connection", "x-hop", "keep-alive", "proxy-authenticate"):
        assert hop.header(dropped) is None, dropped


def test_one_gigabyte_upload_streams_in_bounded_memory(proxy, two_envs) -> None:
    size, block = 1 << 30, bytes(range(256)) * 4096  # 1 MiB blocks
    before = proxy.rss_peak_kb()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=60)
    crc = 0

    def send() -> None:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: alpha.dev.localhost\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            sock.sendall(block)

    sender = threading.Thread(target=send)
    sender.start()
    for _ in range(size // len(block)):
        crc = zlib.crc32(block, crc)
    c = Client.__new__(Client)
    c.sock, c.buf = sock, b""
    try:
        seen = c.read().json()
    finally:
        sender.join(60)
        sock.close()
    after = proxy.rss_peak_kb()
    print(f"proxy peak RSS: {before} KiB before, {after} KiB after a 1 GiB upload")
    assert (seen["length"], seen["crc"]) == (size, crc)
    assert after - before < 32 * 1024, (before, after)  # far below the 1 GiB that went through


def test_a_pooled_connection_closed_by_the_upstream_is_retried_for_safe_requests(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        # Each answer comes on a connection the upstream then closes without a "Connection: close".
        c.send(b"GET /close-after HTTP/1.1\r\nHost: alpha.dev.localhost\r\n\r\n" * 3)
        answers = [c.read() for _ in range(3)]
    finally:
        c.close()
    assert [(r.status, r.body) for r in answers] == [(200, b"ok")] * 3


def test_http10_client_gets_a_closed_connection_and_no_chunking(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        c.send(b"GET /echo HTTP/1.0\r\nHost: alpha.dev.localhost\r\n\r\n")
        answer = c.read()
        assert c.closed()
    finally:
        c.close()
    assert answer.status == 200 and answer.header("connection") == "close" and answer.json()["name"] == "A"


def test_absolute_form_target_is_routed_by_its_authority(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        c.send(b"GET http://beta.dev.localhost/echo?abs HTTP/1.1\r\nHost: alpha.dev.localhost\r\n\r\n")
        seen = c.read().json()
    finally:
        c.close()
    assert seen["name"] == "B" and seen["target"] == "/echo?abs"


def test_expect_100_continue_is_relayed(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        c.send(b"POST /echo HTTP/1.1\r\nHost: alpha.dev.localhost\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        interim = c.read()  # the client waits for this before it sends the body
        c.send(b"hello")
        final = c.read()
    finally:
        c.close()
    assert interim.status == 100
    assert final.status == 200 and final.json()["length"] == 5


def test_a_deep_pipeline_is_answered_completely_and_in_order(proxy, two_envs) -> None:
    c = proxy.client()
    try:
        # More than PIPELINE_MAX requests in one write: the proxy pauses reading and resumes as it answers.
        c.send(b"".join(b"GET /echo?i=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, b"alpha.dev.localhost" if i % 2 else
                                                                          b"beta.dev.localhost") for i in range(200)))
        targets = [c.read().json()["target"] for _ in range(200)]
    finally:
        c.close()
    assert targets == [f"/echo?i={i}" for i in range(200)]


def test_a_client_keeps_its_upstream_connection_and_gives_it_back_when_quiet(proxy, store) -> None:
    with Upstream("S") as up:
        host = "spare.dev.localhost"
        add_route(store, proxy.port, host, up.port)
        time.sleep(0.2)  # the probe client has gone: its upstream connection is in the pool
        assert up.connections == 1
        a, b = proxy.client(), proxy.client()
        try:
            for _ in range(5):
                assert a.get(host).json()["name"] == "S"
            assert up.connections == 1  # a took the pooled connection and keeps it between its requests
            assert b.get(host).status == 200
            assert up.connections == 2  # a still holds that one, so b needed another
            time.sleep(1.5)  # quiet for a few sweeps: both connections go back to the pool
            c = proxy.client()
            try:
                assert c.get(host).status == 200
                assert a.get(host).status == 200
            finally:
                c.close()
            assert up.connections == 2  # c and a were served from the pool
        finally:
            a.close()
            b.close()

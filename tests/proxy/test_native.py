"""The compiled hot path: used exactly when it matches the source, and said so in the log."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from mirage_git.proxy import native

from .conftest import ProxyProcess, wait_for


@pytest.fixture(autouse=True)
def _keep_status(monkeypatch) -> None:
    monkeypatch.setattr(native, "_status", native._status)  # activate() below must not change this process's


def test_the_proxy_says_which_build_of_the_hot_path_it_runs(proxy: ProxyProcess) -> None:
    # Both params of `proxy` come through here: the native one must really be native, or every
    # "native" proxy test would silently have tested the Python modules.
    # The listening port opens just before the startup line is written: wait for that line.
    wait_for(lambda: "hot path:" in proxy.logs())
    native_wanted = "MIRAGE_PROXY_NATIVE=0" not in proxy.logs()
    if native_wanted:
        assert native.unusable() is None, f"run scripts/setup (or mirage-git build-proxy): {native.unusable()}"
        assert "hot path: native (mypyc)" in proxy.logs()
    else:
        assert "hot path: pure Python: MIRAGE_PROXY_NATIVE=0" in proxy.logs()


def test_in_this_process_the_hot_modules_come_from_the_build() -> None:
    if os.environ.get("MIRAGE_PROXY_NATIVE") == "0":
        pytest.skip("MIRAGE_PROXY_NATIVE=0: this run tests the pure-Python hot path")
    from mirage_git.proxy import client, headers, server, upstream

    for module, code in ((client, client.ClientConnection.data_received), (headers, headers.request),
                         (server, server.Proxy.put), (upstream, upstream.UpstreamConnection.data_received)):
        assert module.__spec__.origin.startswith(f"{native.BUILD_DIR}/"), module.__spec__.origin
        assert not inspect.isfunction(code), f"{code} is Python bytecode"
    assert native.status() == "native (mypyc)"


@pytest.fixture
def copy_of_build(tmp_path: Path) -> Path:
    if native.unusable() is not None:
        pytest.fail(f"no usable native build: {native.unusable()}")
    build = tmp_path / "_native"
    shutil.copytree(native.BUILD_DIR, build)
    return build


def test_a_build_that_matches_goes_first_on_the_package_path(copy_of_build: Path, monkeypatch) -> None:
    monkeypatch.delenv("MIRAGE_PROXY_NATIVE", raising=False)
    path = ["/the/package"]
    native.activate(path, copy_of_build)
    assert path == [str(copy_of_build), "/the/package"]


def test_a_build_from_other_source_is_not_used(copy_of_build: Path, monkeypatch) -> None:
    monkeypatch.delenv("MIRAGE_PROXY_NATIVE", raising=False)
    manifest = copy_of_build / native.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "digest": "0" * 64}))
    path = ["/the/package"]
    native.activate(path, copy_of_build)
    assert path == ["/the/package"]
    assert native.status().startswith("pure Python: built from other source")


def test_an_incomplete_build_is_not_used(copy_of_build: Path, monkeypatch) -> None:
    monkeypatch.delenv("MIRAGE_PROXY_NATIVE", raising=False)
    next(copy_of_build.glob("client.*")).unlink()
    path: list[str] = []
    native.activate(path, copy_of_build)
    assert path == []
    assert "incomplete build (missing client." in native.status()


def test_no_build_and_the_switch_off_both_mean_pure_python(tmp_path: Path, copy_of_build: Path, monkeypatch) -> None:
    path: list[str] = []
    native.activate(path, tmp_path / "nothing-here")
    assert path == [] and "not built" in native.status()
    monkeypatch.setenv("MIRAGE_PROXY_NATIVE", "0")
    native.activate(path, copy_of_build)
    assert path == [] and native.status() == "pure Python: MIRAGE_PROXY_NATIVE=0"


def test_editing_a_hot_module_changes_the_digest(tmp_path: Path) -> None:
    for name in native.HOT_MODULES:
        shutil.copy(native.HERE / f"{name}.py", tmp_path)
    assert native.digest(tmp_path) == native.digest()
    with (tmp_path / "client.py").open("a") as f:
        f.write("# an edit\n")
    assert native.digest(tmp_path) != native.digest()


def _pure_headers():
    """headers.py loaded from its source under another name, beside the compiled one."""
    spec = importlib.util.spec_from_file_location("pure_headers", native.HERE / "headers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: a.dev.test\r\nConnection: keep-alive\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: e\r\nConnection: Upgrade, te\r\nUpgrade: websocket\r\nTE: trailers\r\n\r\n",
    b"GET http://user@a.dev.test:80/x?q HTTP/1.1\r\nHost: other\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
    b"GET /10 HTTP/1.0\r\nConnection: keep-alive, proxy-x\r\nProxy-X: 1\r\nKeep-Alive: 1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: e\r\nx-forwarded-for: a\r\nX-Forwarded-For: b\r\n\r\n",
]
_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: te, x-a, close\r\nTE: x\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, Keep-Alive\r\n"
    b"Keep-Alive: 1\r\n\r\n",
]
_PIECES = [b"\r\n", b"\n", b" ", b":", b",", b"Connection: ", b"te", b"upgrade", b"close", b"Host: ", b"\x00",
           b"Content-Length: 1", b"Transfer-Encoding: chunked", b"proxy-x", b"x-forwarded-for", b"HTTP/1.1", b"http://"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 4)):
        at, to = sorted(rng.randrange(len(data) + 1) for _ in range(2))
        choice = rng.random()
        if choice < 0.4:
            data = data[:at] + rng.choice(_PIECES) + data[at:]
        elif choice < 0.7:
            data = data[:at] + data[to:]
        else:
            data = data[:at] + data[at:to].upper() + data[to:]
    return data if data.endswith(b"\r\n\r\n") else data + b"\r\n\r\n"


def _outcome(fn, *args, **kwargs) -> object:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # which exception, and its text, is what is compared
        return type(exc).__name__, str(exc)


def test_the_compiled_headers_answer_exactly_as_their_python_source_on_mangled_heads() -> None:
    """A differential check: mypyc's runtime differs from CPython's in corners (a backwards slice is an error)."""
    from mirage_git.proxy import headers as compiled

    if inspect.isfunction(compiled.request):
        pytest.skip("headers is not compiled in this process")
    pure = _pure_headers()
    rng = random.Random(20261204)
    for i in range(4000):
        head = _mutate(rng, rng.choice(_REQUESTS))
        assert _outcome(compiled.request, head, b"10.1.2.3") == _outcome(pure.request, head, b"10.1.2.3"), (i, head)
        resp = _mutate(rng, rng.choice(_RESPONSES))
        for bodyless, keep_alive, upgrade in ((False, True, False), (True, False, False), (False, True, True)):
            kwargs = {"bodyless": bodyless, "keep_alive": keep_alive, "upgrade": upgrade}
            assert _outcome(compiled.response, resp, **kwargs) == _outcome(pure.response, resp, **kwargs), (i, resp)
        assert _outcome(compiled.crlf_head, resp, 0) == _outcome(pure.crlf_head, resp, 0), (i, resp)
        body = _mutate(rng, b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        start = rng.randrange(len(body))
        assert (_outcome(compiled.ChunkedEnd().scan, body, start)
                == _outcome(pure.ChunkedEnd().scan, body, start)), (i, body, start)

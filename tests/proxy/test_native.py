"""The compiled hot path: used exactly when it matches the source, and said so in the log."""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

import pytest

from mirage_git.proxy import native

from .conftest import ProxyProcess


@pytest.fixture(autouse=True)
def _keep_status(monkeypatch) -> None:
    monkeypatch.setattr(native, "_status", native._status)  # activate() below must not change this process's


def test_the_proxy_says_which_build_of_the_hot_path_it_runs(proxy: ProxyProcess) -> None:
    # Both params of `proxy` come through here: the native one must really be native, or every
    # "native" proxy test would silently have tested the Python modules.
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

"""End-to-end fixtures: one real `mirage-git up` (Docker, embedded Redis, git) for the session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import docker
import pytest

from .harness import AppRepo, Service, cleanup_docker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def docker_engine() -> None:
    """End-to-end tests need the real engine; scripts/test starts one. No engine is a failure, not a skip."""
    try:
        docker.from_env().ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"Docker engine not reachable ({exc}); run scripts/start-docker", pytrace=False)


@pytest.fixture(scope="session")
def app_repo(tmp_path_factory: pytest.TempPathFactory) -> AppRepo:
    return AppRepo(tmp_path_factory.mktemp("repo") / "app")


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, app_repo: AppRepo) -> Iterator[Service]:
    app = f"e2e{secrets.token_hex(3)}"
    svc = Service(tmp_path_factory.mktemp("service"), app, app_repo.path, push_app=f"{app}-p")
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()
        cleanup_docker(app)
        cleanup_docker(f"{app}-p")

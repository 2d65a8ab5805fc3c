"""Shared fixtures: a real Redis per test session, and the fixture payloads."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirage_git import embedded_redis
from mirage_git.store import Store

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a private unix socket, for the whole test session."""
    with tempfile.TemporaryDirectory(prefix="mirage-redis-") as tmp:
        proc = embedded_redis.start(Path(tmp))
        try:
            yield f"unix://{tmp}/redis.sock"
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def store(redis_url: str) -> Store:
    """A Store over an empty database."""
    s = Store.from_url(redis_url)
    s.r.flushdb()
    return s

"""Hostile input to the web app: every answer is a 4xx with a clear error, never a 500 or a misleading 503."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/api/envs", "/api/purge"])
def test_deeply_nested_json_is_400(client, path):
    resp = client.post(path, data="[" * 100_000, content_type="application/json")
    assert resp.status_code == 400 and "error" in resp.get_json()

"""Hostile input to the web app: every answer is a 4xx with a clear error, never a 500 or a misleading 503."""

from __future__ import annotations

import json
import time

import pytest

from .conftest import launch


@pytest.mark.parametrize("path", ["/api/envs", "/api/purge"])
def test_deeply_nested_json_is_400(client, path):
    resp = client.post(path, data="[" * 100_000, content_type="application/json")
    assert resp.status_code == 400 and "error" in resp.get_json()


def test_a_host_or_job_id_naming_another_redis_key_is_404_not_redis_down(client, store):
    """`<host>:jobs` and `<job>:log` are real Redis keys of another type; Redis must not be blamed."""
    job = launch(client, "main")
    host = job["host"]
    for path in (f"/api/envs/{host}:jobs", f"/api/envs/{host}:latest", f"/api/envs/{host}:latest/jobs",
                 f"/api/envs/{host}:jobs/access", f"/envs/{host}:latest"):
        resp = client.get(path)
        assert resp.status_code == 404, (path, resp.status_code, resp.data[:200])
    for method, path in (("POST", f"/api/envs/{host}:jobs/redeploy"), ("DELETE", f"/api/envs/{host}:latest")):
        resp = client.open(path, method=method)
        assert resp.status_code == 404, (path, resp.status_code, resp.data[:200])
    for path in (f"/api/jobs/{job['id']}:log", f"/api/jobs/{job['id']}:log/log", f"/jobs/{job['id']}:log",
                 f"/jobs/{job['id']}:log/events"):
        resp = client.get(path)
        assert resp.status_code == 404, (path, resp.status_code, resp.data[:200])


@pytest.mark.parametrize("junk", ["١٢٣-0", "²", "99999999999999999999999-0", "1-99999999999999999999999",
                                  "1700000000000-", "-0", " 1-0"])
def test_junk_last_event_id_is_400_before_the_stream_starts(client, store, junk):
    job = launch(client, "main")
    store.finish_job(job["id"], "succeeded", "done")
    resp = client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": junk})
    assert resp.status_code == 400, resp.data[:300]
    resp = client.get(f"/jobs/{job['id']}/events?after={junk}")
    assert resp.status_code == 400


def test_a_valid_last_event_id_still_resumes(client, store):
    job = launch(client, "main")
    store.finish_job(job["id"], "succeeded", "done")
    resp = client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": "18446744073709551615-0"})
    assert resp.status_code == 200 and "event: end" in resp.text


@pytest.mark.parametrize("older_than", [10**400, -10**400])
def test_purge_with_a_huge_integer_duration_is_422(client, older_than):
    resp = client.post("/api/purge", data=json.dumps({"older_than": older_than, "dry_run": True}),
                       content_type="application/json")
    assert resp.status_code == 422 and "older_than" in resp.get_json()["fields"]


@pytest.mark.timeout(60)
def test_purge_with_a_catastrophic_regex_is_refused_quickly(client, store):
    """`(a+)+$` against a branch like `aaaa…!` would hold the worker (and the GIL) for hours."""
    job = launch(client, "main")
    store.update_env(job["host"], branch="a" * 40 + "!")
    started = time.monotonic()
    resp = client.post("/api/purge", json={"older_than": "1s", "exclude_regex": "(a+)+$", "dry_run": True})
    took = time.monotonic() - started
    assert took < 10, f"the regex ran for {took:.0f}s"
    assert resp.status_code == 422, resp.get_json()
    assert "exclude_regex" in resp.get_json()["fields"]


def test_purge_regex_still_excludes(client, store):
    job = launch(client, "main")
    store.finish_job(job["id"], "succeeded", "done")
    store.update_env(job["host"], deployed_at=time.time() - 7200, created_at=time.time() - 7200)
    resp = client.post("/api/purge", json={"older_than": "1h", "exclude_regex": "^ma", "dry_run": True})
    assert resp.status_code == 200 and resp.get_json()["envs"] == []
    resp = client.post("/api/purge", json={"older_than": "1h", "exclude_regex": "^fix", "dry_run": True})
    assert [e["branch"] for e in resp.get_json()["envs"]] == ["main"]


def test_lone_surrogates_in_api_bodies_are_refused(make_app, repo):
    """JSON's "\\ud800" is valid JSON but no UTF-8 store (Redis, git, Docker) can hold it."""
    client = make_app(extra_apps={"free": {"repo": str(repo), "domain": "free.test",
                                           "parameters": {"NOTE": {}}}}).test_client()
    resp = client.post("/api/envs", data='{"app": "shop", "branch": "a\\ud800", "commit": "abcd"}',
                       content_type="application/json")
    assert resp.status_code == 422 and "branch" in resp.get_json()["fields"]
    resp = client.post("/api/envs", data='{"app": "free", "branch": "main", "params": {"NOTE": "x\\ud800"}}',
                       content_type="application/json")
    assert resp.status_code == 422 and "params.NOTE" in resp.get_json()["fields"]


def test_a_commit_with_a_trailing_newline_is_refused(client):
    resp = client.post("/api/envs", json={"app": "shop", "branch": "main", "commit": "abcd\n",
                                          "params": {"TICKET": "A-1"}})
    assert resp.status_code == 422 and "commit" in resp.get_json()["fields"]
    job = launch(client, "main")
    resp = client.post(f"/api/envs/{job['host']}/redeploy", json={"commit": "a" * 40 + "\n"})
    assert resp.status_code == 422


@pytest.mark.parametrize("pattern", ["x{99999999999}", "(" * 499 + ")" * 499])
def test_purge_regex_that_python_cannot_compile_is_422(client, pattern):
    resp = client.post("/api/purge", json={"older_than": "1h", "exclude_regex": pattern, "dry_run": True})
    assert resp.status_code == 422 and "exclude_regex" in resp.get_json()["fields"], resp.data[:200]

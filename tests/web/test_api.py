"""The REST API in-process: every endpoint, its filters, its errors and its response shapes."""

from __future__ import annotations

import json
import time

import redis
import rq

from mirage_git import queue as queue_mod
from mirage_git.store import Store

from .conftest import launch


def finish(store: Store, job_id: str, status: str = "succeeded", commit: str = "a" * 40) -> None:
    """Do to the records what a worker does when a deploy ends."""
    job = store.job(job_id)
    assert job is not None
    now = time.time()
    store.append_log(job_id, "==> Building the image", step="build")
    store.append_log(job_id, "built", end=status)
    store.update_job(job_id, status=status, started_at=now - 3, ended_at=now, commit=commit,
                     steps=[{"name": "build", "started_at": now - 3, "ended_at": now, "status": "ok"}])
    if status == "succeeded" and job.action == "deploy":
        store.update_env(job.host, status="live", commit=commit, live_job_id=job_id, deployed_at=now,
                         params=job.params)


def test_launch_enqueues_a_real_rq_job_and_answers_with_the_job(client, store):
    rq_queue = rq.Queue(queue_mod.QUEUE_NAME, connection=redis.Redis.from_url(store.where))
    before = rq_queue.count
    resp = client.post("/api/envs", json={"app": "shop", "branch": "feature/login", "params": {"TICKET": "WEB-7"}})
    assert resp.status_code == 202
    job = resp.get_json()
    assert resp.headers["Location"] == f"/api/jobs/{job['id']}"
    assert {k: job[k] for k in ("app", "branch", "action", "status", "source", "commit")} == {
        "app": "shop", "branch": "feature/login", "action": "deploy", "status": "queued", "source": "api",
        "commit": None}
    assert job["params"] == {"COLOR": "red", "TICKET": "WEB-7"}, "defaults are filled in"
    assert job["env_url"] == "http://feature-login.preview.test:8000/"
    assert rq_queue.count == before + 1
    assert rq_queue.fetch_job(job["id"]).func_name == "worker.jobs.deploy"


def test_launch_refusals_name_each_field(client):
    resp = client.post("/api/envs", json={"app": "shop", "branch": "no-such-branch",
                                          "params": {"TICKET": "lower-1", "COLOR": "green", "NOPE": "x"}})
    assert resp.status_code == 422
    body = resp.get_json()
    assert set(body["fields"]) == {"branch", "params.TICKET", "params.COLOR", "params.NOPE"}
    assert "no such branch" in body["fields"]["branch"]
    assert body["fields"]["params.COLOR"] == "must be one of red, blue"
    assert "must match" in body["fields"]["params.TICKET"] and body["error"]

    missing = client.post("/api/envs", json={"app": "shop", "branch": "main"}).get_json()
    assert missing["fields"] == {"params.TICKET": "is required"}
    unknown = client.post("/api/envs", json={"app": "nope", "branch": "main"})
    assert unknown.status_code == 422
    assert unknown.get_json()["fields"]["app"] == "no app named 'nope' (configured: shop)"
    bad_branch = client.post("/api/envs", json={"app": "shop", "branch": "a..b", "params": {"TICKET": "A-1"}})
    assert bad_branch.get_json()["fields"]["branch"] == "is not a valid git branch name"


def test_malformed_bodies_are_4xx_json(client):
    assert client.post("/api/envs", json={"app": "shop"}).status_code == 400
    assert client.post("/api/envs", json=["shop", "main"]).status_code == 400
    assert client.post("/api/envs", data="{nope", content_type="application/json").status_code == 400
    resp = client.post("/api/envs", data="app=shop&branch=main", content_type="text/csv")
    assert resp.status_code == 415 and "JSON" in resp.get_json()["error"]
    resp = client.post("/api/envs", json={"app": "shop", "branch": "main", "params": {"TICKET": 5}})
    assert resp.status_code == 400 and resp.get_json() == {"error": "params must be an object of strings"}
    assert client.post("/api/envs", json={"app": 3, "branch": "main"}).status_code == 400


def test_envs_list_get_and_filters(client, store):
    job = launch(client, "main")
    other = launch(client, "fix-1")
    finish(store, job["id"])
    envs = client.get("/api/envs").get_json()
    assert [e["branch"] for e in envs] == ["fix-1", "main"]
    main = envs[1]
    assert {k: main[k] for k in ("app", "slug", "host", "url", "status", "job_id", "commit")} == {
        "app": "shop", "slug": "main", "host": "main.preview.test", "url": "http://main.preview.test:8000/",
        "status": "live", "job_id": job["id"], "commit": "a" * 40}
    assert main["deployed_at"].endswith("+00:00") and main["requests"] == 0 and main["last_request_at"] is None
    assert main["last_job"] == {"id": job["id"], "action": "deploy", "status": "succeeded",
                                "log_url": f"/jobs/{job['id']}"}
    assert [e["branch"] for e in client.get("/api/envs?status=live").get_json()] == ["main"]
    assert [e["branch"] for e in client.get("/api/envs?status=queued").get_json()] == ["fix-1"]
    assert client.get("/api/envs?app=other").get_json() == []
    assert len(client.get("/api/envs?app=shop").get_json()) == 2
    bad = client.get("/api/envs?status=dead")
    assert bad.status_code == 400 and "status must be one of" in bad.get_json()["error"]

    one = client.get("/api/envs/main.preview.test")
    assert one.status_code == 200 and one.get_json()["job_id"] == job["id"]
    assert client.get("/api/envs/MAIN.preview.test").get_json()["host"] == "main.preview.test"
    missing = client.get("/api/envs/nope.preview.test")
    assert missing.status_code == 404 and missing.get_json() == {"error": "no env at 'nope.preview.test'"}
    assert other["id"] != job["id"]


def test_redeploy_keeps_parameters_and_can_pin_a_commit(client, store):
    first = launch(client, "main", COLOR="blue")
    finish(store, first["id"])
    resp = client.post("/api/envs/main.preview.test/redeploy")
    assert resp.status_code == 202
    again = resp.get_json()
    assert again["id"] != first["id"] and again["params"] == {"COLOR": "blue", "TICKET": "WEB-1"}
    assert again["commit"] is None and again["action"] == "deploy"
    pinned = client.post("/api/envs/main.preview.test/redeploy", json={"commit": "abc1234"}).get_json()
    assert pinned["commit"] == "abc1234"
    assert client.post("/api/envs/main.preview.test/redeploy", json={"commit": "zzz"}).status_code == 422
    assert client.post("/api/envs/gone.preview.test/redeploy").status_code == 404
    assert store.job(first["id"]).status == "succeeded"
    assert store.job(again["id"]).status == "superseded", "the queued redeploy was replaced by the pinned one"


def test_terminate_is_idempotent_and_blocks_redeploy(client, store):
    job = launch(client, "main")
    finish(store, job["id"])
    resp = client.delete("/api/envs/main.preview.test")
    assert resp.status_code == 202
    teardown = resp.get_json()
    assert teardown["action"] == "teardown" and teardown["status"] == "queued"
    assert client.delete("/api/envs/main.preview.test").get_json()["id"] == teardown["id"]
    conflict = client.post("/api/envs/main.preview.test/redeploy")
    assert conflict.status_code == 409 and "being terminated" in conflict.get_json()["error"]
    assert client.delete("/api/envs/gone.preview.test").status_code == 404


def test_jobs_list_filters_and_limits(client, store):
    a = launch(client, "main")
    b = launch(client, "fix-1")
    finish(store, a["id"], status="failed")
    assert [j["id"] for j in client.get("/api/jobs").get_json()][:2] == [b["id"], a["id"]]
    assert [j["id"] for j in client.get("/api/jobs?status=failed").get_json()] == [a["id"]]
    assert [j["id"] for j in client.get("/api/jobs?branch=fix-1").get_json()] == [b["id"]]
    assert [j["id"] for j in client.get("/api/jobs?app=shop&limit=1").get_json()] == [b["id"]]
    assert client.get("/api/jobs?app=other").get_json() == []
    for bad in ("limit=0", "limit=x", "limit=501", "status=done"):
        resp = client.get(f"/api/jobs?{bad}")
        assert resp.status_code == 400 and "error" in resp.get_json(), bad
    history = client.get("/api/envs/main.preview.test/jobs").get_json()
    assert [j["id"] for j in history] == [a["id"]]


def test_job_get_shape_and_404(client, store):
    job = launch(client, "main")
    finish(store, job["id"])
    got = client.get(f"/api/jobs/{job['id']}").get_json()
    for key in ("id", "app", "branch", "commit", "action", "status", "started_at", "ended_at", "env_url", "error"):
        assert key in got
    assert got["status"] == "succeeded" and got["duration"] >= 2.9
    assert got["steps"][0]["name"] == "build"
    resp = client.get("/api/jobs/nope")
    assert resp.status_code == 404 and resp.get_json() == {"error": "no job 'nope'"}


def test_job_log_plain_and_followed(client, store):
    job = launch(client, "main")
    log = client.get(f"/api/jobs/{job['id']}/log")
    assert log.mimetype == "text/plain" and log.get_data(as_text=True).startswith("queued deploy of shop/main")
    finish(store, job["id"])
    followed = client.get(f"/api/jobs/{job['id']}/log?follow=1")
    assert followed.is_streamed
    text = followed.get_data(as_text=True)
    assert text.splitlines()[-2:] == ["==> Building the image", "built"]
    assert client.get("/api/jobs/nope/log").status_code == 404


def test_access_counts(client, store):
    launch(client, "main")
    launch(client, "fix-1")
    store.record_access({"main.preview.test": 5}, {"main.preview.test": 1_700_000_000.0})
    store.record_access({"main.preview.test": 2}, {})
    one = client.get("/api/envs/main.preview.test/access").get_json()
    assert one == {"app": "shop", "branch": "main", "host": "main.preview.test", "requests": 7,
                   "last_request_at": "2023-11-14T22:13:20+00:00"}
    everything = {a["branch"]: a["requests"] for a in client.get("/api/access").get_json()}
    assert everything == {"main": 7, "fix-1": 0}
    assert client.get("/api/access?app=nope").get_json() == []
    assert client.get("/api/envs/nope.preview.test/access").status_code == 404


def test_purge_dry_run_exclusions_and_real_run(client, store):
    old = time.time() - 7200
    for branch in ("main", "fix-1", "feature/login"):
        job = launch(client, branch)
        finish(store, job["id"])
        store.update_env(f"{branch.replace('/', '-')}.preview.test", deployed_at=old, created_at=old)
    store.record_access({"fix-1.preview.test": 1}, {"fix-1.preview.test": time.time() - 60})

    dry = client.post("/api/purge", json={"older_than": "1h", "dry_run": True}).get_json()
    assert dry["dry_run"] is True
    assert sorted(e["branch"] for e in dry["envs"]) == ["feature/login", "main"], "fix-1 was used a minute ago"
    assert all(e["job_id"] is None and e["idle_seconds"] >= 7199 for e in dry["envs"])
    assert all(e["status"] == "live" for e in client.get("/api/envs").get_json()), "a dry run changes nothing"

    kept = client.post("/api/purge", json={"older_than": 3600, "exclude": ["main"], "exclude_regex": "^feature/",
                                           "dry_run": True}).get_json()
    assert kept["envs"] == []
    assert client.post("/api/purge", json={"older_than": "3h", "dry_run": True}).get_json()["envs"] == []

    real = client.post("/api/purge", json={"older_than": "90m", "exclude": ["feature/login"]}).get_json()
    assert [e["branch"] for e in real["envs"]] == ["main"]
    teardown = store.job(real["envs"][0]["job_id"])
    assert teardown.action == "teardown" and teardown.pusher == "purge"
    again = client.post("/api/purge", json={"older_than": "90m", "dry_run": True}).get_json()
    assert [e["branch"] for e in again["envs"]] == ["feature/login"], "an env being torn down is not picked twice"


def test_purge_refusals(client):
    assert client.post("/api/purge", json={}).status_code == 400
    assert client.post("/api/purge", json={"older_than": True}).status_code == 400
    assert client.post("/api/purge", json={"older_than": "1h", "dry_run": "yes"}).status_code == 400
    assert client.post("/api/purge", json={"older_than": "1h", "exclude": "main"}).status_code == 400
    for body, field in (({"older_than": "soon"}, "older_than"), ({"older_than": 0}, "older_than"),
                        ({"older_than": "1h", "app": "nope"}, "app"),
                        ({"older_than": "1h", "exclude_regex": "("}, "exclude_regex")):
        resp = client.post("/api/purge", json=body)
        assert resp.status_code == 422 and field in resp.get_json()["fields"], body


def test_apps_and_branches(client, make_app, tmp_path):
    apps = client.get("/api/apps").get_json()
    assert apps[0]["name"] == "shop"
    assert {p["name"]: (p["env"], p["required"], p["options"]) for p in apps[0]["parameters"]} == {
        "COLOR": ("APP_COLOR", False, ["red", "blue"]), "TICKET": ("TICKET", True, [])}
    listed = client.get("/api/apps/shop/branches").get_json()
    assert [b["name"] for b in listed["branches"]] == ["main", "feature/login", "fix-1"]
    assert listed["error"] is None and len(listed["branches"][0]["commit"]) == 40
    assert client.get("/api/apps/nope/branches").status_code == 404

    pushed = make_app(extra_apps={"pushed": {"domain": "pushed.test"}}).test_client()
    body = pushed.get("/api/apps/pushed/branches").get_json()
    assert body["branches"] == [] and body["error"] == "nothing has been pushed to this app yet"
    assert body["origin"].endswith("repos/pushed.git")


def test_openapi_document_describes_every_route(app, client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and rule.endpoint != "api.openapi":
            path = rule.rule.replace("<", "{").replace(">", "}")
            routes |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == documented
    assert json.dumps(doc)  # serialisable, no Python-only values


def test_logs_and_errors_are_never_sniffed_as_html(client, store):
    job = launch(client)
    for path in (f"/api/jobs/{job['id']}/log", "/api/jobs/nope", f"/jobs/{job['id']}"):
        assert client.get(path).headers["X-Content-Type-Options"] == "nosniff", path

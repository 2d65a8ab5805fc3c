"""The store's guarantees, against a real Redis: who wins a race, what a teardown forgets, log tails."""

from __future__ import annotations

import threading
import time

from mirage_git.models import Env, Job, Route
from mirage_git.store import Store

HOST = "main.app.test"


def route(job_id: str, port: int) -> Route:
    return Route(HOST, "app", "main", "live", port=port, job_id=job_id)


def test_only_the_newest_job_can_move_the_route(store: Store):
    store.save_env(Env("app", "main", "main", HOST, "http://x/"))
    store.set_latest(HOST, "old")
    assert store.set_latest(HOST, "new") == "old"
    assert not store.promote("old", route("old", 1111), status="live")
    assert store.route(HOST) is None
    assert store.promote("new", route("new", 2222), status="live", port=2222)
    assert store.route(HOST).port == 2222 and store.env(HOST).status == "live" and store.env(HOST).port == 2222


def test_promote_publishes_the_host(store: Store):
    sub = store.route_changes()
    sub.get_message(timeout=1)
    store.set_latest(HOST, "j")
    store.promote("j", route("j", 1), status="live")
    msg = sub.get_message(timeout=2)
    assert msg and msg["data"] == HOST


def test_forget_env_leaves_an_env_that_a_newer_job_owns(store: Store):
    store.claim_slug("app", "main", ["main"])
    store.save_env(Env("app", "main", "main", HOST, "http://x/"))
    store.set_route(route("d", 1))
    store.set_latest(HOST, "teardown")
    store.set_latest(HOST, "redeploy")
    assert not store.forget_env("teardown", HOST, "app", "main")
    assert store.env(HOST) is not None and store.slug_of("app", "main") == "main"
    assert store.forget_env("redeploy", HOST, "app", "main")
    assert store.env(HOST) is None and store.route(HOST) is None and store.slug_of("app", "main") is None
    assert store.latest(HOST) is None and HOST not in {e.host for e in store.envs()}


def test_follow_log_streams_until_the_last_line(store: Store):
    job = Job(id="j1", app="app", branch="main", action="deploy", host=HOST, env_url="http://x/")
    store.save_job(job)
    store.append_log("j1", "first")
    seen: list[str] = []

    def follow() -> None:
        seen.extend(f["t"] for eid, f in store.follow_log("j1", poll=0.2) if eid)
    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.3)
    assert seen == ["first"], "lines arrive while the job runs"
    store.append_log("j1", "second")
    store.append_log("j1", "live at http://x/", end="succeeded")
    reader.join(5)
    assert not reader.is_alive()
    assert seen == ["first", "second", "live at http://x/"]


def test_log_resumes_after_an_entry_id(store: Store):
    ids = [store.append_log("j2", f"line {i}") for i in range(5)]
    assert [f["t"] for _, f in store.log("j2", after=ids[1])] == ["line 2", "line 3", "line 4"]
    assert store.log_text("j2") == "".join(f"line {i}\n" for i in range(5))


def test_job_roundtrip_and_access_counters(store: Store):
    job = Job(id="j3", app="app", branch="b", action="deploy", host=HOST, env_url="http://x/", params={"A": "1"})
    store.save_job(job)
    store.update_job("j3", status="running", started_at=10.5, steps=[{"name": "fetch"}])
    got = store.job("j3")
    assert got.status == "running" and got.started_at == 10.5 and got.params == {"A": "1"}
    assert got.steps == [{"name": "fetch"}] and got.commit is None
    store.record_access({HOST: 3}, {HOST: 100.0})
    store.record_access({HOST: 2}, {HOST: 200.0})
    assert store.access()[HOST] == (5, 200.0)

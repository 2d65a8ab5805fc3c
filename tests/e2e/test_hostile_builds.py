"""Builds and containers that misbehave: every failure ends in one sentence, the live version keeps
serving, and nothing of the failed attempt is left behind."""

from __future__ import annotations

from .harness import AppRepo, Service, containers, github_push


def push(service: Service, branch: str, sha: str) -> str:
    body, headers = github_push(service.app, branch, sha)
    resp = service.hook("github", body, headers)
    assert resp.status_code == 202, resp.text
    return resp.json()["jobs"][0]["id"]


def test_a_failed_deploy_has_removed_its_container_when_it_says_it_failed(service: Service, app_repo: AppRepo):
    """Whoever acts on the last line (a pusher, a script) must find only the live container."""
    branch = "gone-before-the-end"
    live = service.wait_job(push(service, branch, app_repo.commit(branch, {"www/index.html": "live\n"})))
    assert live["status"] == "succeeded"
    (before,) = containers(service.app, branch)

    silent = app_repo.commit(branch, {"start.sh": "exec /bin/busybox sleep 3600\n"})  # never answers
    job_id = push(service, branch, silent)
    store = service.store
    end = next(fields for _, fields in store.follow_log(job_id) if "end" in fields)
    left = containers(service.app, branch)  # at once, as a pusher would after the last line
    assert end["end"] == "failed" and end["t"].startswith("deploy failed: the app did not answer /")
    assert [c["Id"] for c in left] == [before["Id"]], "the failed container was still there"
    assert service.get(service.host(branch)).text == "live\n"

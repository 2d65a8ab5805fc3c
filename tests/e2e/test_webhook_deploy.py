"""A push reaches a forge, the forge calls us, and the branch goes live: all real, end to end."""

from __future__ import annotations

import threading
import time

import docker
import requests

from .harness import (
    AppRepo,
    Service,
    containers,
    gitea_delete,
    gitea_push,
    github_push,
    gitlab_push,
)


def deploy_via_github(service: Service, branch: str, sha: str) -> dict:
    body, headers = github_push(service.app, branch, sha)
    resp = service.hook("github", body, headers)
    assert resp.status_code == 202, resp.text
    (job,) = resp.json()["jobs"]
    assert job["action"] == "deploy" and job["branch"] == branch
    return service.wait_job(job["id"])


def test_github_push_goes_live_and_the_container_sees_its_branch(service: Service, app_repo: AppRepo):
    sha = app_repo.commit("feature/Login_Page", {"www/index.html": "login v1\n"})
    body, headers = github_push(service.app, "feature/Login_Page", sha)
    resp = service.hook("github", body, headers)
    assert resp.status_code == 202, resp.text
    (job,) = resp.json()["jobs"]
    host = service.host("feature-login-page")
    assert job["env_url"] == f"http://{host}:{service.proxy_port}/"
    assert job["log_url"] == f"/jobs/{job['id']}"

    done = service.wait_job(job["id"])
    assert done["status"] == "succeeded", service.log(job["id"])
    assert done["commit"] == sha and done["env_url"] == job["env_url"]

    page = service.get(host)
    assert page.status_code == 200 and page.text == "login v1\n"
    env_vars = service.get(host, "/cgi-bin/env").text
    assert "GIT_BRANCH=feature/Login_Page" in env_vars
    assert f"GIT_COMMIT={sha}" in env_vars
    assert f"MIRAGE_URL={job['env_url']}" in env_vars and f"MIRAGE_APP={service.app}" in env_vars
    # Routing ignores case and the port in Host.
    assert service.get(f"FEATURE-login-page.{service.domain.upper()}:{service.proxy_port}").text == "login v1\n"

    log = service.log(job["id"])
    for step in ("Fetching the commit", "Building the image", "Starting the container", "Routing traffic"):
        assert step in log
    assert log.rstrip().splitlines()[-1] == f"live at {job['env_url']}"

    (container,) = containers(service.app, "feature/Login_Page")
    assert container["Labels"]["mirage.commit"] == sha
    ports = container["Ports"]
    assert ports and all(p["IP"] == "127.0.0.1" for p in ports)

    envs = requests.get(f"{service.web}/api/envs", timeout=5).json()
    env = next(e for e in envs if e["branch"] == "feature/Login_Page")
    assert env["url"] == job["env_url"] and env["status"] == "live" and env["commit"] == sha
    assert env["slug"] == "feature-login-page" and env["job_id"] == job["id"]


def test_second_push_swaps_without_a_single_5xx(service: Service, app_repo: AppRepo):
    branch = "swap"
    first = deploy_via_github(service, branch, app_repo.commit(branch, {"www/index.html": "one\n"}))
    assert first["status"] == "succeeded"
    host = service.host("swap")
    assert service.get(host).text == "one\n"

    statuses: list[int] = []
    bodies: set[str] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            r = service.get(host)
            statuses.append(r.status_code)
            bodies.add(r.text)
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        second = deploy_via_github(service, branch, app_repo.commit(branch, {"www/index.html": "two\n"}))
        time.sleep(0.5)
    finally:
        stop.set()
        poller.join()
    assert second["status"] == "succeeded"
    assert service.get(host).text == "two\n"
    assert len(statuses) > 20, "the poller should have run throughout the deploy"
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    assert bodies == {"one\n", "two\n"}
    assert len(containers(service.app, branch)) == 1, "the previous container is removed"


def test_broken_build_fails_and_the_old_version_stays_live(service: Service, app_repo: AppRepo):
    branch = "fragile"
    good = deploy_via_github(service, branch, app_repo.commit(branch, {"www/index.html": "good\n"}))
    assert good["status"] == "succeeded"
    before = containers(service.app, branch)

    broken = app_repo.commit(branch, {"Dockerfile": "FROM scratch\nCOPY does-not-exist /x\n"})
    bad = deploy_via_github(service, branch, broken)
    assert bad["status"] == "failed"
    assert "docker build failed" in bad["error"]
    last_line = service.log(bad["id"]).rstrip().splitlines()[-1]
    assert last_line.startswith("deploy failed: docker build failed")

    assert service.get(service.host(branch)).text == "good\n"
    assert [c["Id"] for c in containers(service.app, branch)] == [c["Id"] for c in before]


def test_app_that_never_gets_healthy_fails_and_the_old_version_stays_live(service: Service, app_repo: AppRepo):
    branch = "crashy"
    assert deploy_via_github(service, branch, app_repo.commit(branch, {"www/index.html": "ok\n"}))["status"] == \
        "succeeded"
    crashing = app_repo.commit(branch, {"start.sh": "echo 'boom: missing config' >&2\nexit 3\n"})
    bad = deploy_via_github(service, branch, crashing)
    assert bad["status"] == "failed"
    assert "exited with status 3" in bad["error"]
    assert "boom: missing config" in service.log(bad["id"])
    assert service.get(service.host(branch)).text == "ok\n"
    assert len(containers(service.app, branch)) == 1, "the failed container is removed"
    leftover = docker.from_env().api.images(filters={"reference": f"mirage/*/{service.app}:{branch}_{crashing[:12]}"})
    assert leftover == [], "the failed deploy's image is removed"


def test_branch_delete_tears_everything_down(service: Service, app_repo: AppRepo):
    branch = "short-lived"
    assert deploy_via_github(service, branch, app_repo.commit(branch, {"www/index.html": "bye\n"}))["status"] == \
        "succeeded"
    host = service.host(branch)
    assert service.get(host).status_code == 200

    body, headers = github_push(service.app, branch, "", deleted=True)
    resp = service.hook("github", body, headers)
    assert resp.status_code == 202
    (job,) = resp.json()["jobs"]
    assert job["action"] == "teardown"
    assert service.wait_job(job["id"])["status"] == "succeeded"

    assert service.get(host).status_code == 404
    assert containers(service.app, branch) == []
    images = docker.from_env().api.images(filters={"reference": f"mirage/*/{service.app}:{branch}_*"})
    assert images == []
    assert all(e["branch"] != branch for e in requests.get(f"{service.web}/api/envs", timeout=5).json())


def test_gitlab_and_gitea_pushes_deploy_and_gitea_delete_tears_down(service: Service, app_repo: AppRepo):
    lab = app_repo.commit("from-gitlab", {"www/index.html": "gitlab\n"})
    body, headers = gitlab_push(service.app, "from-gitlab", lab)
    resp = service.hook("gitlab", body, headers)
    assert resp.status_code == 202, resp.text
    assert service.wait_job(resp.json()["jobs"][0]["id"])["status"] == "succeeded"
    assert service.get(service.host("from-gitlab")).text == "gitlab\n"

    tea = app_repo.commit("from-gitea", {"www/index.html": "gitea\n"})
    body, headers = gitea_push(service.app, "from-gitea", tea)
    resp = service.hook("gitea", body, headers)
    assert resp.status_code == 202, resp.text
    assert service.wait_job(resp.json()["jobs"][0]["id"])["status"] == "succeeded"
    assert service.get(service.host("from-gitea")).text == "gitea\n"

    body, headers = gitea_delete(service.app, "from-gitea")
    resp = service.hook("gitea", body, headers)
    assert resp.status_code == 202, resp.text
    assert resp.json()["jobs"][0]["action"] == "teardown"
    assert service.wait_job(resp.json()["jobs"][0]["id"])["status"] == "succeeded"
    assert service.get(service.host("from-gitea")).status_code == 404


def test_bad_signatures_and_empty_tokens_are_401_and_enqueue_nothing(service: Service, app_repo: AppRepo):
    sha = app_repo.commit("unsigned", {"www/index.html": "never\n"})
    jobs_before = service.store.r.zcard("mirage:jobs")
    queued_before = service.store.r.llen("rq:queue:mirage")

    body, headers = github_push(service.app, "unsigned", sha, secret="wrong secret")
    assert service.hook("github", body, headers).status_code == 401
    headers.pop("X-Hub-Signature-256")
    assert service.hook("github", body, headers).status_code == 401
    for token in ("", None, "wrong"):
        body, headers = gitlab_push(service.app, "unsigned", sha, token=token)
        resp = service.hook("gitlab", body, headers)
        assert resp.status_code == 401 and "error" in resp.json()
    body, headers = gitea_push(service.app, "unsigned", sha)
    headers["X-Gitea-Signature"] = "0" * 64
    assert service.hook("gitea", body, headers).status_code == 401

    assert service.store.r.zcard("mirage:jobs") == jobs_before
    assert service.store.r.llen("rq:queue:mirage") == queued_before
    assert service.store.slug_of(service.app, "unsigned") is None


def test_unknown_repo_malformed_body_ping_and_tags(service: Service):
    body, headers = github_push("someone-else", "main", "a" * 40)
    assert service.hook("github", body, headers).status_code == 404
    assert service.hook("github", b"{not json", {"X-GitHub-Event": "push",
                                                 "Content-Type": "application/json"}).status_code == 400
    ping = b'{"zen": "hi", "hook_id": 1, "repository": {"full_name": "example/%s"}}' % service.app.encode()
    _, headers = github_push(service.app, "main", "a" * 40)
    import hashlib
    import hmac

    from .harness import SECRET
    headers.update({"X-GitHub-Event": "ping",
                    "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), ping, hashlib.sha256).hexdigest()})
    assert service.hook("github", ping, headers).status_code == 200

    body, headers = gitlab_push(service.app, "main", "a" * 40)
    headers["X-Gitlab-Event"] = "Tag Push Hook"
    resp = service.hook("gitlab", body, headers)
    assert resp.status_code == 202 and resp.json() == {"ignored": "tag push"}

"""Builds and containers that misbehave: every failure ends in one sentence, the live version keeps
serving, and nothing of the failed attempt is left behind."""

from __future__ import annotations

from .harness import AppRepo, Service, containers, github_push

SERVE = "/bin/busybox mkdir -p /bin /tmp\n/bin/busybox --install -s /bin\n"
DOCKERFILE = ("FROM scratch\nCOPY busybox /bin/busybox\n{run}COPY www /www\nCOPY start.sh /start.sh\nEXPOSE 8080\n"
              'CMD ["/bin/busybox", "sh", "/start.sh"]\n')


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


def test_endless_and_junk_build_output_keeps_the_log_bounded(service: Service, app_repo: AppRepo):
    """20 MB without a line break, control bytes and ANSI junk: the deploy works and the log stays small."""
    noise = ('RUN ["/bin/busybox", "sh", "-c", "printf \'\\\\033[31mred\\\\033]0;title\\\\007\\\\r\\\\001 junk\\\\n\'; '
             "/bin/busybox head -c 20000000 /dev/zero | /bin/busybox tr '\\\\0' a; echo; echo after\"]\n")
    branch = "noisy-build"
    sha = app_repo.commit(branch, {"Dockerfile": DOCKERFILE.format(run=noise), "www/index.html": "quiet\n",
                                   "start.sh": SERVE + "exec /bin/busybox httpd -f -p 8080 -h /www\n"})
    job = service.wait_job(push(service, branch, sha), timeout=300)
    log = service.log(job["id"])
    assert job["status"] == "succeeded", log[-2000:]
    lines = log.splitlines()
    assert max(len(line) for line in lines) < 20_000, "one line must not carry megabytes"
    assert len(log) < 1_000_000
    assert "after" in lines, "the build's output after the endless line still shows"
    assert service.get(service.host(branch)).text == "quiet\n"

"""`up` stops cleanly, containers keep running, and the next `up` serves them again."""

from __future__ import annotations

import secrets

import docker

from .harness import AppRepo, Service, cleanup_docker, containers


def test_envs_survive_a_restart_of_the_service(tmp_path, app_repo: AppRepo):
    app = f"rst{secrets.token_hex(3)}"
    svc = Service(tmp_path, app, app_repo.path)
    svc.start()
    try:
        app_repo.commit("durable", {"www/index.html": "still here\n"})
        assert svc.cli("deploy", app, "durable").returncode == 0
        host = svc.host("durable")
        assert svc.get(host).text == "still here\n"
        (before,) = containers(app, "durable")

        assert svc.stop() == 0
        assert any("stopped; deployed containers keep running" in line for line in svc.output)
        state = docker.from_env().api.inspect_container(before["Id"])["State"]
        assert state["Running"], "stopping the service must not stop deployed containers"

        svc.start()
        assert svc.get(host).text == "still here\n"
        assert any(f"live     {svc.env_url_for('durable')}" in line for line in svc.output), svc.output[-20:]
    finally:
        svc.stop()
        cleanup_docker(app)

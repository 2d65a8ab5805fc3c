"""Two mirage-git installations on one Docker engine never touch each other's containers."""

from __future__ import annotations

import secrets

import docker

from .harness import AppRepo, Service, cleanup_docker


def test_same_app_and_branch_in_two_instances(tmp_path, app_repo: AppRepo):
    app = f"twin{secrets.token_hex(3)}"
    app_repo.commit("shared-branch", {"www/index.html": "twin\n"})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = Service(tmp_path / "a", app, app_repo.path), Service(tmp_path / "b", app, app_repo.path)
    first.start()
    second.start()
    try:
        assert first.cli("deploy", app, "shared-branch").returncode == 0
        (mine,) = docker.from_env().api.containers(filters={"label": f"mirage.app={app}"})
        assert second.cli("deploy", app, "shared-branch").returncode == 0
        assert second.cli("destroy", app, "shared-branch").returncode == 0

        assert docker.from_env().api.inspect_container(mine["Id"])["State"]["Running"]
        assert first.get(first.host("shared-branch")).text == "twin\n"
        tags = [t for i in docker.from_env().api.images(filters={"reference": f"mirage/*/{app}:*"})
                for t in i["RepoTags"]]
        assert len(tags) == 1, tags
    finally:
        first.stop()
        second.stop()
        cleanup_docker(app)

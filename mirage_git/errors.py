"""Failures of the things mirage-git stands on, each phrased as one line that says how to fix it."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix, phrased as one line that says how."""


class Unavailable(UserError):
    """Redis, Docker or git is missing or not answering.

    The message is a single sentence meant for a terminal or an HTTP 503 body; `doctor`
    and every command print exactly this text.
    """

    def __init__(self, what: str, message: str) -> None:
        super().__init__(message)
        self.what = what

    @classmethod
    def redis(cls, where: str, exc: BaseException | None = None) -> Unavailable:
        why = f" ({_first_line(exc)})" if exc else ""
        if where.startswith("unix://") and where.endswith("redis.sock"):
            fix = "start it with `mirage-git up` (or `mirage-git redis`), or set redis_url in the config"
        else:
            fix = "start Redis there or fix redis_url in the config"
        return cls("redis", f"Redis is not reachable at {where}{why}: {fix}.")

    @classmethod
    def docker(cls, exc: BaseException | None = None) -> Unavailable:
        why = f" ({_first_line(exc)})" if exc else ""
        return cls(
            "docker",
            f"Docker engine is not reachable{why}: install it with `apt-get install -y docker.io` and start it "
            "with `dockerd --userland-proxy=false &` (or `systemctl start docker`), or set DOCKER_HOST.",
        )


# What git appends to most failures to reach a repository; the cause is the line before.
_GIT_BOILERPLATE = ("fatal: could not read from remote repository.",
                    "please make sure you have the correct access rights", "and the repository exists.")


def git_failure(stderr: str) -> str | None:
    """The line of git's stderr that says why it failed (the first `fatal:`/`error:` one), or None."""
    lines = [line.strip().removeprefix("stderr: ").strip("'").strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and line.lower() not in _GIT_BOILERPLATE]
    chosen = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[0] if lines else None)
    return chosen[:300] if chosen else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__

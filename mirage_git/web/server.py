"""`mirage-git web`: the Flask app under gunicorn's threaded workers.

Threads, not an event loop: a job log tail or a `git push` holds one request open for
as long as a build runs, and a thread per open stream is simple and plenty for a team.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from ..config import Config
from ..errors import UserError
from ..push import barerepos
from .app import create_app


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, config: Config) -> None:
        self.mirage = config
        super().__init__()

    def load_config(self) -> None:
        web = self.mirage.web
        settings: dict[str, Any] = {
            "bind": [str(web.listen)],
            "workers": 2,
            "worker_class": "gthread",
            "threads": web.threads,
            "timeout": 60,
            "graceful_timeout": 5,
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "mirage-git-web",
            "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms',
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.mirage)


def check_listen(config: Config, insecure: bool) -> None:
    """Refuse to expose the web app beyond loopback when nothing guards it."""
    if config.web.listen.is_loopback or config.auth.token or insecure:
        return
    raise UserError(
        f"refusing to serve the web app on {config.web.listen} with no [auth] token: anyone who can reach it "
        "could deploy or destroy envs. Set [auth] token in the config, listen on 127.0.0.1, or pass --insecure.",
    )


def serve(config: Config, insecure: bool = False) -> None:
    check_listen(config, insecure)
    barerepos.ensure_all(config)  # before forking: the push repositories and their hooks
    _Server(config).run()

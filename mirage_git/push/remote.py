"""`mirage-git remote APP`: the `git remote add` line for an app, and how to keep its token safe."""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlsplit

from ..config import Config
from ..errors import UserError

REMOTE = "mirage"


def url(config: Config, app: str) -> str:
    return f"{config.web.base_url}/git/{app}.git"


def instructions(config: Config, app_name: str, show_token: bool = False) -> str:
    """The `git remote add` line first (so scripts can take line 1), then what the placeholder means."""
    try:
        app = config.app(app_name)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    where = config.path or "the config"
    if not app.push_token:
        raise UserError(f"app {app.name!r} has no push_token, so it takes no pushes: add "
                        f"push_token = \"{secrets.token_urlsafe(24)}\" under [apps.{app.name}] in {where} "
                        "and restart mirage-git")
    plain = url(config, app.name)
    parts = urlsplit(plain)
    token = quote(app.push_token, safe="") if show_token else "<push_token>"
    with_token = f"{parts.scheme}://git:{token}@{parts.netloc}{parts.path}"
    secret = app.push_token if show_token else "<push_token>"
    return "\n".join([
        f"git remote add {REMOTE} {with_token}",
        "",
        *([] if show_token else [
            f"# <push_token> is push_token under [apps.{app.name}] in {where} (`--show-token` fills it in).",
        ]),
        "# Any user name works; it is recorded as the pusher. Then:",
        f"#   git push {REMOTE} feature/login      builds, prints the log live, ends with the URL",
        f"#   git push {REMOTE} :feature/login     tears the env down",
        f"#   git push -o NAME=VALUE {REMOTE} ...  sets a launch parameter",
        "#",
        "# To keep the token out of .git/config, add the remote without it and let a credential helper",
        "# (store, cache, osxkeychain, libsecret, manager) remember it:",
        f"#   git remote add {REMOTE} {plain}",
        "#   git config --global credential.helper store",
        f"#   printf 'protocol={parts.scheme}\\nhost={parts.netloc}\\nusername=git\\npassword={secret}\\n' "
        "| git credential approve",
        "# (or skip the last line: the first push asks for a user name and takes the token as the password).",
    ])

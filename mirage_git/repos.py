"""Repository identity: reduce the many spellings of one repository to one string.

A webhook names its repository by full name, HTTPS URL, SSH URL or scp-style address;
the config may name it by any of those or by a local path. Both sides go through
`normalise` so that matching a delivery to an app is a plain string comparison.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

_SCP = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^/:]+):(?P<path>(?!//).+)$")


def is_local(repo: str) -> bool:
    """True when `repo` is a filesystem path or a file:// URL rather than a remote address."""
    if repo.startswith("file://"):
        return True
    if "://" in repo:
        return False
    return not _SCP.match(repo) or repo.startswith(("/", ".", "~"))


def normalise(repo: str) -> str:
    """The comparable identity of a repository address.

    >>> normalise("git@GitHub.com:Owner/Name.git")
    'github.com/owner/name'
    >>> normalise("https://user@github.com/owner/name/")
    'github.com/owner/name'
    """
    repo = repo.strip()
    if "://" in repo:
        try:
            return _url(repo)
        except ValueError:  # "http://[::1", a port that is no number: nothing can fetch it, compare it as written
            return _strip(repo).casefold()
    if repo.startswith(("/", ".", "~")):
        return _strip(os.path.abspath(os.path.expanduser(repo))).casefold()
    scp = _SCP.match(repo)
    if scp:
        return _strip(f"{scp['host'].lower()}/{scp['path'].lstrip('/')}").casefold()
    # A bare "owner/name" full name, as forges put in their payloads.
    return _strip(repo).casefold()


def _url(repo: str) -> str:
    parts = urlsplit(repo)
    if repo.startswith("file://"):
        return _strip(os.path.abspath(unquote(parts.path))).casefold()
    host = (parts.hostname or "").lower()
    if parts.port and parts.port not in (22, 80, 443):
        host = f"{host}:{parts.port}"
    return _strip(f"{host}{unquote(parts.path)}").casefold()


def matches(identity: str, candidates: frozenset[str]) -> bool:
    """True when `identity` names one of `candidates`, also across the full-name/URL divide.

    A configured `owner/name` matches a payload URL `github.com/owner/name`, and the other
    way round, because forges report both and users write either.
    """
    if identity in candidates:
        return True
    return any(_same_tail(identity, c) for c in candidates)


def _same_tail(a: str, b: str) -> bool:
    short, long = sorted((a, b), key=len)
    # Only a host-less full name ("owner/name") may match, and only a URL identity ("host/owner/name").
    if "/" not in short or _looks_like_host(short.split("/", 1)[0]) or short.startswith("/"):
        return False
    host = long.split("/", 1)[0]
    return _looks_like_host(host) and long == f"{host}/{short}"


def _looks_like_host(segment: str) -> bool:
    return "." in segment or ":" in segment or segment == "localhost"


def _strip(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[:-4]
    return path.rstrip("/")

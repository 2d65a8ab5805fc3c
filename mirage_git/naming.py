"""Branch → hostname: readable DNS labels that never collide.

`slug_candidates` is pure: the readable slug first, then longer and longer hash-suffixed
variants. `store.claim_slug` takes the first one no other branch owns, atomically, and
remembers it for the branch's life, so a host never changes under a running env.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

MAX_LABEL = 63
_OUTSIDE = re.compile(r"[^a-z0-9]+")
_NULL_SHA = re.compile(r"^0+$")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# git-check-ref-format(1): what a branch name can never contain.
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(?:/|$)")


def slugify(branch: str) -> str:
    """The readable DNS label for `branch`: `feature/Login_Page` → `feature-login-page`."""
    slug = _OUTSIDE.sub("-", branch.lower()).strip("-")
    return slug[:MAX_LABEL].rstrip("-")


def slug_candidates(branch: str) -> Iterator[str]:
    """Slugs to try for `branch`, most readable first; each later one is more unique."""
    base = slugify(branch)
    digest = hashlib.sha256(branch.encode("utf-8", "surrogatepass")).hexdigest()
    if base:
        yield base
    for size in (6, 10, 16, 32):
        suffix = digest[:size]
        head = base[: MAX_LABEL - size - 1].rstrip("-")
        yield f"{head}-{suffix}" if head else f"b-{suffix}"


def host(slug: str, domain: str) -> str:
    return f"{slug}.{domain}"


def short_sha(commit: str) -> str:
    return commit[:12]


def is_valid_branch(name: str) -> bool:
    """True when `name` is a branch name git itself would accept (git-check-ref-format)."""
    if not name or len(name) > 255 or name.startswith(("/", "-", ".")) or name.endswith(("/", ".")):
        return False
    if name == "@" or name == "HEAD" or not is_utf8(name):
        return False
    return not _BAD_REF.search(name) and not any(part.startswith(".") for part in name.split("/"))


def is_utf8(text: str) -> bool:
    """False for text with lone surrogates (JSON's "\\ud800"): no git ref, Redis key or env var can hold it."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def is_null_sha(sha: str | None) -> bool:
    """True for git's all-zero object id, in SHA-1 (40) or SHA-256 (64) repositories."""
    return bool(sha) and bool(_NULL_SHA.fullmatch(sha or ""))


def is_sha(value: str | None) -> bool:
    return bool(value) and bool(_SHA.fullmatch(value or ""))

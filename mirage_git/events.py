"""Forge webhook deliveries → verified push events.

Pure functions over (headers, raw body): no Redis, no Docker, no network. The web layer
turns the `WebhookError`s raised here into HTTP answers. Signatures are always checked
over the raw bytes received, never over re-serialised JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from . import naming, repos

FORGES = ("github", "gitlab", "gitea")


class WebhookError(Exception):
    """A delivery that must be refused; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PushEvent:
    """One branch that moved: deploy `commit`, or tear the env down when `deleted`."""

    branch: str
    commit: str | None
    deleted: bool = False
    pusher: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class Delivery:
    """What a forge sent, before it is matched to an app.

    `kind` is "push", "ping" or "ignored"; `repo_ids` are the normalised identities the
    payload gives its repository, used to find the app (and so the secret to verify with).
    """

    forge: str
    kind: str
    repo_ids: frozenset[str] = frozenset()
    pushes: tuple[PushEvent, ...] = ()
    reason: str = ""
    delivery_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def read(forge: str, headers: Mapping[str, str], body: bytes) -> Delivery:
    """Parse a delivery from `forge`. Raises WebhookError(400) for a malformed body."""
    if forge not in FORGES:
        raise WebhookError(404, f"unknown forge {forge!r}; use one of {', '.join(FORGES)}")
    h = _Headers(headers)
    if forge == "github":
        return _github(h, _payload(h, body))
    if forge == "gitlab":
        return _gitlab(h, _payload(h, body))
    return _gitea(h, _payload(h, body))


def verify(forge: str, headers: Mapping[str, str], body: bytes, secret: str | None) -> bool:
    """True when the delivery carries a valid signature (or token) for `secret`.

    An app without a secret accepts nothing: an unauthenticated deploy trigger would let
    anyone run containers on this host.
    """
    if not secret:
        return False
    h = _Headers(headers)
    key = secret.encode()
    if forge == "gitlab":
        token = h.get("x-gitlab-token")
        return bool(token) and hmac.compare_digest(token.encode(), key)
    # Compared as bytes: headers may carry any latin-1 text, and comparing non-ASCII str raises.
    expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
    if forge == "github":
        given = h.get("x-hub-signature-256")
        return given.startswith("sha256=") and hmac.compare_digest(given[7:].strip().lower().encode(), expected)
    given = h.get("x-forgejo-signature") or h.get("x-gitea-signature")
    return bool(given) and hmac.compare_digest(given.strip().lower().encode(), expected)


class _Headers:
    """Case-insensitive header lookup that always yields a string."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._h = {k.lower(): v for k, v in headers.items()}

    def get(self, name: str) -> str:
        return self._h.get(name, "") or ""


def _payload(h: _Headers, body: bytes) -> Mapping[str, Any]:
    """Decode a JSON body, or a form body whose `payload` field holds the JSON."""
    if not body:
        raise WebhookError(400, "empty body")
    ctype = h.get("content-type").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
        if ctype == "application/x-www-form-urlencoded":
            fields = parse_qs(text, strict_parsing=True)
            if len(fields.get("payload", ())) != 1:
                raise WebhookError(400, "form body must carry exactly one 'payload' field")
            text = fields["payload"][0]
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WebhookError(400, "body is not valid JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise WebhookError(400, "body must be a JSON object")
    return data


def _github(h: _Headers, p: Mapping[str, Any]) -> Delivery:
    event = h.get("x-github-event")
    repo = _obj(p, "repository")
    ids = _ids(repo.get("full_name"), repo.get("clone_url"), repo.get("ssh_url"), repo.get("html_url"),
               repo.get("git_url"), repo.get("url"), repo.get("svn_url"))
    delivery = h.get("x-github-delivery") or None
    if event == "ping":
        return Delivery("github", "ping", ids, delivery_id=delivery, extra={"zen": p.get("zen")})
    if event != "push":
        return Delivery("github", "ignored", ids, reason=f"event {event or '(none)'!r} is not handled",
                        delivery_id=delivery)
    head = p.get("head_commit") if isinstance(p.get("head_commit"), dict) else {}
    pusher = _obj(p, "pusher").get("name") or _obj(p, "sender").get("login")
    return _push("github", ids, p, delivery, commit=head.get("id") or p.get("after"),
                 deleted=p.get("deleted") is True, pusher=pusher, message=head.get("message"))


def _gitlab(h: _Headers, p: Mapping[str, Any]) -> Delivery:
    event = h.get("x-gitlab-event")
    project = _obj(p, "project")
    repo = _obj(p, "repository")
    ids = _ids(project.get("path_with_namespace"), project.get("git_http_url"), project.get("git_ssh_url"),
               project.get("web_url"), project.get("http_url"), project.get("ssh_url"),
               repo.get("git_http_url"), repo.get("git_ssh_url"), repo.get("homepage"), repo.get("url"))
    delivery = h.get("idempotency-key") or h.get("x-gitlab-event-uuid") or None
    if event == "Tag Push Hook":
        return Delivery("gitlab", "ignored", ids, reason="tag push", delivery_id=delivery)
    if event != "Push Hook" and not (event == "System Hook" and p.get("object_kind") == "push"):
        return Delivery("gitlab", "ignored", ids, reason=f"event {event or '(none)'!r} is not handled",
                        delivery_id=delivery)
    commits = p.get("commits") if isinstance(p.get("commits"), list) else []
    checkout = p.get("checkout_sha")
    message = next((c.get("message") for c in commits if isinstance(c, dict) and c.get("id") == checkout), None)
    return _push("gitlab", ids, p, delivery, commit=checkout or p.get("after"), deleted=False,
                 pusher=p.get("user_username") or p.get("user_name"), message=message)


def _gitea(h: _Headers, p: Mapping[str, Any]) -> Delivery:
    # Gitea and Forgejo also send X-GitHub-Event, so their own headers decide the event.
    event = h.get("x-forgejo-event") or h.get("x-gitea-event") or h.get("x-gogs-event")
    repo = _obj(p, "repository")
    ids = _ids(repo.get("full_name"), repo.get("clone_url"), repo.get("ssh_url"), repo.get("html_url"))
    delivery = h.get("x-forgejo-delivery") or h.get("x-gitea-delivery") or None
    pusher = _obj(p, "pusher").get("login") or _obj(p, "sender").get("login")
    if event == "delete":
        ref, ref_type = p.get("ref"), p.get("ref_type")
        if ref_type != "branch":
            return Delivery("gitea", "ignored", ids, reason=f"{ref_type or 'ref'} delete", delivery_id=delivery)
        branch = _branch_name(ref)
        return Delivery("gitea", "push", ids, (PushEvent(branch, None, True, _text(pusher) or None),),
                        delivery_id=delivery)
    if event != "push":
        return Delivery("gitea", "ignored", ids, reason=f"event {event or '(none)'!r} is not handled",
                        delivery_id=delivery)
    head = p.get("head_commit") if isinstance(p.get("head_commit"), dict) else {}
    commits = p.get("commits") if isinstance(p.get("commits"), list) else []
    message = head.get("message") or next(
        (c.get("message") for c in commits if isinstance(c, dict) and c.get("id") == p.get("after")), None)
    return _push("gitea", ids, p, delivery, commit=p.get("after") or head.get("id"), deleted=False,
                 pusher=pusher, message=message)


def _push(forge: str, ids: frozenset[str], p: Mapping[str, Any], delivery: str | None, *, commit: Any,
          deleted: bool, pusher: Any, message: Any) -> Delivery:
    ref = p.get("ref")
    if not isinstance(ref, str) or not ref:
        raise WebhookError(400, "push payload has no 'ref'")
    if ref.startswith("refs/tags/"):
        return Delivery(forge, "ignored", ids, reason="tag push", delivery_id=delivery)
    if not ref.startswith("refs/heads/"):
        return Delivery(forge, "ignored", ids, reason=f"ref {ref!r} is not a branch", delivery_id=delivery)
    branch = _branch_name(ref[len("refs/heads/"):])
    deleted = deleted or naming.is_null_sha(p.get("after") if isinstance(p.get("after"), str) else None)
    if deleted:
        return Delivery(forge, "push", ids, (PushEvent(branch, None, True, _text(pusher) or None),),
                        delivery_id=delivery)
    if not isinstance(commit, str) or not naming.is_sha(commit.lower()):
        raise WebhookError(400, "push payload has no valid commit id ('after')")
    subject = _text(message).splitlines()[0][:200] if _text(message) else None
    event = PushEvent(branch, commit.lower(), False, _text(pusher) or None, subject)
    return Delivery(forge, "push", ids, (event,), delivery_id=delivery)


def _branch_name(name: Any) -> str:
    if not isinstance(name, str) or not naming.is_valid_branch(name):
        raise WebhookError(400, f"invalid branch name {name!r}")
    return name


def _obj(p: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = p.get(key)
    return value if isinstance(value, dict) else {}


def _ids(*values: Any) -> frozenset[str]:
    return frozenset(repos.normalise(v) for v in values if isinstance(v, str) and v.strip())


def _text(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    # JSON may carry lone surrogates ("\ud800"), which no UTF-8 store can hold: they become "?".
    return value.encode("utf-8", "replace").decode("utf-8").strip()

"""The proxy's own answers: small, complete HTTP/1.1 responses with an HTML page.

Each function returns the whole response (head and body) as bytes, so the server can
write it with one call and cache it; nothing here does I/O. Every value that came from
a request or from Redis is HTML-escaped.
"""

from __future__ import annotations

from html import escape

from ..models import Route

REFRESH_SECONDS = 3

_REASONS = {
    400: "Bad Request", 404: "Not Found", 408: "Request Timeout", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}"
    "h1{font-size:1.4rem}code{background:#f3f3f3;padding:0 .25rem}ul{padding-left:1.2rem}"
)


def page(status: int, title: str, body: str, *, close: bool = False, refresh: int | None = None) -> bytes:
    """A complete response: `body` is trusted HTML (callers escape what they interpolate)."""
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>{meta}'
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}"
        f'<p><small>{status} {_REASONS.get(status, "")} · mirage-git proxy</small></p></body></html>\n'
    ).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: text/html; charset=utf-8",
        f"Content-Length: {len(html)}",
        "Cache-Control: no-store",
    ]
    if refresh:
        head.append(f"Retry-After: {refresh}")
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + html


LISTED_MAX = 50  # live envs a 404 page links to; the dashboard lists them all


def live_listing(live: list[tuple[str, str]], dashboard: str) -> str:
    """The 404 page's list of live envs (`live` = (host, url) pairs), built once per route change."""
    items = "".join(f'<li><a href="{escape(url)}">{escape(name)}</a></li>' for name, url in live[:LISTED_MAX])
    if len(live) > LISTED_MAX:
        items += f'<li><a href="{escape(dashboard)}">{len(live) - LISTED_MAX} more on the dashboard</a></li>'
    return f"<p>Live environments:</p><ul>{items}</ul>" if items else "<p>No environment is live yet.</p>"


def not_found(host: str, listing: str) -> bytes:
    """Unknown host: say so, with `live_listing`'s links."""
    shown = f"<code>{escape(host)}</code>" if host else "this request (it names no host)"
    return page(404, "No such environment", f"<p>Nothing is deployed at {shown}.</p>{listing}")


def building(route: Route, log_url: str | None) -> bytes:
    """First deploy still running: refresh every few seconds until it is live."""
    link = f'<p><a href="{escape(log_url)}">Follow the build log</a></p>' if log_url else ""
    body = (
        f"<p><code>{escape(route.branch)}</code> of <code>{escape(route.app)}</code> is being built "
        f"and deployed. This page reloads every {REFRESH_SECONDS} seconds until it is live.</p>{link}"
    )
    return page(503, "Deploying…", body, refresh=REFRESH_SECONDS)


def failed(route: Route, log_url: str | None) -> bytes:
    """First deploy failed, so nothing is live at this host."""
    link = f'<p><a href="{escape(log_url)}">Read the build log</a> to see why.</p>' if log_url else ""
    body = (
        f"<p>The deploy of <code>{escape(route.branch)}</code> of <code>{escape(route.app)}</code> failed, "
        f"and no earlier version is live.</p>{link}"
    )
    return page(503, "Deploy failed", body)


def bad_gateway(host: str, why: str) -> bytes:
    return page(502, "Environment not answering", f"<p><code>{escape(host)}</code>: {escape(why)}</p>")


def gateway_timeout(host: str, seconds: float) -> bytes:
    body = f"<p><code>{escape(host)}</code> did not accept a connection within {seconds:g} s.</p>"
    return page(504, "Environment timed out", body)


def bad_request(why: str) -> bytes:
    """Always closes: after a malformed request the byte stream cannot be trusted."""
    return page(400, "Bad request", f"<p>{escape(why)}</p>", close=True)

"""Run `git http-backend` (CGI) for one request, streaming both ways.

git's own CGI speaks the smart HTTP protocol, so mirage-git never parses a pack. The
request body is copied into the CGI's stdin by a thread, 64 KiB at a time, while the
response is read from its stdout as it comes: a 200 MB push or clone never sits in memory,
and the hooks' `remote:` lines reach the pusher the moment they are written.

If the client goes away mid-push, the push is finished anyway: its output is drained to
nowhere until git exits, so the hooks see their jobs through and the refs end up where
they would have. An abandoned fetch or clone is simply stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 64 * 1024
MAX_HEADER = 64 * 1024


@dataclass
class CgiResponse:
    status: int
    headers: list[tuple[str, str]]
    body: Iterator[bytes]


def run(env: Mapping[str, str], body: BinaryIO | None, length: int | None, *, finish_on_disconnect: bool,
        ) -> CgiResponse:
    """Start `git http-backend` with the CGI variables in `env` and return its streaming response.

    `body` is read until `length` bytes, or to its end when `length` is None (a chunked
    request; the WSGI server has decoded the chunks and signals the end with b"").
    """
    proc = subprocess.Popen(["git", "http-backend"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(env), bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    threading.Thread(target=_feed, args=(body, length, proc.stdin), daemon=True,
                     name=f"git-http-backend-{proc.pid}-stdin").start()
    try:
        status, headers, rest = _read_headers(proc.stdout)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return CgiResponse(status, headers, _body(proc, rest, finish_on_disconnect))


def _feed(body: BinaryIO | None, length: int | None, stdin: BinaryIO) -> None:
    try:
        remaining = length
        while body is not None and (remaining is None or remaining > 0):
            chunk = body.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                break
            stdin.write(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    except Exception:
        # The CGI exited early (OSError), or the client went away mid-upload (gunicorn raises its
        # own errors for a cut chunked body): either way git sees a short body and refuses it.
        pass
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _read_headers(stdout: BinaryIO) -> tuple[int, list[tuple[str, str]], bytes]:
    buf = b""
    while True:
        for sep in (b"\r\n\r\n", b"\n\n"):
            head, found, rest = buf.partition(sep)
            if found:
                return (*_parse_headers(head), rest)
        if len(buf) > MAX_HEADER:
            raise RuntimeError("git http-backend sent an oversized header")
        chunk = os.read(stdout.fileno(), CHUNK)
        if not chunk:
            raise RuntimeError("git http-backend exited without a response")
        buf += chunk


def _parse_headers(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers.append((name, value))
    return status, headers


def _body(proc: subprocess.Popen[bytes], first: bytes, finish_on_disconnect: bool) -> Iterator[bytes]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    complete = False
    try:
        if first:
            yield first
        while chunk := os.read(fd, CHUNK):
            yield chunk
        complete = True
    finally:
        if complete:
            proc.stdout.close()
            proc.wait()
        elif finish_on_disconnect:
            threading.Thread(target=_drain, args=(proc,), daemon=True, name=f"git-http-backend-{proc.pid}-drain",
                             ).start()
        else:
            proc.kill()
            proc.stdout.close()
            proc.wait()


def _drain(proc: subprocess.Popen[bytes]) -> None:
    """Read and drop what git still says, so that the push (and its hooks) can run to the end."""
    assert proc.stdout is not None
    with contextlib.suppress(OSError):
        while os.read(proc.stdout.fileno(), CHUNK):
            pass
    proc.stdout.close()
    proc.wait()

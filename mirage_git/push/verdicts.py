"""The pre-receive hook's verdict on each ref, handed to the `update` hook of the same push.

git runs pre-receive once for the whole push, then `update` once per ref; both are children
of the same `git receive-pack` process and know nothing else in common (the quarantine is
gone by the time `update` runs). So the verdicts are kept in a small file named after
receive-pack's pid. Each entry also records the ref's old and new ids, so a stale file from
a long-gone process with a recycled pid can never let a ref through by mistake.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FOLDER = "mirage-pushes"
KEEP = 24 * 3600.0


@dataclass(frozen=True)
class Verdict:
    ref: str
    old: str
    new: str
    accept: bool


def _file(git_dir: Path, receiver: int) -> Path:
    return git_dir / FOLDER / f"{receiver}.json"


def save(git_dir: Path, receiver: int, verdicts: list[Verdict]) -> None:
    folder = git_dir / FOLDER
    folder.mkdir(exist_ok=True)
    _sweep(folder)
    tmp = folder / f".{receiver}.tmp"
    tmp.write_text(json.dumps([asdict(v) for v in verdicts]))
    tmp.replace(_file(git_dir, receiver))


def accepts(git_dir: Path, receiver: int, ref: str, old: str, new: str) -> bool | None:
    """True or False as pre-receive decided for this exact update; None when it left no verdict."""
    try:
        entries = json.loads(_file(git_dir, receiver).read_text())
    except (OSError, ValueError):
        return None
    for entry in entries:
        if (entry.get("ref"), entry.get("old"), entry.get("new")) == (ref, old, new):
            return bool(entry.get("accept"))
    return None


def _sweep(folder: Path) -> None:
    cutoff = time.time() - KEEP
    for file in folder.iterdir():
        with contextlib.suppress(OSError):
            if file.stat().st_mtime < cutoff:
                os.unlink(file)

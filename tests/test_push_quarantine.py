"""The quarantine pitfall, with real git: a pre-receive hook sees a commit no fetch can reach.

The hook below plays the worker: from a clean environment (as a worker process has), it
tries a plain fetch of the pushed branch, then `fetch_pushed` with the quarantine path,
then declines the push, so git throws the quarantine away. The cache must still hold a
complete, exportable commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from worker import source

ROOT = Path(__file__).resolve().parents[1]
ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
       "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"}


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=ENV)


def test_fetch_pushed_reads_the_quarantine_and_the_cache_outlives_it(tmp_path: Path):
    origin, cache, out = tmp_path / "origin.git", tmp_path / "cache.git", tmp_path / "out.json"
    assert git(tmp_path, "init", "-q", "--bare", str(origin)).returncode == 0
    worker_side = tmp_path / "worker_side.py"
    worker_side.write_text(textwrap.dedent(f"""
        import json, sys
        from worker import source
        quarantine, commit = sys.argv[1:]
        lines, result = [], {{"quarantine": quarantine}}
        from pathlib import Path
        try:
            source.fetch(Path({str(cache)!r}), {str(origin)!r}, "topic", commit, lines.append)
            result["plain"] = "fetched"
        except source.SourceError as exc:
            result["plain"] = str(exc)
        result["pushed"] = source.fetch_pushed(Path({str(cache)!r}), {str(origin)!r}, "topic", commit, quarantine,
                                               lines.append)
        result["log"] = lines
        Path({str(out)!r}).write_text(json.dumps(result))
        sys.exit(1)  # decline the push: git deletes the quarantine
    """))
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        read old new ref
        exec env -u GIT_DIR -u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES -u GIT_QUARANTINE_PATH \\
          PYTHONPATH={ROOT} {sys.executable} {worker_side} "$GIT_QUARANTINE_PATH" "$new"
    """))
    hook.chmod(0o755)

    src = tmp_path / "src"
    git(tmp_path, "init", "-q", "-b", "topic", str(src))
    (src / "sub").mkdir()
    (src / "sub" / "page.html").write_text("pushed\n")
    git(src, "add", "-A")
    git(src, "commit", "-qm", "pushed")
    commit = git(src, "rev-parse", "HEAD").stdout.strip()

    push = git(src, "push", str(origin), "topic")
    assert push.returncode != 0 and "pre-receive hook declined" in push.stderr, push.stderr
    result = json.loads(out.read_text())
    assert "tmp_objdir-incoming" in result["quarantine"]
    assert result["plain"] != "fetched", "a plain fetch cannot see quarantined objects (else this test proves nothing)"
    assert result["pushed"] == commit
    assert any("in quarantine" in line for line in result["log"])

    # The push was declined: the origin never got the commit, and the quarantine is gone...
    assert git(origin, "cat-file", "-e", commit).returncode != 0
    assert not Path(result["quarantine"]).exists()
    # ...yet the cache is whole on its own: no alternates, fsck clean, and the tree exports.
    assert not (cache / "objects" / "info" / "alternates").exists()
    assert git(cache, "fsck", "--strict").returncode == 0
    dest = tmp_path / "tree"
    source.export(cache, commit, "sub", dest)
    assert (dest / "page.html").read_text() == "pushed\n"
    source.export(cache, commit, ".", tmp_path / "whole")
    assert (tmp_path / "whole" / "sub" / "page.html").read_text() == "pushed\n"


def test_fetch_pushed_after_the_push_landed_needs_no_quarantine(tmp_path: Path):
    origin, cache = tmp_path / "origin.git", tmp_path / "cache.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    src = tmp_path / "src"
    git(tmp_path, "init", "-q", "-b", "main", str(src))
    (src / "f").write_text("x\n")
    git(src, "add", "-A")
    git(src, "commit", "-qm", "x")
    commit = git(src, "rev-parse", "HEAD").stdout.strip()
    assert git(src, "push", "-q", str(origin), "main:other").returncode == 0
    # The quarantine named in the job is long gone (the hook returned); the objects are in the repo now.
    gone = str(origin / "objects" / "tmp_objdir-incoming-gone")
    assert source.fetch_pushed(cache, str(origin), "main", commit, gone, lambda _: None) == commit
    assert git(cache, "rev-parse", "refs/mirage/heads/main").stdout.strip() == commit

"""The proxy's hot path as native code: built from the same Python source by mypyc, used only when it matches.

Per request, the proxy runs a few dozen lines of Python in `client`, `upstream`,
`headers` and `server`. Interpreted, that Python costs about as much CPU as the kernel's
loopback TCP work for the same request, which is what kept the proxy below nginx on two
cores. mypyc compiles these typed modules, unchanged, to a C extension: attribute access
and calls between the proxy's own classes become C, and the same request costs about a
third less. The Python files stay the source of truth; nothing is hand-written in C.

The build lands in `_native/` beside this file (not beside the sources, where it would
silently shadow an edited `.py`), with a manifest of the sources' digest. `activate()`
puts that folder first on the package's `__path__` only when the digest matches, every
file is there for this interpreter, and `MIRAGE_PROXY_NATIVE` is not `0`; otherwise the
proxy runs the Python modules and `status()` says why. Build with
`mirage-git build-proxy` (scripts/setup does).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HOT_MODULES = ("server", "headers", "upstream", "client")  # what the request path runs, and nothing else
GROUP = "_hot"  # names mypyc's shared library for the group: `_native/_hot__mypyc.<abi>.so`
HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "_native"
MANIFEST = "manifest.json"

_status: str | None = None


def digest(source_dir: Path = HERE) -> str:
    """What the build must match: the hot modules' source and this interpreter's version."""
    h = hashlib.sha256(sys.version.encode())
    for name in HOT_MODULES:
        h.update(b"\0" + name.encode() + b"\0" + (source_dir / f"{name}.py").read_bytes())
    return h.hexdigest()


def _expected_files() -> list[str]:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. ".cpython-311-x86_64-linux-gnu.so"
    return [f"{name}{suffix}" for name in (*HOT_MODULES, f"{GROUP}__mypyc")]


def unusable(build_dir: Path = BUILD_DIR) -> str | None:
    """Why the build in `build_dir` cannot be used (None: it can)."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return "not built (mirage-git build-proxy builds it)"
    if manifest.get("digest") != digest():
        return "built from other source or another Python; rebuild with mirage-git build-proxy"
    missing = [f for f in _expected_files() if not (build_dir / f).is_file()]
    if missing:
        return f"incomplete build (missing {', '.join(missing)})"
    return None


def activate(package_path: list[str], build_dir: Path = BUILD_DIR) -> None:
    """Put the native build first on `package_path` (the proxy package's `__path__`) if it is usable.

    Called once, from the package's `__init__`, before any hot module is imported.
    """
    global _status
    why = "MIRAGE_PROXY_NATIVE=0" if os.environ.get("MIRAGE_PROXY_NATIVE", "1") == "0" else unusable(build_dir)
    if why is None:
        package_path.insert(0, str(build_dir))
        _status = "native (mypyc)"
    else:
        _status = f"pure Python: {why}"


def status() -> str:
    """How the hot path runs in this process, for the startup log and `doctor`."""
    return _status or "pure Python: not activated"


def build(build_dir: Path = BUILD_DIR) -> Path:
    """Compile the hot modules with mypyc into `build_dir`, replacing what was there. Raises on failure."""
    try:
        import mypyc  # noqa: F401  (only to fail early, with a clear message)
    except ImportError:
        raise RuntimeError("mypyc is not installed (pip install 'mirage-git[native]')") from None
    with tempfile.TemporaryDirectory(prefix="mirage-native-") as tmp_name:
        tmp = Path(tmp_name)
        package = tmp / "mirage_git"
        # The whole package, so mypy sees every type the hot modules import; only they are compiled.
        shutil.copytree(HERE.parent, package, ignore=shutil.ignore_patterns("_native", "__pycache__", "*.so"))
        modules = [f"mirage_git/proxy/{name}.py" for name in HOT_MODULES]
        # Type errors elsewhere in the package (redis's loose stubs) are not the compiler's business.
        (tmp / "mypy.ini").write_text("[mypy]\nfollow_imports = silent\n")
        (tmp / "setup.py").write_text(
            "from setuptools import setup\nfrom mypyc.build import mypycify\n"
            f"setup(name='mirage-native', ext_modules=mypycify({modules!r}, opt_level='3',"
            f" group_name={'mirage_git.proxy.' + GROUP!r}))\n")
        done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"mypyc failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        staging = build_dir.with_name(build_dir.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in _expected_files():
            shutil.copy2(package / "proxy" / name, staging / name)
        (staging / MANIFEST).write_text(json.dumps({"digest": digest(), "python": sys.version}) + "\n")
    shutil.rmtree(build_dir, ignore_errors=True)
    staging.rename(build_dir)
    return build_dir

"""The reverse proxy: `<branch-slug>.<domain>` → the env's container, per request.

`serve(config)` binds the listeners and runs the proxy until SIGINT/SIGTERM. With
`[proxy] workers = N > 1` it forks N worker processes, each with its own SO_REUSEPORT
socket per listener, so the kernel spreads connections over all cores; the parent only
supervises (restarts a worker that dies, forwards the stop signal).

Modules: `routes` (where routes come from), `server` (how requests are forwarded),
`headers` (head rewriting), `pages` (our own HTML answers), `counters` (access batching),
`worker` (one process's event loop), `native` (the hot path compiled by mypyc).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time

from ..config import Address, Config
from ..lifetime import die_with_parent
from . import native

native.activate(__path__)  # before any hot module is imported: they then load from the native build

__all__ = ["serve"]

log = logging.getLogger("mirage_git.proxy")

_RESTART_BACKOFF = (0.1, 5.0)


def serve(config: Config) -> None:
    """Run the proxy for `config` until SIGINT or SIGTERM; returns after a clean shutdown."""
    from . import worker

    _default_logging()
    wanted = [(config.proxy.listen, None), *((p.listen, p.target) for p in config.proxy.ports)]
    n = config.proxy.workers
    if n == 1:
        worker.run(config, [(_listen(addr, reuse_port=False), target) for addr, target in wanted])
        return
    # One socket per listener per worker, all bound before forking so a busy port fails here, once.
    sets = [[(_listen(addr, reuse_port=True), target) for addr, target in wanted] for _ in range(n)]
    _Supervisor(config, sets).run()


def _listen(addr: Address, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, sockaddr = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(4096)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"proxy cannot listen on {addr}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class _Supervisor:
    """Forks one worker per socket set and keeps them running until told to stop."""

    def __init__(self, config: Config, sets: list[list[tuple[socket.socket, int | None]]]) -> None:
        self.config = config
        self.sets = sets
        self.children: dict[int, int] = {}  # pid → index into sets
        self.stopping = False
        self.parent = os.getpid()

    def run(self) -> None:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for i in range(len(self.sets)):
                self._spawn(i)
            log.info("proxy supervisor %d started %d workers", os.getpid(), len(self.sets))
            started = dict.fromkeys(range(len(self.sets)), time.monotonic())
            backoff = dict.fromkeys(range(len(self.sets)), _RESTART_BACKOFF[0])
            while self.children:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                i = self.children.pop(pid, None)
                if i is None or self.stopping:
                    continue
                log.error("proxy worker %d exited (%s); restarting it", pid, _describe(status))
                if time.monotonic() - started[i] < 10:
                    time.sleep(backoff[i])
                    backoff[i] = min(backoff[i] * 2, _RESTART_BACKOFF[1])
                else:
                    backoff[i] = _RESTART_BACKOFF[0]
                if not self.stopping:
                    started[i] = time.monotonic()
                    self._spawn(i)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sockets in self.sets:
                for sock, _ in sockets:
                    sock.close()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn(self, i: int) -> None:
        pid = os.fork()
        if pid:
            self.children[pid] = i
            return
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            die_with_parent(self.parent)
            for j, sockets in enumerate(self.sets):
                if j != i:
                    for sock, _ in sockets:
                        sock.close()
            from . import worker

            worker.run(self.config, self.sets[i])
        except BaseException:
            log.exception("proxy worker crashed")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"status {os.waitstatus_to_exitcode(status)}"


def _default_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s proxy[%(process)d] %(levelname)s %(message)s")

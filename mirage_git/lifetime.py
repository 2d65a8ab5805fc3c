"""Child processes that end with the process that started them, even when it is killed outright.

A supervisor that is SIGKILLed (or crashes) cannot pass a stop signal on; without this its
children would keep running as orphans, holding ports, Redis connections and jobs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when `parent_pid`, its parent, exits.

    Call it first thing in the child. If the parent is already gone by then, `sig` comes at once.
    Elsewhere than Linux this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent_pid:  # it died before the request above took effect
        os.kill(os.getpid(), sig)

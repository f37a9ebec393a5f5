"""Thread priority: background and bulk work gives way to the stage that cannot wait.

    lower_this_thread(10)   # the calling thread only (Linux keeps niceness per thread)

Raising niceness needs no privilege. Where it cannot be set (not Linux, a sandbox that
refuses it) nothing changes and the caller goes on at its priority.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)
MAX_NICENESS = 19


def lower_this_thread(by: int) -> None:
    """Adds `by` to the calling thread's niceness (at most MAX_NICENESS); threads it starts
    later inherit it."""
    if by <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICENESS, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError:
        log.debug("thread %s keeps its priority", threading.current_thread().name, exc_info=True)

"""Fork tests: a child that reports through its exit status, and a held lock.

Imported by the tests as ``from forking import ...`` (``tests/`` is on sys.path,
as for ``servers``)::

    with held_by_another_thread(registry._follow_lock):
        assert run_in_child(lambda: registry.find_by_subdomain("acme") is not None) == 0
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: Seconds a forked child may run before it counts as hung and is killed.
FORK_DEADLINE = 20.0
#: Seconds a helper thread gets to take or give back a lock.
LOCK_TIMEOUT = 5.0


def run_in_child(
    child: Callable[[], bool], deadline: float = FORK_DEADLINE
) -> int | None:
    """Fork; the child's exit status says whether ``child()`` held (None: hung).

    The child never returns to pytest: it reports through its exit status only
    (0 yes, 1 no, 2 it raised). A child alive after ``deadline`` seconds is
    killed, so a deadlocked child fails the test instead of hanging it.
    """
    pid = os.fork()
    if pid == 0:
        status = 2
        try:
            status = 0 if child() else 1
        finally:
            os._exit(status)
    ends = time.monotonic() + deadline
    pause = threading.Event()
    while time.monotonic() < ends:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        pause.wait(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@contextmanager
def held_by_another_thread(lock: Any) -> Iterator[None]:
    """``lock`` held by a thread of its own for the ``with`` block, as a poll,
    a start or a racing first lookup may hold it when a server forks."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(FORK_DEADLINE)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert held.wait(LOCK_TIMEOUT), "the helper thread never took the lock"
        yield
    finally:
        release.set()
        thread.join(LOCK_TIMEOUT)

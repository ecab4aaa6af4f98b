"""Follow the registry's change feed, so every process sees every process's writes.

A :class:`ChangeFollower` runs in each process that serves requests. Its poll
thread asks the registry for changes since the last generation it saw, at most
every ``poll_interval`` seconds (one primary-key range scan, whatever the number
of tenants), and hands each change to ``publish``. On PostgreSQL a second thread
keeps a dedicated connection ``LISTEN``-ing for the registry's ``NOTIFY`` and
wakes the poll thread at once; a notification lost while disconnected is
recovered by the next poll, and the listener reconnects with backoff. Neither
thread is ever on a request's path.

Threads do not survive ``fork``: :meth:`start` notices the new process and starts
fresh ones, so a follower is safe under ``gunicorn --preload``.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from dispatcher.exceptions import RegistryError
from dispatcher.tenant import RESYNC, TenantChange

if TYPE_CHECKING:
    from dispatcher.registry import TenantRegistry

__all__ = ["ChangeFollower"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 10.0
_PAGE = 1000


class ChangeFollower:
    """Publishes the registry's changes, whoever wrote them, in this process.

    If the newest generation could not be read at start, the first successful
    poll reads it; apps built meanwhile may predate changes it will never see,
    so it publishes a ``RESYNC`` change and listeners drop what they built.
    """

    def __init__(
        self,
        registry: TenantRegistry,
        publish: Callable[[TenantChange], None],
        *,
        poll_interval: float = 1.0,
    ) -> None:
        self.registry = registry
        self.publish = publish
        self.poll_interval = poll_interval
        self.generation: int | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._pid == os.getpid() and not self._stop.is_set()

    def start(self) -> None:
        """Start the threads in this process; a no-op if they already run.

        Reads the newest generation first, so nothing committed after this
        call is missed; if the database cannot say, the poll thread asks again
        and then publishes ``RESYNC``.
        """
        with self._lock:
            if self.running:
                return
            # A fresh start, also after fork: the parent's threads are gone.
            try:
                self.generation = self.registry.latest_generation()
            except Exception as e:
                # The poll thread asks again, then publishes RESYNC.
                log.warning("following changes from an unknown generation: %s", e)
                self.generation = None
            self._stop = threading.Event()
            self._wake = threading.Event()
            loops = [_poll_loop]
            if self.registry.can_listen:
                loops.append(_listen_loop)
            self._threads = [
                threading.Thread(
                    target=loop,
                    args=(weakref.ref(self), self._stop),
                    name=f"dispatcher-{loop.__name__.strip('_')}",
                    daemon=True,
                )
                for loop in loops
            ]
            for thread in self._threads:
                thread.start()
            # Only now: a start that failed half-way is tried again.
            self._pid = os.getpid()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; wait (at most ``timeout`` s) for the poll thread.

        The listener notices within a second and closes its connection itself:
        waiting for it would make every shutdown take that second.
        """
        with self._lock:
            self._stop.set()
            self._wake.set()
            threads, self._threads = self._threads, []
        for thread in threads[:1]:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def wake(self) -> None:
        """Poll now instead of at the next interval."""
        self._wake.set()

    def poll(self) -> int:
        """Publish the changes since the last poll; returns how many there were."""
        # One poll at a time, or two could publish the same change.
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> int:
        if self.generation is None:
            self.generation = self.registry.latest_generation()
            self.publish(TenantChange(self.generation, "", RESYNC))
            return 0
        published = 0
        while True:
            changes = self.registry.changes_since(self.generation, limit=_PAGE)
            for change in changes:
                self.publish(change)
                self.generation = change.generation
            published += len(changes)
            if len(changes) < _PAGE:
                return published


def _poll_loop(ref: weakref.ref[ChangeFollower], stop: threading.Event) -> None:
    # A weak reference, so a registry nobody uses any more can be collected;
    # the loop then ends by itself.
    wake = threading.Event()
    failing = False
    while not stop.is_set():
        follower = ref()
        if follower is None:
            return
        wake, interval = follower._wake, follower.poll_interval
        try:
            follower.poll()
        except RegistryError as e:
            if not failing:
                log.warning("cannot follow the registry's changes: %s", e)
            failing = True
        except Exception:
            log.exception("publishing the registry's changes failed")
        else:
            if failing:
                log.info("following the registry's changes again")
            failing = False
        del follower
        wake.wait(interval)
        wake.clear()


def _listen_loop(ref: weakref.ref[ChangeFollower], stop: threading.Event) -> None:
    backoff = 0.5
    while not stop.is_set():
        follower = ref()
        if follower is None:
            return
        wake = follower._wake
        try:
            listener = follower.registry.listen()
        except Exception as e:
            log.warning("cannot listen for change notifications: %s", e)
            del follower
            stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
            continue
        del follower
        try:
            backoff = 0.5
            # Whatever was notified while we were not listening.
            wake.set()
            while not stop.is_set() and ref() is not None:
                if listener.wait(1.0):
                    wake.set()
        except Exception as e:
            log.warning("change notifications interrupted: %s", e)
        finally:
            listener.close()

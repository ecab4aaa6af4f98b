"""Follow a change feed, so every process sees every process's writes.

A :class:`ChangeFollower` runs in each process that serves requests. Its poll
thread asks its :class:`~dispatcher.changes.ChangeSource` (the registry) for
changes since the last generation it saw, at most every ``poll_interval``
seconds (one primary-key range scan, whatever the number of tenants), and hands
each change to ``publish``. With a :class:`~dispatcher.changes.Notifier`
(PostgreSQL's ``LISTEN``/``NOTIFY``) a second thread keeps a listener open and
wakes the poll thread at once; a wake-up lost while disconnected is recovered
by the next poll. The follower knows the feed and the notifier, not the
registry. A listener that fails, or whose wait returns early
without a notification (a dead connection, an incompatible driver), is
reconnected after a backoff that doubles from 0.5 s to 10 s, never in a busy
loop. Neither thread is ever on a request's path.

An outage is logged as one warning when following stops and one when it
resumes; the listener logs its own interruptions at ``INFO`` only, since polls
still deliver every change meanwhile.

Threads do not survive ``fork``: :meth:`start` notices the new process and starts
fresh ones, and every lock and event is replaced in the child (one of the
parent's threads may have held it at the fork), so a follower is safe under
``gunicorn --preload``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from dispatcher import forks
from dispatcher.changes import ChangeSource, Notifier, Operation, TenantChange
from dispatcher.exceptions import RegistryError

if TYPE_CHECKING:
    from dispatcher.changes import Listener

__all__ = ["ChangeFollower"]

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 10.0
#: How long one listener wait lasts; bounds how late the listener sees a stop.
_LISTEN_WAIT = 1.0
#: A wait that returned without a notification sooner than this share of its
#: timeout did not wait: the connection or the driver is broken.
_EARLY = 0.5
_PAGE = 1000


class ChangeFollower:
    """Publishes a feed's changes, whoever wrote them, in this process.

    If the newest generation could not be read at start, the first successful
    poll reads it; apps built meanwhile may predate changes it will never see,
    so it publishes a ``RESYNC`` change and listeners drop what they built.
    A follower that fell behind changes pruned from the feed reads a
    ``RESYNC`` there, the prune's marker, and publishes it the same way (see
    :mod:`dispatcher.retention`).
    """

    def __init__(
        self,
        source: ChangeSource,
        publish: Callable[[TenantChange], None],
        *,
        notifier: Notifier | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.source = source
        self.notifier = notifier
        self.publish = publish
        self.poll_interval = poll_interval
        self.generation: int | None = None
        #: ``time.monotonic()`` when the feed was last read; None before (a
        #: readiness check compares it with ``poll_interval``).
        self.read_at: float | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        forks.on_fork_in_child(self, ChangeFollower._forked)

    def _forked(self) -> None:
        """In a forked child: fresh locks and events, no threads.

        A parent's thread may have held any of them at the fork (the poll
        thread mid-poll, another thread in :meth:`start`); no thread of this
        process would ever release them. The parent's threads do not exist
        here, so :attr:`running` is false and :meth:`start` starts new ones.
        """
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads = []
        self.read_at = None

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
                self.generation = self.source.latest_generation()
                self.read_at = time.monotonic()
            except Exception as e:
                # The poll thread asks again, then publishes RESYNC; it warns
                # if it cannot either, once for the whole outage.
                # In the thread of the lookup that started following: the
                # line is about the feed, not that request's tenant.
                log.info(
                    "following changes from an unknown generation: %s",
                    e,
                    extra={"tenant": "-"},
                )
                self.generation = None
            self._stop = threading.Event()
            self._wake = threading.Event()
            loops = [_poll_loop]
            if self.notifier is not None:
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
            self.generation = self.source.latest_generation()
            self.read_at = time.monotonic()
            self.publish(TenantChange(self.generation, "", Operation.RESYNC))
            return 0
        published = 0
        while True:
            changes = self.source.changes_since(self.generation, limit=_PAGE)
            for change in changes:
                self.publish(change)
                self.generation = change.generation
            published += len(changes)
            if len(changes) < _PAGE:
                self.read_at = time.monotonic()
                return published


def _poll_loop(ref: weakref.ref[ChangeFollower], stop: threading.Event) -> None:
    # A weak reference, so a registry nobody uses any more can be collected;
    # the loop then ends by itself.
    wake = threading.Event()
    failing_since: float | None = None
    while not stop.is_set():
        follower = ref()
        if follower is None:
            return
        wake, interval = follower._wake, follower.poll_interval
        try:
            follower.poll()
        except RegistryError as e:
            # Once per outage: a line per poll would flood the log.
            if failing_since is None:
                failing_since = time.monotonic()
                log.warning("cannot follow the registry's changes: %s", e)
        except Exception:
            log.exception("publishing the registry's changes failed")
        else:
            if failing_since is not None:
                log.warning(
                    "following the registry's changes again after %.1f s",
                    time.monotonic() - failing_since,
                )
            failing_since = None
        del follower
        wake.wait(interval)
        wake.clear()


def _listen_loop(ref: weakref.ref[ChangeFollower], stop: threading.Event) -> None:
    # Every failure, of a connect or of a wait, is followed by a backoff:
    # reconnecting at once would storm the database (and the poll thread,
    # woken at each connect) as long as the failure lasts.
    backoff = _FIRST_BACKOFF
    failing = False
    while not stop.is_set():
        follower = ref()
        if follower is None:
            return
        wake, notifier = follower._wake, follower.notifier
        if notifier is None:
            return
        listener: Listener | None = None
        problem: str | None
        try:
            listener = notifier.listen()
        except Exception as e:
            worked, problem = False, f"cannot listen for change notifications: {e}"
        # Not while listening: a follower nobody uses must be collectable.
        del follower
        if listener is not None:
            # Whatever was notified while we were not listening.
            wake.set()
            try:
                worked, problem = _listen(listener, ref, stop, wake, failing)
            finally:
                listener.close()
        if problem is None:
            continue
        if worked:
            backoff, failing = _FIRST_BACKOFF, False
        if not failing:
            # The poll thread still delivers every change, only later: worth
            # a line, not a warning, and one per interruption.
            log.info("%s; following by polling meanwhile", problem)
            failing = True
        stop.wait(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF)


def _listen(
    listener: Listener,
    ref: weakref.ref[ChangeFollower],
    stop: threading.Event,
    wake: threading.Event,
    recovering: bool,
) -> tuple[bool, str | None]:
    """Wake the poll thread on each notification until stopped or failing.

    Returns whether any wait worked, and why listening ended (None: stopped).
    A wait that returns without a notification well before its timeout is a
    failure like one that raises: waiting again at once would spin.
    """
    worked = False
    while not stop.is_set() and ref() is not None:
        started = time.monotonic()
        try:
            arrived = listener.wait(_LISTEN_WAIT)
        except Exception as e:
            return worked, f"change notifications interrupted: {e}"
        if arrived:
            wake.set()
        elif time.monotonic() - started < _LISTEN_WAIT * _EARLY:
            return worked, (
                "change notifications interrupted: a wait for them "
                "returned at once without one"
            )
        if recovering and not worked:
            log.info("listening for change notifications again")
        worked = True
    return worked, None

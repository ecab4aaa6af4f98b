"""Publish each committed change to this process's subscribers, exactly once.

A change reaches a process two ways: the registry object that wrote it
publishes it at once (so a write through it evicts synchronously), and the
process's :class:`~dispatcher.follower.ChangeFollower` reads it from the feed
later (so every other process hears of it). :class:`ChangeHub` is where the
two meet and one of them is dropped::

    hub = ChangeHub(registry, notifier)      # the registry does this itself
    unsubscribe = hub.subscribe(dispatcher.invalidate)
    hub.follow(poll_interval=1.0)            # start following, once per process
    hub.published(changes)                   # a writer's changes, after commit

Listeners run in the publishing thread (the writer's or the follower's); one
that raises is logged and does not stop the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from dispatcher import forks
from dispatcher.changes import ChangeSource, Notifier, Operation, TenantChange
from dispatcher.follower import ChangeFollower

__all__ = ["ChangeHub"]

log = logging.getLogger(__name__)

ChangeListener = Callable[[TenantChange], None]


class ChangeHub:
    """Subscribers to a change feed, and the one follower that feeds them.

    :param source: where the follower reads the feed (the registry).
    :param notifier: wakes the follower at each commit anywhere; None: it polls.
    """

    def __init__(self, source: ChangeSource, notifier: Notifier | None = None) -> None:
        self.source = source
        self.notifier = notifier
        self._listeners: tuple[ChangeListener, ...] = ()
        self._follower: ChangeFollower | None = None
        self._closed = False
        self._follow_lock = threading.Lock()
        # Decides, for each change, whether the writer or the follower
        # publishes it; see published().
        self._publish_lock = threading.Lock()
        # Generations the writer published that the follower will deliver
        # later: only ones above what it has delivered, so the set drains.
        self._published: set[int] = set()
        # The newest generation the follower has delivered (not skipped).
        self._followed = 0
        # One hook per process for all hubs: see _forked.
        forks.on_fork_in_child(self, ChangeHub._forked)

    def _forked(self) -> None:
        """In a forked child: new locks (a parent's thread may have held one)."""
        self._follow_lock = threading.Lock()
        self._publish_lock = threading.Lock()

    @property
    def follower(self) -> ChangeFollower | None:
        """The follower :meth:`follow` started, if any."""
        return self._follower

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` with each change; returns a function that unsubscribes."""
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(f for f in self._listeners if f is not listener)

        return unsubscribe

    def follow(self, poll_interval: float = 1.0) -> ChangeFollower:
        """Publish every process's changes to this hub's subscribers.

        Starts (once per process, also after fork) a :class:`ChangeFollower`
        that polls the feed every ``poll_interval`` seconds and wakes at once
        on the notifier's wake-ups.
        """
        with self._follow_lock:
            if self._follower is None:
                self._follower = ChangeFollower(
                    self.source,
                    self._publish_followed,
                    notifier=self.notifier,
                    poll_interval=poll_interval,
                )
            if self._closed:
                # Closed for good: polling now would open a pool of the
                # registry's that nobody closes any more.
                return self._follower
        self._follower.start()
        if self._closed:  # closed while it started: stop what it started
            self._follower.stop()
        return self._follower

    def close(self) -> None:
        """Stop following, for good: :meth:`follow` starts nothing after it."""
        with self._follow_lock:
            self._closed = True
        if self._follower is not None:
            self._follower.stop()

    def published(self, changes: Sequence[TenantChange]) -> None:
        """Publish a writer's committed changes at once, each exactly once.

        A poll may have read (and published) a change between its commit and
        this call: skip those. Record the rest only if the follower will
        deliver them later, so that it skips them then.
        """
        follower = self._follower
        with self._publish_lock:
            fresh = [c for c in changes if c.generation > self._followed]
            if follower is not None and follower.running:
                # A generation at or below the follower's position that it
                # did not deliver is one it started past: it never comes.
                position = follower.generation
                self._published.update(
                    c.generation
                    for c in fresh
                    if position is None or c.generation > position
                )
        self._publish(fresh)

    def _publish_followed(self, change: TenantChange) -> None:
        """Publish a change the follower read, unless a writer here did.

        The follower delivers generations in order: a recorded generation
        below this one will never come (the follower started past it), so
        it is dropped too.
        """
        g = change.generation
        resync = change.operation is Operation.RESYNC
        with self._publish_lock:
            # A RESYNC is no writer's change, though it may carry the
            # generation of one: nobody here has published what it says.
            mine = not resync and g in self._published
            if self._published and min(self._published) <= g:
                self._published = {p for p in self._published if p > g}
            if not resync:
                self._followed = max(self._followed, g)
        if not mine:
            self._publish((change,))

    def _publish(self, changes: Iterable[TenantChange]) -> None:
        for change in changes:
            for listener in self._listeners:
                try:
                    listener(change)
                except Exception:
                    log.exception(
                        "change listener %r failed on %s",
                        listener,
                        change,
                        extra={"tenant": change.slug or "-"},
                    )

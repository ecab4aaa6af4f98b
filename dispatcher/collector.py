"""Keep the cyclic garbage collector's pauses short while apps are cached.

The dispatcher calls :func:`built` after ``create_app`` returns a tenant's own
app and :func:`released` after that app's teardown (shared apps never reach
either).

With 1,000 cached apps the heap holds a few hundred thousand objects, and a
full collection traverses them all (~65 ms over hello-world apps, far more
over real ones), while evicted apps, full of reference cycles, are garbage
only such a collection frees. Managed (the default), this module:

- breaks an evicted Flask app's cycles at :func:`released`
  (:func:`dispatcher.reclaim.break_cycles`), so reference counting frees it
  at once, whatever generation it sits in;
- freezes the heap (``gc.freeze()`` after a young collection) after each
  build, so cached apps and everything imported before them leave the
  collector's generations: a full collection traverses only what is newer;
- watches what breaking could not free: a released app still alive a few
  events later is counted (and named once in the log), and when the heap
  (``sys.getallocatedblocks()``) has grown to twice its size when apps
  first were evicted (or at the last reclaim), frozen garbage is reclaimed
  with one ``unfreeze``, full collection, ``freeze`` (a rare, counted pause;
  never, if every evicted app is freed by reference counting).

``DISPATCHER_GC=off`` (or :func:`set_managed(False) <set_managed>`) leaves the
collector alone, as before. :func:`stats` counts collections and pauses
either way.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from dispatcher.reclaim import break_cycles, is_torn_down

__all__ = [
    "CollectorStats",
    "built",
    "managed",
    "managed_from",
    "released",
    "set_managed",
    "stats",
]

log = logging.getLogger(__name__)

#: The environment variable that turns management off.
SETTING = "DISPATCHER_GC"
#: A released app still alive after this many later events was not freed.
SURVIVOR_AGE = 8
#: A released app is cut only after this many later builds or releases, so a
#: create_app that hands the same app object out again (a module-level app
#: serving one tenant at a time) gets it back whole, and never cut.
QUARANTINE = 8
#: Times a released app's cut is put off while another thread still uses it.
MAX_POSTPONED = 3
#: Survivors named in the log, each once; later ones are only counted.
NAMED_SURVIVORS = 5
#: Reclaim once the heap is this many times its size at the first release
#: (the cache full) or at the last reclaim.
RECLAIM_GROWTH = 2.0


@dataclass(frozen=True, slots=True)
class CollectorStats:
    """What the collector did in this process (since start or fork)."""

    #: Collections by generation (0, 1, 2).
    collections: tuple[int, int, int] = (0, 0, 0)
    #: Full (generation 2) collections: their longest pause, in seconds.
    longest_full_pause: float = 0.0
    #: Apps built while managed (each followed by a freeze).
    apps_frozen: int = 0
    #: Released apps freed by reference counting (cycles broken).
    apps_freed: int = 0
    #: Released apps still alive after :data:`SURVIVOR_AGE` later events.
    apps_survived: int = 0
    #: Unfreeze, full collection, freeze: how many, and the longest.
    reclaims: int = 0
    longest_reclaim: float = 0.0


class _Collector:
    def __init__(self) -> None:
        #: None: not read yet from ``DISPATCHER_GC``.
        self.setting: bool | None = None
        # Reentrant: a collection can start at any allocation made under it,
        # and a response body collected there without close() releases its
        # app's last lease, which tears the app down and calls released().
        self._lock = threading.RLock()
        self._stats = CollectorStats()
        self._started = 0.0
        self._collections = [0, 0, 0]
        self._longest_full = 0.0
        #: (weak reference, name, events seen since) of released apps.
        self._released: deque[tuple[weakref.ref[Any], str, int]] = deque()
        #: (app, times its cut was put off) released, not cut yet: oldest first.
        self._quarantine: deque[tuple[Any, int]] = deque()
        self._named: set[str] = set()
        self._said_unnamed = False
        self._baseline = 0
        #: Live apps built while managed: how many cache entries serve each.
        self._serving: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        #: Apps create_app returned for more than one entry at once.
        self._shared: weakref.WeakSet[Any] = weakref.WeakSet()

    def reset(self) -> None:
        """A fork's child counts its own collections."""
        self._lock = threading.RLock()
        self._stats = CollectorStats()
        self._collections = [0, 0, 0]
        self._longest_full = 0.0
        self._released.clear()
        self._quarantine.clear()
        self._named.clear()
        self._said_unnamed = False
        self._baseline = 0
        self._serving = weakref.WeakKeyDictionary()
        self._shared = weakref.WeakSet()

    def on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        # No lock here: a collection can start while this thread holds one.
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self._collections[generation] += 1
        if generation == 2:
            self._longest_full = max(self._longest_full, pause)

    @property
    def managed(self) -> bool:
        if self.setting is None:
            self.setting = managed_from(os.environ)
        return self.setting

    def built(self, app: Any) -> None:
        if not self.managed:
            return
        if is_torn_down(app):
            raise RuntimeError(
                f"create_app returned app {object.__repr__(app)}, which was torn"
                " down (its reference cycles were cut after its eviction);"
                " return a new app on each call"
            )
        self._rescue(app)
        self._note_built(app)
        self._check_released()
        self._cut_quarantined(QUARANTINE)
        gc.collect(1)
        gc.freeze()
        self._count(apps_frozen=1)
        if self._baseline and sys.getallocatedblocks() > self._baseline * (
            RECLAIM_GROWTH
        ):
            self._reclaim()

    def released(self, app: Any) -> None:
        if not self.managed:
            return
        self._check_released()
        if not self._baseline:
            # The heap once apps start to be evicted: the cache is full.
            self._baseline = sys.getallocatedblocks()
        if not self._last_release(app):
            return
        with self._lock:
            self._quarantine.append((app, 0))
        self._cut_quarantined(QUARANTINE)

    def _rescue(self, app: Any) -> None:
        """``create_app`` handed out a released app again: it is shared, and
        never cut (its other holder, a module say, still uses it)."""
        # Under the lock: other threads release into the quarantine meanwhile.
        with self._lock:
            for index, (held, _postponed) in enumerate(self._quarantine):
                if held is app:
                    del self._quarantine[index]
                    self._shared.add(app)
                    return

    def _cut_quarantined(self, keep: int) -> None:
        """Cut the cycles of released apps beyond the newest ``keep``."""
        while True:
            with self._lock:
                if len(self._quarantine) <= keep:
                    return
                app, postponed = self._quarantine.popleft()
            if postponed >= MAX_POSTPONED:
                continue  # still in use: left whole, to the collector
            if _used_by_another_thread(app):
                # A thread a view started (sending mail, say) still works
                # with it: cutting would pull its attributes from under it.
                with self._lock:
                    self._quarantine.append((app, postponed + 1))
                return
            name = str(getattr(app, "name", type(app).__qualname__))
            if break_cycles(app):
                self._released.append((weakref.ref(app), name, 0))

    def _note_built(self, app: Any) -> None:
        """Count the entries serving ``app``: a create_app may return one app
        object for several tenants, and that app is never cut."""
        try:
            with self._lock:
                if app in self._serving:
                    self._shared.add(app)
                self._serving[app] = self._serving.get(app, 0) + 1
        except TypeError:  # not weakly referenceable nor hashable: not Flask
            pass

    def _last_release(self, app: Any) -> bool:
        """Whether ``app`` was built once, for one tenant, and is released."""
        try:
            with self._lock:
                left = self._serving.pop(app, 1) - 1
                if left > 0:
                    self._serving[app] = left
                return left <= 0 and app not in self._shared
        except TypeError:
            return False

    def _check_released(self) -> None:
        for _ in range(len(self._released)):
            try:
                ref, name, seen = self._released.popleft()
            except IndexError:  # another thread checked the last one
                return
            if ref() is None:
                self._count(apps_freed=1)
            elif seen + 1 < SURVIVOR_AGE:
                self._released.append((ref, name, seen + 1))
            else:
                self._count(apps_survived=1)
                self._survived(name)

    def _survived(self, name: str) -> None:
        if name in self._named:
            return
        if len(self._named) >= NAMED_SURVIVORS:
            # Apps are often named after their tenant: a line each would
            # flood the log (and the set of names grow without bound).
            if not self._said_unnamed:
                self._said_unnamed = True
                log.warning(
                    "further survivors are only counted, not named:"
                    " dispatcher.collector.stats().apps_survived"
                )
            return
        self._named.add(name)
        log.warning(
            "app %r was still alive %d events after its teardown: something"
            " outside the dispatcher holds it (a module-level list or dict, a"
            " signal receiver, a closure kept elsewhere); it stays in memory"
            " until found by a full collection",
            name,
            SURVIVOR_AGE,
        )

    def _reclaim(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        pause = time.perf_counter() - started
        self._baseline = sys.getallocatedblocks()
        with self._lock:
            self._stats = replace(
                self._stats,
                reclaims=self._stats.reclaims + 1,
                longest_reclaim=max(self._stats.longest_reclaim, pause),
            )
        log.info(
            "reclaimed frozen garbage in %.0f ms (%d memory blocks left)",
            pause * 1000,
            self._baseline,
        )

    def _count(self, **added: int) -> None:
        with self._lock:
            self._stats = replace(
                self._stats,
                **{name: getattr(self._stats, name) + n for name, n in added.items()},
            )

    def stats(self) -> CollectorStats:
        zero, one, two = self._collections
        return replace(
            self._stats,
            collections=(zero, one, two),
            longest_full_pause=self._longest_full,
        )


def _used_by_another_thread(app: Any) -> bool:
    """Whether a thread other than this one has ``app`` in a local variable,
    or was given it to start with (``Thread(target=..., args=(app,))``)."""
    me = threading.get_ident()
    for ident, top in sys._current_frames().items():
        frame: FrameType | None = top
        while frame is not None and ident != me:
            if any(value is app for value in frame.f_locals.values()):
                return True
            frame = frame.f_back
    for thread in threading.enumerate():
        given = (
            *getattr(thread, "_args", ()),
            *getattr(thread, "_kwargs", {}).values(),
        )
        if any(value is app for value in given):
            return True
    return False


def managed_from(environ: Mapping[str, str]) -> bool:
    """``DISPATCHER_GC``: ``managed`` (the default) or ``off``.

    :raises ValueError: any other value, named.
    """
    value = environ.get(SETTING, "managed").strip().lower() or "managed"
    if value not in ("managed", "off"):
        raise ValueError(f"{SETTING}={value!r}: must be 'managed' or 'off'")
    return value == "managed"


_collector = _Collector()
gc.callbacks.append(_collector.on_collection)
os.register_at_fork(after_in_child=_collector.reset)


def built(app: Any) -> None:
    """A tenant's own app was just built (outside every lock)."""
    _collector.built(app)


def released(app: Any) -> None:
    """A tenant's own app was torn down: nothing of the dispatcher holds it."""
    _collector.released(app)


def stats() -> CollectorStats:
    """Collections and pauses of this process, and what management did."""
    return _collector.stats()


def managed() -> bool:
    """Whether apps are frozen and their cycles broken (``DISPATCHER_GC``)."""
    return _collector.managed


def set_managed(on: bool) -> None:
    """Turn management on or off; off unfreezes what was frozen."""
    _collector.setting = on
    if not on:
        gc.unfreeze()

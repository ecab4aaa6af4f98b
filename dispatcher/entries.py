"""Cache entries: a built app, its leases, its lifetime and its one teardown.

* An :class:`Entry` is leased once per response without a lock and retired when
  the cache drops it; teardown runs once, outside every lock, after the last
  in-flight response of the app has been closed.
* Its lifetime is one clock, the cache's: :class:`Apps` (a
  :class:`cachetools.TLRUCache`) drops an entry at its ``kept_until``, fixed
  when it was built. ``expires_at``, the time the lock-free hit path stops
  serving it, is never later than that, and changes only through
  :meth:`Entry.serve_until`. So nothing is served that the cache no longer
  counts, and giving an entry a second chance cannot stretch its life.
* Which entry leaves for capacity is :mod:`dispatcher.admission`'s choice:
  W-TinyLFU, so a scan or a burst of one-off tenants cannot flush the busy ones.

::

    apps = Apps(max_apps, timer, dropped=lambda entry, cause: entry.retire())
    entry = Entry(app, tenant, now + app_ttl, teardown, kept_until=now + app_ttl)
    apps[tenant.slug] = entry
    if entry.acquire():  # one response
        ...
        entry.release()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from cachetools import Cache, TLRUCache

from dispatcher.admission import Policy, SecondChance, WindowTinyLfu
from dispatcher.tenant import Tenant

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["Apps", "Entry", "Teardown", "Timer", "default_teardown"]

log = logging.getLogger(__name__)

Timer = Callable[[], float]
Teardown = Callable[["WSGIApplication", Tenant], None]


def default_teardown(app: WSGIApplication, tenant: Tenant) -> None:
    """Dispose what a Flask app registered for teardown.

    A tenant app lists callables in ``app.extensions["dispatcher.teardown"]``
    (for example ``engine.dispose`` of its own SQLAlchemy engine); each runs once.
    """
    extensions = getattr(app, "extensions", None)
    if not isinstance(extensions, dict):
        return
    for dispose in extensions.get("dispatcher.teardown", ()):
        try:
            dispose()
        except Exception:
            log.exception(
                "teardown %r of tenant %r failed",
                dispose,
                tenant.slug,
                extra={"tenant": tenant.slug},
            )


class Entry:
    """A built app, the tenant snapshot it was built from, and its leases.

    Leases are counted without a lock: ``list.append`` and ``list.pop`` are
    atomic, and a lease taken after ``retire()`` is handed straight back. The
    one teardown token is popped by whoever sees the entry retired with no
    lease left, so teardown runs exactly once.

    :param expires_at: served until then (the hit path reads it with no lock).
    :param kept_until: held by the cache until then, at least ``expires_at``:
        past ``expires_at`` it may still be served while the database is down.
    :param outcome: what a request served by it counts as (an index into
        :data:`dispatcher.counts.OUTCOMES`: a hit, or a disabled or
        maintenance answer).
    """

    __slots__ = (
        "app",
        "tenant",
        "expires_at",
        "kept_until",
        "used",
        "outcome",
        "keys",
        "retired",
        "leases",
        "_token",
    )

    def __init__(
        self,
        app: WSGIApplication,
        tenant: Tenant,
        expires_at: float,
        teardown: Teardown,
        kept_until: float | None = None,
        outcome: int = 0,
    ) -> None:
        if kept_until is not None and kept_until < expires_at:
            raise ValueError(
                f"kept_until must be at least expires_at ({expires_at!r}), "
                f"not {kept_until!r}"
            )
        self.app = app
        self.tenant = tenant
        self.expires_at = expires_at
        self.kept_until = expires_at if kept_until is None else kept_until
        #: Hit since capacity eviction last looked (its second chance).
        self.used = False
        self.outcome = outcome
        #: The routing keys that lead to it.
        self.keys: set[Hashable] = set()
        self.retired = False
        #: One item per in-flight response.
        self.leases: list[None] = []
        self._token = [teardown]

    def serve_until(self, until: float) -> None:
        """Serve it until ``until``, or until the cache drops it if sooner."""
        self.expires_at = min(until, self.kept_until)

    def acquire(self) -> bool:
        """Lease the app for one response; False once the entry is retired."""
        self.leases.append(None)
        if self.retired:
            self.release()
            return False
        return True

    def release(self) -> None:
        """End a lease (the response was closed)."""
        self.leases.pop()
        if self.retired:
            self._finish()

    def retire(self) -> None:
        """No new leases; tear down once the in-flight ones are released."""
        self.retired = True
        self._finish()

    @property
    def inflight(self) -> int:
        return len(self.leases)

    def _finish(self) -> None:
        if self.leases:
            return
        try:
            teardown = self._token.pop()
        except IndexError:
            return  # somebody else tore it down
        try:
            teardown(self.app, self.tenant)
        except Exception:
            slug = self.tenant.slug
            log.exception("teardown of tenant %r failed", slug, extra={"tenant": slug})


class Apps(TLRUCache[str, Entry]):
    """Slug -> entry, each until its ``kept_until``; at most ``maxsize``.

    Hands every entry it drops to ``dropped`` with the cause. cachetools calls
    ``popitem`` for capacity and drops expired items in ``expire`` (also from
    inside ``__setitem__``), so both are overridden. Which entry leaves for
    capacity is the eviction policy's choice (:mod:`dispatcher.admission`):
    W-TinyLFU by default, today's second-chance LRU with ``admission=False``.
    Either way the entry being inserted is never the one dropped, a used entry
    is never dropped before an unused one of its queue, and putting an entry
    back never touches its ``kept_until``.
    """

    def __init__(
        self,
        maxsize: int,
        timer: Timer,
        dropped: Callable[[Entry, str], None],
        *,
        admission: bool = True,
    ) -> None:
        super().__init__(maxsize, _kept_until, timer)
        self._dropped = dropped
        self._policy: Policy = WindowTinyLfu(maxsize) if admission else SecondChance()

    def __setitem__(self, slug: str, entry: Entry) -> None:
        super().__setitem__(slug, entry)
        if Cache.__contains__(self, slug):
            self._policy.add(slug)
        else:  # stored already expired: cachetools dropped the slug instead
            self._policy.discard(slug)

    def __delitem__(self, slug: str) -> None:
        self._policy.discard(slug)
        super().__delitem__(slug)

    def popitem(self) -> tuple[str, Entry]:
        with self.timer as now:
            self.expire(now)
            if not Cache.__len__(self):
                raise KeyError(f"{type(self).__name__} is empty")
            slug = self._policy.victim(self._take_used)
            entry = Cache.__getitem__(self, slug)
            del self[slug]
        self._dropped(entry, "capacity")
        return slug, entry

    def expire(self, time: float | None = None) -> list[tuple[str, Entry]]:
        expired = list(super().expire(time))
        for slug, entry in expired:
            self._policy.discard(slug)
            self._dropped(entry, "expired")
        return expired

    def clear(self) -> None:
        super().clear()
        self._policy.clear()

    def _take_used(self, slug: str) -> bool:
        """Read and clear a hit's flag (hits set it with no lock and no call)."""
        entry: Entry = Cache.__getitem__(self, slug)
        used, entry.used = entry.used, False
        return used


def _kept_until(_slug: str, entry: Entry, _now: float) -> float:
    """The TLRU's ttu: the one place an entry's time in the cache is read."""
    return entry.kept_until

"""The bounded cache of built tenant apps. Knows nothing about HTTP.

* Apps are kept per tenant slug in a :class:`cachetools.TLRUCache`: at most
  ``max_apps`` (which one leaves when it is full is W-TinyLFU's choice, in
  :mod:`dispatcher.admission`) and each for ``app_ttl`` seconds after its
  build. Routing keys (a host, a path prefix) alias those entries.
* Tenants served by a shared app (one app for many tenants, which ``shared``
  recognises) are kept apart, in a second store of at most ``max_tenants``:
  such an entry holds a tenant's record (about a kilobyte), not an app of its
  own, so thousands of them never evict an own app nor each other at
  ``max_apps``. Both stores have the same lifetimes, single flights, negative
  cache, stale-if-error and invalidation; only their bounds (and eviction:
  plain second-chance LRU for records) differ.
* Hits take no cache lock: a plain dict lookup, an expiry check and a lease on
  the entry. Hits mark the entry used, which capacity eviction reads: a used
  entry gets a second chance, and counts in W-TinyLFU's frequencies.
* Misses are single-flight per routing key: one caller looks the tenant up and
  builds it with no lock held. Others wait for that build, within bounds, so
  a hung ``create_app`` ties up one thread and no more: any number may wait
  during the build's first :data:`BURST_WAIT` seconds (a cold burst), then only
  ``max_waiters`` (under every name of the tenant together), and nobody past
  ``build_timeout`` from the build's start. The rest get
  :class:`BuildTimeout` at once; a build that overran ``build_timeout`` puts
  the name into ``failure_backoff``. (:mod:`dispatcher.flights` does the
  waiting; this module uses it twice: per routing key for the lookup, per
  tenant version for the build, so several names of a tenant build it once.)
* A build is kept only if no change to its tenant newer than its snapshot
  arrived while it was in flight (lookup included): each flight records the
  changes that arrive during it, and forgets them when it ends.
* An own app dropped for capacity leaves its tenant's snapshot behind, a
  record per routing key, in a third store of at most ``max_tenants`` (a
  record is about a kilobyte; an app hundreds): the next miss on such a key
  builds from the record without looking the tenant up. A record is valid no
  longer than the app it outlived (so ``app_ttl`` still bounds how old a
  snapshot may be) and is dropped by every change that would drop its route
  or its tenant's app.
* "No such tenant" is remembered for ``negative_ttl`` in its own bounded cache;
  a failed build for ``failure_backoff``. Errors of the lookup itself (the
  database is down) are never remembered.
* Evicted entries are retired: teardown runs once, outside every lock, after
  the last in-flight response of the app has been closed
  (:mod:`dispatcher.entries`).

::

    cache = AppCache(create_app, policy=CachePolicy(max_apps=500))
    entry = cache.get("acme.example.com", lambda: registry.find_by_host(...))
    if entry is not None:  # None: no such tenant
        try:
            ...  # entry.app(environ, start_response)
        finally:
            entry.release()
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from cachetools import TTLCache

from dispatcher.counts import HIT
from dispatcher.entries import Apps, Entry, default_teardown
from dispatcher.entries import Teardown as Teardown
from dispatcher.entries import Timer as Timer
from dispatcher.exceptions import DispatcherError, RegistryUnavailable, SchemaMissing
from dispatcher.flights import BURST_WAIT, BuildTimeout, Flight, Flights, Queue, fresh
from dispatcher.logs import BUILDING
from dispatcher.policy import CachePolicy
from dispatcher.tenant import Tenant

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = [
    "BURST_WAIT",
    "AppCache",
    "BuildFailed",
    "BuildTimeout",
    "CacheStats",
    "Entry",
    "default_teardown",
]

log = logging.getLogger(__name__)

DEFAULT_POLICY = CachePolicy()


def _hit(app: WSGIApplication) -> int:
    return HIT


def _owned(app: WSGIApplication) -> bool:
    """No app is shared: every one belongs to the tenant it was built for."""
    return False


class BuildFailed(DispatcherError):
    """``create_app`` raised for this tenant (recently); answered with 500."""


class _Lookup(Flight["Entry | None"]):
    """One routing key's lookup and build, and the changes that arrive meanwhile.

    Until the lookup names its tenant, every change is recorded (newest
    generation per slug); from then on, only that tenant's. The record lives
    exactly as long as the flight, so memory is bounded by the flights in
    progress and the changes during one lookup, and nothing is ever forgotten
    while it matters.
    """

    __slots__ = ("epochs", "slug", "newest", "changes")

    def __init__(self, queue: Queue, epochs: tuple[int, int, int]) -> None:
        super().__init__(queue)
        #: (negative, route, app) clear counters when the lookup began.
        self.epochs = epochs
        self.slug: str | None = None
        #: Newest generation of a change to ``slug`` seen while in flight.
        self.newest = 0
        self.changes: dict[str, int] = {}

    def saw(self, slug: str, generation: int) -> None:
        if self.slug is None:
            self.changes[slug] = max(generation, self.changes.get(slug, 0))
        elif slug == self.slug:
            self.newest = max(generation, self.newest)

    def found(self, slug: str) -> None:
        self.slug = slug
        self.newest = self.changes.get(slug, 0)
        self.changes = {}


class _Records:
    """Routing key -> the snapshot of the tenant whose app was dropped for
    capacity, valid until a time; at most ``maxsize``, oldest out first.

    Indexed by slug too, so a change to one tenant drops its records without
    scanning them all. Every method is called with the cache's lock held.
    """

    __slots__ = ("maxsize", "_records", "_keys")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        # Insertion order is age: the first record is the next one out.
        self._records: dict[Hashable, tuple[Tenant, float]] = {}
        self._keys: dict[str, set[Hashable]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def put(self, key: Hashable, tenant: Tenant, valid_until: float) -> None:
        self.drop(key)
        while len(self._records) >= self.maxsize:
            self.drop(next(iter(self._records)))
        self._records[key] = (tenant, valid_until)
        self._keys.setdefault(tenant.slug, set()).add(key)

    def take(self, key: Hashable, now: float) -> Tenant | None:
        """The record for ``key`` if still valid; it is dropped either way."""
        record = self._records.get(key)
        if record is None:
            return None
        self.drop(key)
        tenant, valid_until = record
        return tenant if now < valid_until else None

    def drop(self, key: Hashable) -> None:
        record = self._records.pop(key, None)
        if record is not None:
            keys = self._keys[record[0].slug]
            keys.discard(key)
            if not keys:
                del self._keys[record[0].slug]

    def drop_tenant(self, slug: str, generation: int | None) -> None:
        """Drop ``slug``'s records older than ``generation`` (all if None)."""
        for key in list(self._keys.get(slug, ())):
            if generation is None or self._records[key][0].version < generation:
                self.drop(key)

    def drop_matching(self, matches: Callable[[Hashable], bool]) -> None:
        for key in [key for key in self._records if matches(key)]:
            self.drop(key)

    def clear(self) -> None:
        self._records.clear()
        self._keys.clear()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since start, current sizes and build-time percentiles (seconds)."""

    hits: int
    misses: int
    negative_hits: int
    builds: int
    build_failures: int
    evictions: dict[str, int]
    apps: int
    negative_entries: int
    build_time_p50: float | None
    build_time_p90: float | None
    build_time_p99: float | None
    #: Responses a server dropped without ``close()``: their lease was
    #: released when the body was collected.
    leaked_leases: int = 0
    #: Tenants whose record is held for a shared app (or ``disabled_app``);
    #: ``apps`` counts the apps that belong to one tenant.
    shared_tenants: int = 0
    #: Misses served from the record an app dropped for capacity left behind:
    #: built without a registry lookup (counted in ``misses`` too).
    record_hits: int = 0


class AppCache:
    """Built apps by routing key, bounded in count and age.

    :param build: makes the WSGI app for a tenant snapshot (``create_app``).
    :param policy: sizes, lifetimes and timeouts (see :class:`CachePolicy`).
    :param teardown: called once per evicted app, after its last response.
    :param timer: a monotonic clock in seconds; tests pass a fake one.
    :param shared: whether an app ``build`` returned serves many tenants; such
        entries are bounded by ``policy.max_tenants`` instead of ``max_apps``
        and are not counted as builds.
    :param outcome: what a request an app ``build`` returned serves counts
        as (see :class:`Entry`); the cache only keeps it with the entry.
    """

    def __init__(
        self,
        build: Callable[[Tenant], WSGIApplication],
        *,
        policy: CachePolicy = DEFAULT_POLICY,
        teardown: Teardown = default_teardown,
        timer: Timer = time.monotonic,
        shared: Callable[[WSGIApplication], bool] = _owned,
        outcome: Callable[[WSGIApplication], int] = _hit,
    ) -> None:
        if not isinstance(policy, CachePolicy):
            raise TypeError(f"policy must be a CachePolicy, not {policy!r}")
        self._build = build
        self._is_shared = shared
        self._outcome = outcome
        self.policy = policy
        self._teardown = teardown
        self._timer = timer
        self._lock = threading.Lock()
        self._dropped: list[tuple[Entry, str]] = []
        # Expired apps stay in the cache for stale_if_error more seconds: not
        # served, unless the database is down when they are due for a rebuild.
        self._apps = Apps(policy.max_apps, timer, self._on_dropped)
        # Tenants on a shared app: a record each, bounded apart (see above). A
        # slug is in at most one of the two stores.
        # Plain second-chance LRU: a record's miss costs one query, not a
        # build, and a frequency sketch for 100,000 of them would be 2 MiB.
        self._shared_apps = Apps(
            policy.max_tenants, timer, self._on_dropped, admission=False
        )
        # Routing key -> the snapshot of a tenant whose own app was dropped for
        # capacity: its next miss skips the lookup (see _on_dropped).
        self._records = _Records(policy.max_tenants)
        # Routing key -> entry. Read without the lock on the hit path, which
        # must also check expires_at and acquire() the entry: see lease().
        self.routes: dict[Hashable, Entry] = {}
        self._negative: TTLCache[Hashable, bool] = TTLCache(
            policy.negative_size, policy.negative_ttl, timer
        )
        # Routing key -> (slug if known, failure) while a build that failed or
        # overran build_timeout backs off.
        self._failures: TTLCache[
            Hashable, tuple[str | None, BuildFailed | BuildTimeout]
        ] = TTLCache(policy.max_apps, policy.failure_backoff, timer)
        # Bumped when negative answers or routes are dropped, so a lookup that
        # raced the drop does not store what was just dropped.
        self._negative_clears = 0
        self._route_clears = 0
        self._app_clears = 0
        # Routing key -> its lookup and build in progress; these also record
        # the changes that arrive meanwhile (see invalidate()).
        self._lookups: Flights[Hashable, _Lookup] = Flights(self._lock, policy, timer)
        # (slug, version) -> the build in progress, for every routing key.
        self._building: Flights[tuple[str, int], Flight[Entry]] = Flights(
            self._lock, policy, timer
        )
        self._build_times: deque[float] = deque(maxlen=1000)
        self._hits = self._misses = self._negative_hits = self._record_hits = 0
        self._builds = self._build_failures = 0
        self._evictions = {"capacity": 0, "expired": 0, "invalidated": 0}

    # -- hit path --------------------------------------------------------------

    def lease(self, key: Hashable) -> Entry | None:
        """The live entry for ``key``, leased, or None; takes no cache lock."""
        entry = self.routes.get(key)
        if entry is None or self._timer() >= entry.expires_at or not entry.acquire():
            return None
        entry.used = True
        self._hits += 1
        return entry

    def get(self, key: Hashable, lookup: Callable[[], Tenant | None]) -> Entry | None:
        """:meth:`lease` without a lock if it can, else :meth:`load`."""
        return self.lease(key) or self.load(key, lookup)

    # -- miss path -------------------------------------------------------------

    def load(self, key: Hashable, lookup: Callable[[], Tenant | None]) -> Entry | None:
        """The leased entry for ``key``, building it if needed; None if unknown.

        ``lookup`` runs at most once at a time per key and its errors propagate
        uncached, except that an expired app is served a while longer when the
        lookup cannot reach the database. Raises :class:`BuildFailed` or
        :class:`BuildTimeout`.
        """
        while True:
            with self._lock:
                self._expire()
                now = self._timer()
                entry = self.routes.get(key)
                stale = None
                if entry is not None:
                    if now < entry.expires_at and entry.acquire():
                        entry.used = True
                        self._hits += 1
                        return entry
                    stale = entry
                if key in self._negative:
                    self._negative_hits += 1
                    return None
                failure = self._failures.get(key)
                flight = self._lookups.get(key)
                ticket = None
                known = None
                if failure is None and flight is None:
                    epochs = (
                        self._negative_clears,
                        self._route_clears,
                        self._app_clears,
                    )
                    queue = Queue(now, self.policy.build_timeout)
                    flight = self._lookups.start(key, _Lookup(queue, epochs))
                    self._misses += 1
                    # Taken in the same critical section the flight starts in:
                    # a change from now on reaches the flight (and discards
                    # its build), one before it has dropped the record.
                    known = self._records.take(key, now)
                    if known is not None:
                        self._record_hits += 1
                elif failure is None:
                    assert flight is not None
                    overran = partial(self._back_off, key, flight.slug)
                    ticket = self._lookups.admit(flight, key, now, overran)
            self._retire_dropped()
            if failure is not None:
                # A fresh exception each time: re-raising one object would
                # grow its traceback with every request of the backoff.
                raise fresh(failure[1])
            assert flight is not None
            if ticket is None:
                look_up: Callable[[], Entry | None]
                if known is not None:
                    # No lookup, so no follower started here: none needs to
                    # be, since records come only from apps built after a
                    # lookup in this process (forget_everything drops them
                    # in a forked child).
                    look_up = partial(self._entry_for, key, known, flight)
                else:
                    look_up = partial(self._look_up, key, flight, lookup, stale)
                entry = self._lookups.lead(key, flight, look_up)
            else:
                entry = self._lookups.wait(ticket)
            if entry is None:
                return None
            if entry.acquire():
                if ticket is not None:
                    self._hits += 1  # served by another request's miss
                return entry
            # Retired in between (say a change raced the build): go round again.

    def _back_off(self, key: Hashable, slug: str | None, overran: BuildTimeout) -> None:
        """Answer ``key`` with ``overran`` for ``failure_backoff``; logged once.

        Called with the lock held.
        """
        if key not in self._failures:
            log.warning(
                "%s; its requests get 503 for %g s (failure_backoff)",
                overran,
                self.policy.failure_backoff,
                # None while it was being looked up: which tenant is unknown.
                extra={"tenant": slug or "-"},
            )
        self._failures[key] = (slug, overran)

    def _look_up(
        self,
        key: Hashable,
        flight: _Lookup,
        lookup: Callable[[], Tenant | None],
        stale: Entry | None,
    ) -> Entry | None:
        """What ``key``'s lookup flight computes: the tenant's entry, the
        ``stale`` one while the database is down, or None (no such tenant)."""
        try:
            tenant = lookup()
        except (RegistryUnavailable, SchemaMissing):
            if stale is None or not self._keep_stale(stale):
                raise
            return stale
        if tenant is not None:
            return self._entry_for(key, tenant, flight)
        with self._lock:
            # A tenant created meanwhile cleared the negative cache.
            if flight.epochs[0] == self._negative_clears:
                self._negative[key] = True
        return None

    def _keep_stale(self, entry: Entry) -> bool:
        """Serve an expired app a while longer, since the database is down."""
        with self._lock:
            if self._held(entry.tenant.slug) is not entry:
                return False  # evicted meanwhile, or past its stale window
            entry.serve_until(self._timer() + self.policy.failure_backoff)
        # DEBUG: during an outage this repeats per tenant and backoff, and the
        # dispatcher already says once that the registry is unavailable.
        log.debug(
            "serving the expired app of tenant %r: the registry is unavailable",
            entry.tenant.slug,
            extra={"tenant": entry.tenant.slug},
        )
        return True

    def _entry_for(self, key: Hashable, tenant: Tenant, looking: _Lookup) -> Entry:
        """Reuse the slug's app if it is this version; otherwise build one.

        Single-flight again per (slug, version): cold requests for one tenant
        under several names (domain, subdomain, path) cause one build, and
        their waiters are counted in its one queue.
        """
        build = (tenant.slug, tenant.version)
        epochs = looking.epochs
        with self._lock:
            # From now on only changes to this tenant matter to this flight.
            looking.found(tenant.slug)
            now = self._timer()
            entry = self._held(tenant.slug)
            if (
                entry is not None
                and entry.tenant.version == tenant.version
                and now < entry.expires_at
            ):
                self._link(key, entry, epochs)
                return entry
            flight = self._building.get(build)
            ticket = None
            if flight is None:
                flight = self._building.start(build, Flight(looking.queue))
            else:
                overran = partial(self._back_off, key, tenant.slug)
                ticket = self._building.admit(flight, key, now, overran)
                # Whoever waits for this key waits for that build: same bounds.
                looking.queue = flight.queue
        if ticket is None:
            build_entry = partial(self._build_entry, key, tenant, looking)
            return self._building.lead(build, flight, build_entry)
        try:
            entry = self._building.wait(ticket)
        except BuildFailed as e:
            with self._lock:
                self._failures[key] = (tenant.slug, fresh(e))
            raise
        with self._lock:
            if self._held(tenant.slug) is entry:
                self._link(key, entry, epochs)
        return entry

    def _build_entry(self, key: Hashable, tenant: Tenant, looking: _Lookup) -> Entry:
        started = self._timer()
        # create_app's own lines name the tenant (see dispatcher.logs).
        building = BUILDING.set(tenant.slug)
        try:
            app = self._build(tenant)
            if not callable(app):
                # Cached, it would raise TypeError on every request for app_ttl.
                raise TypeError(
                    f"create_app returned {app!r} for tenant {tenant.slug!r}: "
                    "a WSGI application must be callable"
                )
        except Exception as e:
            failure = BuildFailed(f"building the app of tenant {tenant.slug!r} failed")
            failure.__cause__ = e
            log.exception(
                "building the app of tenant %r failed",
                tenant.slug,
                extra={"tenant": tenant.slug},
            )
            with self._lock:
                self._build_failures += 1
                self._failures[key] = (tenant.slug, failure)
            raise fresh(failure) from e
        finally:
            BUILDING.reset(building)
        built = self._timer()
        expires_at = built + self.policy.app_ttl
        # Kept stale_if_error longer: not served, unless the database is down
        # when it is due for a rebuild. Fixed here, once: see dispatcher.entries.
        kept_until = expires_at + self.policy.stale_window
        entry = Entry(
            app, tenant, expires_at, self._teardown, kept_until, self._outcome(app)
        )
        store = self._store(app)
        with self._lock:
            if store is self._apps:
                # A shared app was built once, by its owner: nothing to count.
                self._builds += 1
                self._build_times.append(built - started)
            if (
                tenant.version >= looking.newest
                and looking.epochs[2] == self._app_clears
            ):
                old = self._held(tenant.slug)
                if old is not None:
                    expired = built >= old.expires_at
                    self._forget(old, "expired" if expired else "invalidated")
                store[tenant.slug] = entry
                self._link(key, entry, looking.epochs)
                # Built, if late: no name of the tenant stays backed off.
                self._end_backoff(tenant.slug)
            else:
                # The tenant changed (or everything was evicted) while this
                # was built: drop it, and the caller finds the entry retired
                # and looks the tenant up again.
                self._evictions["invalidated"] += 1
                self._dropped.append((entry, "invalidated"))
        self._retire_dropped()
        return entry

    def _link(self, key: Hashable, entry: Entry, epochs: tuple[int, int, int]) -> None:
        if epochs[1] != self._route_clears:
            # Routes were dropped while this lookup ran (a new custom domain may
            # now own this host): serve this request, keep no route.
            return
        previous = self.routes.get(key)
        if previous is not None and previous is not entry:
            previous.keys.discard(key)
        self.routes[key] = entry
        entry.keys.add(key)
        # A key is routed or recorded, never both.
        self._records.drop(key)

    # -- eviction --------------------------------------------------------------

    def invalidate(
        self, slug: str, generation: int | None = None, *, names_changed: bool = True
    ) -> bool:
        """Evict ``slug``'s app if older than ``generation`` (any age if None).

        ``names_changed`` (a tenant was created or got a new subdomain, path
        prefix or domain) also forgets every "no such tenant" answer, since one
        of them may now be wrong. Returns whether an app was evicted.
        """
        with self._lock:
            if generation is not None:
                # Builds in flight must not keep what this change made stale.
                for flight in self._lookups.values():
                    flight.saw(slug, generation)
            else:
                self._app_clears += 1  # no version to compare builds in flight to
            if names_changed:
                self._negative.clear()
                self._negative_clears += 1
                # A name may have moved to another tenant: trust no record.
                self._records.clear()
            else:
                self._records.drop_tenant(slug, generation)
            # The change may have mended what made the build fail.
            self._end_backoff(slug)
            entry = self._held(slug)
            evicted = entry is not None and (
                generation is None or entry.tenant.version < generation
            )
            if entry is not None and evicted:
                self._forget(entry, "invalidated")
        self._retire_dropped()
        return evicted

    def _end_backoff(self, slug: str) -> None:
        if self._failures:
            for key in [k for k, (s, _) in self._failures.items() if s == slug]:
                del self._failures[key]

    def forget_unknown(self, keys: Iterable[Hashable]) -> None:
        """Look these routing keys up again: a change made them name a tenant.

        Drops their "no such tenant" answers and their routes (the apps stay
        built); every other key is untouched.
        """
        with self._lock:
            for key in keys:
                self._negative.pop(key, None)
                self._records.drop(key)
                entry = self.routes.pop(key, None)
                if entry is not None:
                    entry.keys.discard(key)
            # Lookups racing this one must not store what was just dropped.
            self._negative_clears += 1
            self._route_clears += 1

    def forget_routes(self, matches: Callable[[Hashable], bool]) -> None:
        """Drop the routing keys ``matches`` picks; their apps stay built.

        The next request for such a key looks its tenant up again and reuses
        the app if the tenant's version is unchanged.
        """
        with self._lock:
            self._route_clears += 1
            for key in [key for key in self.routes if matches(key)]:
                self.routes.pop(key).keys.discard(key)
            self._records.drop_matching(matches)

    def clear(self) -> None:
        """Evict every app (for example at shutdown)."""
        with self._lock:
            self._app_clears += 1
            for store in (self._apps, self._shared_apps):
                for entry in list(store.values()):
                    self._forget(entry, "invalidated")
            self._records.clear()
            self._negative.clear()
            self._negative_clears += 1
        self._retire_dropped()

    def forget_everything(self) -> None:
        """Drop every entry without tearing anything down.

        For a forked child: the apps it inherited belong to the parent (their
        pools hold the parent's sockets), so it must neither use nor close them.
        """
        self._lock = threading.Lock()  # the parent's may have been held at fork
        # The flights in progress are the parent's threads': none runs here.
        self._lookups = Flights(self._lock, self.policy, self._timer)
        self._building = Flights(self._lock, self.policy, self._timer)
        self._apps.clear()
        self._shared_apps.clear()
        self.routes.clear()
        # The parent's snapshots too: this process's follower will not report
        # changes made before its first lookup (see _forked in middleware).
        self._records.clear()
        self._negative.clear()
        self._failures.clear()
        self._dropped.clear()
        self._negative_clears += 1
        self._route_clears += 1
        self._app_clears += 1

    def _store(self, app: WSGIApplication) -> Apps:
        """The store of entries holding ``app``: shared apps' or own apps'."""
        return self._shared_apps if self._is_shared(app) else self._apps

    def _held(self, slug: str) -> Entry | None:
        """The slug's entry in whichever store holds it (the lock is held)."""
        entry = self._apps.get(slug)
        return entry if entry is not None else self._shared_apps.get(slug)

    def _expire(self) -> None:
        self._apps.expire()
        self._shared_apps.expire()

    def _forget(self, entry: Entry, cause: str) -> None:
        self._store(entry.app).pop(entry.tenant.slug, None)
        self._on_dropped(entry, cause)

    def _on_dropped(self, entry: Entry, cause: str) -> None:
        # Called with the lock held: unlink now, retire after the lock is released.
        # An own app dropped only for room leaves its snapshot behind, valid
        # until the app's own expiry as built: an app served past it while the
        # database was down (serve_until) leaves none.
        valid_until = min(entry.expires_at, entry.kept_until - self.policy.stale_window)
        record = (
            cause == "capacity"
            and not self._is_shared(entry.app)
            and self._timer() < valid_until
        )
        for key in entry.keys:
            if self.routes.get(key) is entry:
                del self.routes[key]
                if record:
                    self._records.put(key, entry.tenant, valid_until)
        self._evictions[cause] += 1
        self._dropped.append((entry, cause))

    def _retire_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, []
        for entry, cause in dropped:
            slug = entry.tenant.slug
            log.info(
                "evicted the app of tenant %r (%s)", slug, cause, extra={"tenant": slug}
            )
            entry.retire()

    # -- introspection ---------------------------------------------------------

    def stats(self) -> CacheStats:
        with self._lock:
            self._expire()
            times = sorted(self._build_times)
            evictions = dict(self._evictions)
            apps, negative = int(self._apps.currsize), len(self._negative)
            shared = int(self._shared_apps.currsize)
        self._retire_dropped()
        p50 = p90 = p99 = None
        if len(times) == 1:
            p50 = p90 = p99 = times[0]
        elif times:
            # Imported here: statistics (and its fractions, decimal) is weight
            # a worker that never asks for stats need not carry.
            from statistics import quantiles

            cuts = quantiles(times, n=100, method="inclusive")
            p50, p90, p99 = cuts[49], cuts[89], cuts[98]
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            negative_hits=self._negative_hits,
            builds=self._builds,
            build_failures=self._build_failures,
            evictions=evictions,
            apps=apps,
            negative_entries=negative,
            build_time_p50=p50,
            build_time_p90=p90,
            build_time_p99=p99,
            shared_tenants=shared,
            record_hits=self._record_hits,
        )

    def __len__(self) -> int:
        """Own apps held, counting expired ones kept for ``stale_if_error``."""
        with self._lock:
            self._expire()
            size = self._apps.currsize
        self._retire_dropped()
        return int(size)

    def entries(self) -> list[Entry]:
        """The entries held (own and shared apps'), expired ones kept for
        ``stale_if_error`` included."""
        with self._lock:
            return [
                entry
                for store in (self._apps, self._shared_apps)
                for _, entry in store.items()
            ]

    def __contains__(self, slug: object) -> bool:
        with self._lock:
            return slug in self._apps.keys() or slug in self._shared_apps.keys()

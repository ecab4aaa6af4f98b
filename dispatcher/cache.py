"""The bounded cache of built tenant apps. Knows nothing about HTTP.

* Apps are kept per tenant slug in a :class:`cachetools.TLRUCache`: at most
  ``max_apps`` (least recently used out first) and each for ``app_ttl`` seconds
  after its build. Routing keys (a host, a path prefix) alias those entries.
* Hits take no cache lock: a plain dict lookup, an expiry check and a lease on
  the entry. Hits mark the entry used, and capacity eviction gives used entries
  a second chance (the CLOCK approximation of LRU), so hot tenants stay.
* Misses are single-flight per routing key: one caller looks the tenant up and
  builds it with no lock held, the others wait up to ``build_timeout``.
* "No such tenant" is remembered for ``negative_ttl`` in its own bounded cache;
  a failed build for ``failure_backoff``. Errors of the lookup itself (the
  database is down) are never remembered.
* Evicted entries are retired: teardown runs once, outside every lock, after
  the last in-flight response of the app has been closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from functools import partial
from statistics import quantiles
from typing import TYPE_CHECKING

from cachetools import LRUCache, TLRUCache, TTLCache

from dispatcher.exceptions import DispatcherError, RegistryUnavailable, SchemaMissing
from dispatcher.tenant import Tenant

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = [
    "AppCache",
    "BuildFailed",
    "BuildTimeout",
    "CacheStats",
    "Entry",
    "default_teardown",
]

log = logging.getLogger(__name__)

Timer = Callable[[], float]
Teardown = Callable[["WSGIApplication", Tenant], None]


class BuildFailed(DispatcherError):
    """``create_app`` raised for this tenant (recently); answered with 500."""


class BuildTimeout(DispatcherError):
    """Another request's build of this tenant did not finish in time; 503."""


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
            log.exception("teardown %r of tenant %r failed", dispose, tenant.slug)


class Entry:
    """A built app, the tenant snapshot it was built from, and its leases.

    Leases are counted without a lock: ``list.append`` and ``list.pop`` are
    atomic, and a lease taken after ``retire()`` is handed straight back. The
    one teardown token is popped by whoever sees the entry retired with no
    lease left, so teardown runs exactly once.
    """

    __slots__ = (
        "app",
        "tenant",
        "expires_at",
        "used",
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
    ) -> None:
        self.app = app
        self.tenant = tenant
        self.expires_at = expires_at
        self.used = False
        self.keys: set[Hashable] = set()
        self.retired = False
        #: One item per in-flight response.
        self.leases: list[None] = []
        self._token = [teardown]

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
            log.exception("teardown of tenant %r failed", self.tenant.slug)


class _Apps(TLRUCache[str, Entry]):
    """Slug -> entry; hands every entry it drops to ``dropped`` with the cause.

    cachetools calls ``popitem`` for capacity and drops expired items in
    ``expire`` (also from inside ``__setitem__``), so both are overridden.
    """

    def __init__(
        self,
        maxsize: int,
        timer: Timer,
        dropped: Callable[[Entry, str], None],
        grace: float,
    ) -> None:
        super().__init__(maxsize, partial(_expires_at, grace), timer)
        self._dropped = dropped

    def popitem(self) -> tuple[str, Entry]:
        while True:
            slug, entry = super().popitem()
            if not entry.used:
                self._dropped(entry, "capacity")
                return slug, entry
            # Used since the last sweep: a second chance at the recent end.
            entry.used = False
            self[slug] = entry

    def expire(self, time: float | None = None) -> list[tuple[str, Entry]]:
        expired = list(super().expire(time))
        for _, entry in expired:
            self._dropped(entry, "expired")
        return expired


def _expires_at(grace: float, _slug: str, entry: Entry, _now: float) -> float:
    return entry.expires_at + grace


def _fresh(error: BaseException) -> BaseException:
    """A new exception like ``error``, for another caller to raise."""
    try:
        copy = type(error)(*error.args)
    except Exception:
        return error
    copy.__cause__ = error.__cause__
    return copy


class _Flight:
    """One in-progress lookup and build that other callers wait for."""

    __slots__ = ("done", "entry", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: Entry | None = None
        self.error: BaseException | None = None


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


class AppCache:
    """Built apps by routing key, bounded in count and age.

    :param build: makes the WSGI app for a tenant snapshot (``create_app``).
    :param teardown: called once per evicted app, after its last response.
    :param timer: a monotonic clock in seconds; tests pass a fake one.
    """

    def __init__(
        self,
        build: Callable[[Tenant], WSGIApplication],
        *,
        max_apps: int = 1000,
        app_ttl: float = 3600.0,
        negative_size: int = 10_000,
        negative_ttl: float = 5.0,
        build_timeout: float = 30.0,
        failure_backoff: float = 5.0,
        stale_if_error: float | None = None,
        teardown: Teardown = default_teardown,
        timer: Timer = time.monotonic,
    ) -> None:
        self._build = build
        self._app_ttl = app_ttl
        if stale_if_error is None:
            stale_if_error = app_ttl
        self._build_timeout = build_timeout
        self._failure_backoff = failure_backoff
        self._teardown = teardown
        self._timer = timer
        self._lock = threading.Lock()
        self._dropped: list[tuple[Entry, str]] = []
        # Expired apps stay in the cache for stale_if_error more seconds: not
        # served, unless the database is down when they are due for a rebuild.
        self._apps = _Apps(max_apps, timer, self._on_dropped, stale_if_error)
        # Routing key -> entry. Read without the lock on the hit path, which
        # must also check expires_at and acquire() the entry: see lease().
        self.routes: dict[Hashable, Entry] = {}
        self._negative: TTLCache[Hashable, bool] = TTLCache(
            negative_size, negative_ttl, timer
        )
        # Routing key -> (slug, failure) while the failed build backs off.
        self._failures: TTLCache[Hashable, tuple[str, BuildFailed]] = TTLCache(
            max_apps, failure_backoff, timer
        )
        # Newest change seen per slug, so a build that raced a change is not kept.
        self._changed: LRUCache[str, int] = LRUCache(max(max_apps, 1000))
        # Bumped when negative answers or routes are dropped, so a lookup that
        # raced the drop does not store what was just dropped.
        self._negative_clears = 0
        self._route_clears = 0
        self._app_clears = 0
        self._flights: dict[Hashable, _Flight] = {}
        # (slug, version) -> the build in progress, for every routing key.
        self._building: dict[tuple[str, int], _Flight] = {}
        self._build_times: deque[float] = deque(maxlen=1000)
        self._hits = self._misses = self._negative_hits = 0
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
                self._apps.expire()
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
                flight = self._flights.get(key)
                leader = flight is None and failure is None
                if leader:
                    flight = self._flights[key] = _Flight()
                    epochs = (
                        self._negative_clears,
                        self._route_clears,
                        self._app_clears,
                    )
                    self._misses += 1
            self._retire_dropped()
            if failure is not None:
                # A fresh exception each time: re-raising one object would
                # grow its traceback with every request of the backoff.
                raise _fresh(failure[1])
            assert flight is not None
            if leader:
                return self._lead(key, flight, lookup, epochs, stale)
            if not flight.done.wait(self._build_timeout):
                raise BuildTimeout(
                    f"the app for {key!r} was not built within "
                    f"{self._build_timeout:g} s"
                )
            if flight.error is not None:
                raise _fresh(flight.error)
            if flight.entry is None:
                return None
            if flight.entry.acquire():
                self._hits += 1
                return flight.entry
            # Retired in between: go round again.

    def _lead(
        self,
        key: Hashable,
        flight: _Flight,
        lookup: Callable[[], Tenant | None],
        epochs: tuple[int, int, int],
        stale: Entry | None,
    ) -> Entry | None:
        try:
            try:
                tenant = lookup()
            except (RegistryUnavailable, SchemaMissing):
                if stale is None or not self._keep_stale(stale):
                    raise
                entry: Entry | None = stale
            else:
                entry = None if tenant is None else self._entry_for(key, tenant, epochs)
        except BaseException as e:
            flight.error = e
            raise
        else:
            flight.entry = entry
        finally:
            with self._lock:
                del self._flights[key]
                if flight.error is None and flight.entry is None:
                    # A tenant created meanwhile cleared the negative cache.
                    if epochs[0] == self._negative_clears:
                        self._negative[key] = True
            flight.done.set()
        if entry is not None and not entry.acquire():
            return self.load(key, lookup)
        return entry

    def _keep_stale(self, entry: Entry) -> bool:
        """Serve an expired app a while longer, since the database is down."""
        with self._lock:
            if self._apps.get(entry.tenant.slug) is not entry:
                return False  # evicted meanwhile, or past its stale window
            entry.expires_at = self._timer() + self._failure_backoff
        log.warning(
            "serving the expired app of tenant %r: the registry is unavailable",
            entry.tenant.slug,
        )
        return True

    def _entry_for(
        self, key: Hashable, tenant: Tenant, epochs: tuple[int, int, int]
    ) -> Entry:
        """Reuse the slug's app if it is this version; otherwise build one.

        Single-flight again per (slug, version): cold requests for one tenant
        under several names (domain, subdomain, path) cause one build.
        """
        build = (tenant.slug, tenant.version)
        with self._lock:
            entry = self._apps.get(tenant.slug)
            if (
                entry is not None
                and entry.tenant.version == tenant.version
                and self._timer() < entry.expires_at
            ):
                self._link(key, entry, epochs)
                return entry
            flight = self._building.get(build)
            leader = flight is None
            if flight is None:
                flight = self._building[build] = _Flight()
        if leader:
            try:
                flight.entry = self._build_entry(key, tenant, epochs)
                return flight.entry
            except BaseException as e:
                flight.error = e
                raise
            finally:
                with self._lock:
                    del self._building[build]
                flight.done.set()
        if not flight.done.wait(self._build_timeout):
            raise BuildTimeout(
                f"the app of tenant {tenant.slug!r} was not built within "
                f"{self._build_timeout:g} s"
            )
        if flight.error is not None:
            if isinstance(flight.error, BuildFailed):
                with self._lock:
                    self._failures[key] = (tenant.slug, flight.error)
            raise _fresh(flight.error)
        assert flight.entry is not None
        with self._lock:
            if self._apps.get(tenant.slug) is flight.entry:
                self._link(key, flight.entry, epochs)
        return flight.entry

    def _build_entry(
        self, key: Hashable, tenant: Tenant, epochs: tuple[int, int, int]
    ) -> Entry:
        started = self._timer()
        try:
            app = self._build(tenant)
        except Exception as e:
            failure = BuildFailed(f"building the app of tenant {tenant.slug!r} failed")
            failure.__cause__ = e
            log.exception("building the app of tenant %r failed", tenant.slug)
            with self._lock:
                self._build_failures += 1
                self._failures[key] = (tenant.slug, failure)
            raise _fresh(failure) from e
        entry = Entry(app, tenant, self._timer() + self._app_ttl, self._teardown)
        with self._lock:
            self._builds += 1
            self._build_times.append(self._timer() - started)
            if (
                tenant.version >= self._changed.get(tenant.slug, 0)
                and epochs[2] == self._app_clears
            ):
                old = self._apps.get(tenant.slug)
                if old is not None:
                    expired = self._timer() >= old.expires_at
                    self._forget(old, "expired" if expired else "invalidated")
                self._apps[tenant.slug] = entry
                self._link(key, entry, epochs)
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
                self._changed[slug] = max(generation, self._changed.get(slug, 0))
            else:
                self._app_clears += 1  # no version to compare builds in flight to
            if names_changed:
                self._negative.clear()
                self._negative_clears += 1
            # The change may have mended what made the build fail.
            for key in [k for k, (s, _) in self._failures.items() if s == slug]:
                del self._failures[key]
            entry = self._apps.get(slug)
            evicted = entry is not None and (
                generation is None or entry.tenant.version < generation
            )
            if entry is not None and evicted:
                self._forget(entry, "invalidated")
        self._retire_dropped()
        return evicted

    def forget_unknown(self, keys: Iterable[Hashable]) -> None:
        """Look these routing keys up again: a change made them name a tenant.

        Drops their "no such tenant" answers and their routes (the apps stay
        built); every other key is untouched.
        """
        with self._lock:
            for key in keys:
                self._negative.pop(key, None)
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

    def clear(self) -> None:
        """Evict every app (for example at shutdown)."""
        with self._lock:
            self._app_clears += 1
            for entry in list(self._apps.values()):
                self._forget(entry, "invalidated")
            self._negative.clear()
            self._negative_clears += 1
        self._retire_dropped()

    def forget_everything(self) -> None:
        """Drop every entry without tearing anything down.

        For a forked child: the apps it inherited belong to the parent (their
        pools hold the parent's sockets), so it must neither use nor close them.
        """
        self._lock = threading.Lock()  # the parent's may have been held at fork
        self._apps.clear()
        self.routes.clear()
        self._negative.clear()
        self._failures.clear()
        self._flights.clear()
        self._building.clear()
        self._dropped.clear()
        self._negative_clears += 1
        self._route_clears += 1
        self._app_clears += 1

    def _forget(self, entry: Entry, cause: str) -> None:
        self._apps.pop(entry.tenant.slug, None)
        self._on_dropped(entry, cause)

    def _on_dropped(self, entry: Entry, cause: str) -> None:
        # Called with the lock held: unlink now, retire after the lock is released.
        for key in entry.keys:
            if self.routes.get(key) is entry:
                del self.routes[key]
        self._evictions[cause] += 1
        self._dropped.append((entry, cause))

    def _retire_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, []
        for entry, cause in dropped:
            log.info("evicted the app of tenant %r (%s)", entry.tenant.slug, cause)
            entry.retire()

    # -- introspection ---------------------------------------------------------

    def stats(self) -> CacheStats:
        with self._lock:
            self._apps.expire()
            times = sorted(self._build_times)
            evictions = dict(self._evictions)
            apps, negative = int(self._apps.currsize), len(self._negative)
        self._retire_dropped()
        p50 = p90 = p99 = None
        if len(times) == 1:
            p50 = p90 = p99 = times[0]
        elif times:
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
        )

    def __len__(self) -> int:
        """Apps held, counting expired ones kept for ``stale_if_error``."""
        with self._lock:
            self._apps.expire()
            size = self._apps.currsize
        self._retire_dropped()
        return int(size)

    def entries(self) -> list[Entry]:
        """The entries held, expired ones kept for ``stale_if_error`` included."""
        with self._lock:
            return [entry for _, entry in self._apps.items()]

    def __contains__(self, slug: object) -> bool:
        with self._lock:
            return slug in self._apps.keys()

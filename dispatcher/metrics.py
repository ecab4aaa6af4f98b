"""Prometheus metrics of a dispatcher, correct under a pre-fork server.

Usage::

    from dispatcher.metrics import instrument, metrics_app

    metrics = instrument(dispatcher, data=tenant_data)
    # An operator-only path (anyone who reaches the port reaches it):
    application = DispatcherMiddleware(dispatcher, {"/-/metrics": metrics_app(metrics)})

Under gunicorn, ``dispatcher.gunicorn_conf`` serves the metrics of every
worker from the master on a port of their own (``DISPATCHER_METRICS_ADDRESS``).

The hit path calls nothing: the dispatcher counts requests in a list of ints
(:mod:`dispatcher.counts`), and a daemon thread per process copies the counts
into ``prometheus_client`` every ``interval`` seconds, as increments since its
last copy. Lookups, builds and applied changes are observed as they happen
(they are rare next to hits, and a histogram needs each value). With
``PROMETHEUS_MULTIPROC_DIR`` set (before ``prometheus_client`` is first
imported), each process writes its values to files there and a scrape sums
them; ``mark_process_dead`` removes a dead worker's live gauges.

Fork: a child's thread starts again at its first lookup, build, change or
scrape (never in a process that only forks, such as gunicorn's master under
``--preload``), and its first increments start from the counts at the fork,
so nothing the parent counted is counted again. A process about to exit
copies what it counted since its last copy (:func:`sync_all`: gunicorn's
``worker_exit``, else ``atexit``).

Nothing here fails a request: a metric that cannot be written (its
multiprocess directory gone, a full disk) is logged once, and the next copy
tries again; the counts are copied then. No metric has a label per
tenant: thousands of tenants would make as many series.

Nothing here imports at ``import dispatcher``: ``prometheus_client`` is the
optional extra ``metrics``.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

try:
    from prometheus_client import (
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        make_wsgi_app,
        values,
    )
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as e:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "dispatcher.metrics needs prometheus_client:"
        " pip install 'flask-tenant-dispatcher[metrics]'"
    ) from e
from sqlalchemy.pool import QueuePool

from dispatcher import forks
from dispatcher.counts import NO_OBSERVER, OUTCOMES, Observer
from dispatcher.settings import MULTIPROC_DIR_VARIABLE

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from dispatcher.cache import CacheStats
    from dispatcher.changes import TenantChange
    from dispatcher.data import TenantData
    from dispatcher.middleware import TenantDispatcher

__all__ = ["PREFIX", "DispatcherMetrics", "instrument", "metrics_app", "sync_all"]

log = logging.getLogger(__name__)

PREFIX = "tenant_dispatcher_"

# Lookups are one indexed query (milliseconds); builds run create_app (tens of
# milliseconds to seconds); the feed's lag is the poll interval at most.
_LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BUILD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: Beyond its poll interval, a read may wait this long for the database (its
#: default timeout) before the follower counts as failing to read the feed.
_READ_SLACK = 5.0

#: How a scrape combines a gauge across processes: a sum of the live ones,
#: the live ones' minimum or maximum, or every live one by its pid.
_Mode = Literal["livesum", "livemin", "livemax", "liveall"]


def instrument(
    dispatcher: TenantDispatcher,
    *,
    data: TenantData | None = None,
    interval: float = 1.0,
    registry: CollectorRegistry | None = None,
) -> DispatcherMetrics:
    """Export ``dispatcher``'s metrics (and ``data``'s pools) to Prometheus.

    Sets ``dispatcher.observer``; nothing runs until the first lookup, build,
    change or :meth:`~DispatcherMetrics.sync` in a process. One dispatcher per
    registry (the default: ``prometheus_client.REGISTRY``).

    :param interval: seconds between two copies of the counts.
    :raises ValueError: the dispatcher is instrumented already, or a bad interval.
    """
    if isinstance(dispatcher.observer, DispatcherMetrics):
        raise ValueError("this dispatcher is instrumented already")
    metrics = DispatcherMetrics(
        dispatcher, data=data, interval=interval, registry=registry
    )
    dispatcher.observer = metrics
    return metrics


#: What :func:`sync_all` copies: every instrumented dispatcher of this
#: process, held weakly (a dispatcher nobody holds has nothing to report).
_instrumented: weakref.WeakSet[DispatcherMetrics] = weakref.WeakSet()


def sync_all() -> None:
    """Copy the counts of every instrumented dispatcher one last time.

    For a process about to exit: counted since the last copy, they would be
    lost with it. gunicorn's ``worker_exit`` hook calls it
    (:mod:`dispatcher.gunicorn_conf`), and so does ``atexit`` for any other
    server. A dispatcher that counted nothing since its last copy is left
    alone (no metrics, files or threads made in a process that only forks).
    Never raises.
    """
    for metrics in list(_instrumented):
        metrics.last_copy()


atexit.register(sync_all)


@dataclass(frozen=True)
class _Metrics:
    """The metric objects, made in the first process that reports anything."""

    requests: Counter
    builds: Counter
    build_failures: Counter
    evictions: Counter
    unclosed: Counter
    build_seconds: Histogram
    lookup_seconds: Histogram
    feed_lag: Histogram
    apps: Gauge
    shared_tenants: Gauge
    negative_entries: Gauge
    feed_generation: Gauge
    feed_read_age: Gauge
    registry_up: Gauge
    pool_checked_out: Gauge
    pool_overflow: Gauge
    pool_size: Gauge
    pool_limit: Gauge

    @classmethod
    def make(cls, registry: CollectorRegistry) -> _Metrics:
        """The metrics, registered in ``registry``: all or none of them.

        Made in a registry of their own first, so that one that cannot be
        made (its file cannot be written) leaves nothing in ``registry`` to
        clash with the next attempt.
        """
        made = cls._made_in(CollectorRegistry())
        registered: list[Counter | Gauge | Histogram] = []
        try:
            for collector in made.collectors():
                registry.register(collector)
                registered.append(collector)
        except BaseException:
            for collector in registered:
                registry.unregister(collector)
            raise
        return made

    @classmethod
    def _made_in(cls, registry: CollectorRegistry) -> _Metrics:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, mode: _Mode, *labels: str) -> Gauge:
            return Gauge(
                PREFIX + name, doc, labels, registry=registry, multiprocess_mode=mode
            )

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(PREFIX + name, doc, buckets=buckets, registry=registry)

        made = cls(
            requests=counter("requests", "Requests answered, by outcome.", "outcome"),
            builds=counter("builds", "Tenant apps built by create_app."),
            build_failures=counter("build_failures", "Builds that raised."),
            evictions=counter("evictions", "Tenant apps evicted, by cause.", "cause"),
            unclosed=counter(
                "responses_not_closed",
                "Responses a server dropped without close().",
            ),
            build_seconds=histogram(
                "build_seconds", "Seconds create_app took.", _BUILD_BUCKETS
            ),
            lookup_seconds=Histogram(
                PREFIX + "lookup_seconds",
                "Seconds a registry lookup took, by result (found, unknown, error).",
                ["result"],
                buckets=_LOOKUP_BUCKETS,
                registry=registry,
            ),
            feed_lag=histogram(
                "feed_lag_seconds",
                "Seconds from a change's write to this process applying it.",
                _LAG_BUCKETS,
            ),
            apps=gauge("apps", "Tenant apps held (own apps).", "livesum"),
            shared_tenants=gauge(
                "shared_tenants", "Tenants held for a shared app.", "livesum"
            ),
            negative_entries=gauge(
                "negative_entries", "Names remembered as unknown.", "livesum"
            ),
            feed_generation=gauge(
                "feed_generation",
                "The change feed's generation this process has applied.",
                "liveall",
            ),
            feed_read_age=gauge(
                "feed_read_age_seconds",
                "Seconds since the change follower last read the feed (the"
                " stalest process's; +Inf: never).",
                "livemax",
            ),
            registry_up=gauge(
                "registry_up",
                "1 if the registry answered the last attempt to reach it (a"
                " lookup, a feed read), else 0; the worst process's.",
                "livemin",
            ),
            pool_checked_out=gauge(
                "data_pool_checked_out",
                "Tenant-data connections in use, by data server.",
                "livesum",
                "server",
            ),
            pool_overflow=gauge(
                "data_pool_overflow",
                "Tenant-data connections open beyond the pool size, by data server.",
                "livesum",
                "server",
            ),
            pool_size=gauge(
                "data_pool_size",
                "Tenant-data connections kept open (pool_size), by data server.",
                "livesum",
                "server",
            ),
            pool_limit=gauge(
                "data_pool_limit",
                "The most tenant-data connections (pool_size + max_overflow),"
                " by data server.",
                "livesum",
                "server",
            ),
        )
        for outcome in OUTCOMES:  # every outcome shows, if only as 0
            made.requests.labels(outcome)
        return made

    def collectors(self) -> list[Counter | Gauge | Histogram]:
        return list(vars(self).values())


class DispatcherMetrics(Observer):
    """A dispatcher's metrics in ``prometheus_client``; see :func:`instrument`.

    :param dispatcher: whose counts, cache and follower are reported.
    :param data: whose PostgreSQL pools are reported (per data server).
    :param interval: seconds between two copies of the counts.
    :param registry: where the metrics are registered (default:
        ``prometheus_client.REGISTRY``).
    """

    def __init__(
        self,
        dispatcher: TenantDispatcher,
        *,
        data: TenantData | None = None,
        interval: float = 1.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise TypeError(f"interval must be a number, not {interval!r}")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be > 0 seconds, not {interval!r}")
        self.dispatcher = dispatcher
        self.data = data
        self.interval = float(interval)
        self.registry: CollectorRegistry = REGISTRY if registry is None else registry
        self._metrics: _Metrics | None = None
        # (metric, label) -> the count last copied into its counter.
        self._copied: dict[tuple[str, str], int] = {}
        # The last lookup: when (time.monotonic()) and whether it reached the registry.
        self._lookup: tuple[float, bool] | None = None
        self._lock = threading.Lock()  # one copy at a time; guards the above
        self._stop = threading.Event()
        self._running_in: int | None = None
        # A failure is logged once, then not again until the metrics work again.
        self._failing = False
        self._failing_lock = threading.Lock()
        forks.on_fork_in_child(self, DispatcherMetrics._forked)
        _instrumented.add(self)

    # -- what the dispatcher reports as it happens ------------------------------

    def looked_up(self, seconds: float, result: str) -> None:
        self._lookup = (time.monotonic(), result != "error")
        with self._guarded("observing a lookup"):
            metrics = self._started(retry=False)
            if metrics is not None:
                metrics.lookup_seconds.labels(result).observe(seconds)

    def built(self, seconds: float) -> None:
        with self._guarded("observing a build"):
            metrics = self._started(retry=False)
            if metrics is not None:
                metrics.build_seconds.observe(seconds)

    def applied(self, change: TenantChange, lag: float | None) -> None:
        with self._guarded("observing a change"):
            metrics = self._started(retry=False)
            if metrics is not None and lag is not None:
                # Clocks of writer and reader may differ a little: never below 0.
                metrics.feed_lag.observe(max(lag, 0.0))

    # -- copying the counts -----------------------------------------------------

    def sync(self) -> None:
        """Copy the counts and sizes into the metrics now (a scrape calls it).

        Never raises: a failure (the metrics' files cannot be written) is
        logged, and the next copy tries again.
        """
        dispatcher = self.dispatcher
        if self._lookup is None and _follower_read_at(dispatcher) is None:
            # Nothing says yet whether the registry is reachable: following
            # changes reads the feed once (a worker that has served nothing).
            try:
                dispatcher.follow()
            except Exception as e:
                log.debug("following changes for the metrics failed: %s", e)
        with self._guarded("copying the counts"):
            metrics = self._started()
            if metrics is not None:
                self._copy(metrics)
                self._copied_fine()

    def last_copy(self) -> None:
        """Copy the counts once more, as this process exits (:func:`sync_all`).

        Only if something was counted since the last copy, and without
        starting a thread or following changes. Never raises.
        """
        with self._guarded("copying the counts at exit"):
            dispatcher = self.dispatcher
            counts = _counts(dispatcher.outcomes(), dispatcher.stats())
            if all(n <= self._copied.get(key, 0) for key, n in counts.items()):
                return
            metrics = self._started(thread=False)
            if metrics is not None:
                self._copy(metrics)
                self._copied_fine()

    def _copy(self, metrics: _Metrics) -> None:
        dispatcher = self.dispatcher
        with self._lock:
            stats = dispatcher.stats()
            counts = _counts(dispatcher.outcomes(), stats)
            for key, count in counts.items():
                added = count - self._copied.get(key, 0)
                if added > 0:
                    _counter(metrics, key).inc(added)
                # After the increment: one that failed is copied next time.
                self._copied[key] = count
            metrics.apps.set(stats.apps)
            metrics.shared_tenants.set(stats.shared_tenants)
            metrics.negative_entries.set(stats.negative_entries)
            self._sync_follower(metrics)
            if self.data is not None and self.data.servers is not None:
                self._sync_pools(metrics, self.data)

    @contextmanager
    def _guarded(self, doing: str) -> Iterator[None]:
        """Log what raised inside, once until a copy works again, and go on:
        the dispatcher's requests and threads never fail for their metrics."""
        try:
            yield
        except Exception:
            with self._failing_lock:
                first, self._failing = not self._failing, True
            if first:
                log.exception(
                    "%s for the dispatcher's metrics failed; they miss it until"
                    " a copy works again (logged once until then)",
                    doing,
                )

    def _copied_fine(self) -> None:
        """A copy worked: a failure from now on is logged again."""
        if self._failing:
            with self._failing_lock:
                recovered, self._failing = self._failing, False
            if recovered:
                log.warning("the dispatcher's metrics work again")

    def _sync_follower(self, metrics: _Metrics) -> None:
        now = time.monotonic()
        follower = self.dispatcher.registry.feed.follower
        following = follower is not None and follower.running
        read_at = follower.read_at if follower is not None and following else None
        if follower is not None and following:
            if follower.generation is not None:
                metrics.feed_generation.set(follower.generation)
            age = math.inf if read_at is None else now - read_at
            metrics.feed_read_age.set(age)
        # The latest evidence wins: a lookup, a read of the feed, or the
        # moment a following process's read became overdue.
        evidence: list[tuple[float, bool]] = []
        if self._lookup is not None:
            evidence.append(self._lookup)
        if follower is not None and following:
            if read_at is not None:
                evidence.append((read_at, True))
            overdue_at = (
                -math.inf
                if read_at is None
                else read_at + 2 * follower.poll_interval + _READ_SLACK
            )
            if now >= overdue_at:
                evidence.append((overdue_at, False))
        if evidence:
            # On a tie the failure wins.
            _, up = max(evidence, key=lambda item: (item[0], not item[1]))
            metrics.registry_up.set(1 if up else 0)

    def _sync_pools(self, metrics: _Metrics, data: TenantData) -> None:
        servers = data.servers
        assert servers is not None
        for name in servers.names:  # bounded: the configured servers
            pool = servers.engine(name).pool  # no connection is opened
            if not isinstance(pool, QueuePool):
                continue
            metrics.pool_checked_out.labels(name).set(pool.checkedout())
            metrics.pool_overflow.labels(name).set(max(pool.overflow(), 0))
            metrics.pool_size.labels(name).set(pool.size())
            metrics.pool_limit.labels(name).set(data.bound)

    # -- the thread -------------------------------------------------------------

    def _started(self, *, retry: bool = True, thread: bool = True) -> _Metrics | None:
        """The metrics, made and copied by a thread of this process from now on.

        None after a failure to make them (their files cannot be written)
        unless ``retry``: the thread's next copy tries again, not every lookup.
        ``thread=False``: no thread is started (a process about to exit).
        """
        metrics = self._metrics
        if metrics is not None and (self._running_in == os.getpid() or not thread):
            return metrics
        with self._lock:
            # The thread first: if the metrics cannot be made now, it retries.
            pid = os.getpid()
            if thread and self._running_in != pid and not self._stop.is_set():
                copier = threading.Thread(
                    target=_copy_loop,
                    args=(weakref.ref(self), self._stop, self.interval),
                    name="dispatcher-metrics",
                    daemon=True,
                )
                copier.start()
                self._running_in = pid
            if self._metrics is None and (retry or not self._failing):
                self._metrics = _Metrics.make(self.registry)
            return self._metrics

    def _forked(self) -> None:
        """In a forked child: new locks, a thread started again when needed.

        Runs after the dispatcher's own fork hook (registered before this
        object existed), so its cache's lock is the child's already.
        """
        self._lock = threading.Lock()
        self._failing_lock = threading.Lock()
        self._stop = threading.Event()
        if getattr(values.ValueClass, "_multiprocess", False):
            # Files of its own, starting at zero: count from the fork on.
            dispatcher = self.dispatcher
            self._copied = _counts(dispatcher.outcomes(), dispatcher.stats())
        # Else its values are the parent's, as copied: go on from there.
        self._lookup = None

    def close(self) -> None:
        """Stop copying, stop observing, and unregister the metrics."""
        self._stop.set()
        _instrumented.discard(self)
        if self.dispatcher.observer is self:
            self.dispatcher.observer = NO_OBSERVER
        with self._lock:
            metrics, self._metrics = self._metrics, None
        if metrics is not None:
            for collector in metrics.collectors():
                self.registry.unregister(collector)


def _copy_loop(
    ref: weakref.ref[DispatcherMetrics], stop: threading.Event, interval: float
) -> None:
    # A weak reference: metrics nobody holds (their dispatcher gone) end it.
    # It waits first: the thread starts at a process's first lookup, which
    # has just made the metrics; a copy racing that request's neighbours
    # would only split their counts over two copies.
    while not stop.wait(interval):
        metrics = ref()
        if metrics is None:
            return
        metrics.sync()  # never raises
        del metrics


def _counts(outcomes: dict[str, int], stats: CacheStats) -> dict[tuple[str, str], int]:
    """Every count a counter mirrors, by (metric, label)."""
    counts = {("requests", outcome): n for outcome, n in outcomes.items()}
    counts[("builds", "")] = stats.builds
    counts[("build_failures", "")] = stats.build_failures
    counts[("unclosed", "")] = stats.leaked_leases
    for cause, n in stats.evictions.items():
        counts[("evictions", cause)] = n
    return counts


def _counter(metrics: _Metrics, key: tuple[str, str]) -> Counter:
    name, label = key
    counter: Counter = getattr(metrics, name)
    return counter.labels(label) if label else counter


def _follower_read_at(dispatcher: TenantDispatcher) -> float | None:
    follower = dispatcher.registry.feed.follower
    if follower is None or not follower.running:
        return None
    return follower.read_at


def metrics_app(
    metrics: DispatcherMetrics | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> WSGIApplication:
    """A WSGI app answering ``GET`` (and ``HEAD``) with the metrics; 405 otherwise.

    Syncs ``metrics`` first, so this process's counts are current. With
    ``PROMETHEUS_MULTIPROC_DIR`` set it serves every process's files (a
    registry per scrape, as ``prometheus_client`` advises), else ``registry``
    (default: the one ``metrics`` registers in, else ``REGISTRY``). Mount it
    only where tenants' visitors cannot reach it.
    """
    own = registry or (metrics.registry if metrics is not None else REGISTRY)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response(
                "405 Method Not Allowed",
                [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")],
            )
            return [f"{method} is not allowed here: use GET or HEAD\n".encode()]
        if metrics is not None:
            metrics.sync()
        served = own
        if os.environ.get(MULTIPROC_DIR_VARIABLE):
            served = CollectorRegistry()
            MultiProcessCollector(served)  # type: ignore[no-untyped-call]
        body: list[bytes] = make_wsgi_app(served)(
            {**environ, "REQUEST_METHOD": "GET"}, start_response
        )
        return [] if method == "HEAD" else body

    return app

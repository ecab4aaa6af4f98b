"""Benchmarks of the dispatcher, measured side by side in one run.

    python scripts/bench.py            # the full run whose table is in the README
    python scripts/bench.py --quick    # smaller counts, a smoke test
    python scripts/bench.py --only 9 10 11   # just these rows (tenant data)
    python scripts/bench.py --only 12 13 14 15 16 17   # issue 12's rows
    python scripts/bench.py --only 18  # fleet upgrades (PostgreSQL; bench_fleet.py)
    python scripts/bench.py --only 19  # the hit path with metrics off and on
    DISPATCHER_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python scripts/bench.py        # adds the PostgreSQL rows

The baseline is Flask's documented ``SubdomainDispatcher`` (a dict of apps
under one lock); werkzeug's ``DispatcherMiddleware`` is shown beside it. Rows 9
to 11 (tenant data) hold ``TenantData`` against the obvious code: an engine per
tenant app, a plain scoped session, replaying every migration at signup. Row 9
on PostgreSQL opens connections until the server refuses more: run it on a
server nothing else needs at that moment. Rows 12 to 17 (issue 12) put more
tenants than ``max_apps`` through the dispatcher, each contender in a process
of its own (``bench_churn.py``) beside today's code (the tree of commit
``BEFORE_SCALING``): traces from ``traces.py``, the hit ratio against Belady's
optimum, the realistic app of ``realistic_app.py``, the shared-app mode
against django-tenants' per-request queries, and under gunicorn + wrk
(``bench_server.py``, also runnable alone). Row 18 (issue 13, PostgreSQL)
upgrades the data of 1,000 tenant schemas with ``tenantctl data upgrade``
against a hand-written loop of plain Alembic (``bench_fleet.py``). Row 19
(issue 14) serves hits with Prometheus metrics off and on, interleaved, in a
process of its own (``bench_metrics.py``). Every
figure is printed with the target it is held to; nothing here is a test.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from threading import Lock
from typing import Any

from bench_apps import SubdomainDispatcher, hello_flask
from flask import Flask
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import EnvironBuilder

from dispatcher import CachePolicy, TenantDispatcher, TenantRegistry
from dispatcher.data import TenantData, schema_name
from dispatcher.provisioning import Provisioner
from dispatcher.tenant import Tenant

App = Callable[[dict[str, Any], Any], Iterable[bytes]]


# -- the baselines -------------------------------------------------------------

# SubdomainDispatcher (Flask's documentation pattern) and hello_flask live in
# bench_apps.py, which gunicorn also loads for rows 16 and 17.


def trivial_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    return None


def _request(app: App, environ: dict[str, Any]) -> None:
    """What a server does: call, drain the body, close it."""
    body = app(dict(environ), _start_response)
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _per_call(app: App, environ: dict[str, Any], n: int, rounds: int) -> float:
    """Best-of-``rounds`` seconds per request."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            _request(app, environ)
        best = min(best, (time.perf_counter() - start) / n)
    return best


# -- helpers -------------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def environ_for(host: str, path: str = "/") -> dict[str, Any]:
    return EnvironBuilder(path=path, headers={"Host": host}).get_environ()


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def registry_with(url: str, count: int, prefix: str = "t") -> TenantRegistry:
    registry = TenantRegistry(url)
    registry.migrate()
    specs = (
        registry.new_tenant(
            f"{prefix}{i}",
            owner_email=f"o{i % 100}@bench.test",
            subdomain=f"{prefix}{i}",
        )
        for i in range(count)
    )
    for _ in registry.import_tenants(specs, batch_size=1000):
        pass
    return registry


class QueryCounter:
    def __init__(self, registry: TenantRegistry) -> None:
        self.count = 0
        event.listen(registry.engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.count += 1


# -- 1. hit overhead -----------------------------------------------------------


def bench_hit_overhead(url: str, n: int, rounds: int) -> list[tuple[str, str, str]]:
    registry = registry_with(url, 1, prefix="acme")
    ours = TenantDispatcher(registry, lambda t: trivial_app, base_domain="example.com")
    docs = SubdomainDispatcher("example.com", lambda sub: trivial_app)
    werkzeug = DispatcherMiddleware(trivial_app, {"/acme0": trivial_app})
    host_environ = environ_for("acme0.example.com")
    path_environ = environ_for("example.com", "/acme0/")
    for app, environ in ((ours, host_environ), (docs, host_environ)):
        _request(app, environ)  # build once: this measures hits
    times: dict[str, list[float]] = {
        "direct": [],
        "docs": [],
        "werkzeug": [],
        "ours": [],
    }
    for _ in range(rounds):  # interleaved, so drift hits every contender alike
        times["direct"].append(_per_call(trivial_app, host_environ, n, 1))
        times["docs"].append(_per_call(docs, host_environ, n, 1))
        times["werkzeug"].append(_per_call(werkzeug, path_environ, n, 1))
        times["ours"].append(_per_call(ours, host_environ, n, 1))
    best = {name: min(values) for name, values in times.items()}
    docs_over = best["docs"] - best["direct"]
    rows = []
    for name, label in (
        ("docs", "SubdomainDispatcher (Flask docs; baseline)"),
        ("werkzeug", "werkzeug DispatcherMiddleware (by path)"),
        ("ours", "TenantDispatcher (validated host, LRU/TTL, versions)"),
    ):
        over = best[name] - best["direct"]
        rows.append(
            (
                f"1. hit overhead: {label}",
                f"{over * 1e6:.2f} µs",
                f"{over / docs_over:.2f}× baseline",
            )
        )
    rows[-1] = (*rows[-1][:2], rows[-1][2] + " (target ≤ 2×)")
    return rows


#: The last commit before the restructuring into resolvers, a change feed and a
#: cache policy (issue 10): its hit path is the one ours must not be slower than.
BEFORE_RESTRUCTURING = "166ce8e"

# Run in a child process per version, so two versions of the package can be
# measured in one run; it uses only names both versions have.
_HIT_CHILD = """
import sys, tempfile, time
from dispatcher import TenantDispatcher, TenantRegistry
from werkzeug.test import EnvironBuilder

n = int(sys.argv[1])
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
def start_response(status, headers, exc_info=None):
    return None
def request(target, environ):
    body = target(dict(environ), start_response)
    for _ in body:
        pass
    getattr(body, "close", lambda: None)()
def per_call(target, environ):
    start = time.perf_counter()
    for _ in range(n):
        request(target, environ)
    return (time.perf_counter() - start) / n
with tempfile.TemporaryDirectory() as tmp:
    registry = TenantRegistry(f"sqlite:///{tmp}/hit.sqlite3")
    registry.migrate()
    registry.create_tenant(
        "acme", owner_email="o@acme.test", subdomain="acme", path_prefix="acme"
    )
    ours = TenantDispatcher(
        registry, lambda tenant: app, base_domain="example.com", path_routing=True
    )
    host = EnvironBuilder(path="/", headers={"Host": "acme.example.com"}).get_environ()
    path = EnvironBuilder(path="/acme/", headers={"Host": "example.com"}).get_environ()
    for environ in (host, path):
        request(ours, environ)
    direct = per_call(app, host)
    print(per_call(ours, host) - direct, per_call(ours, path) - per_call(app, path))
    ours.close()
    registry.close()
"""


def _baseline_tree(revision: str, into: Path) -> Path | None:
    """The package as it was at ``revision``, or None without git history."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", revision],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _hit_child(pythonpath: Path, n: int) -> tuple[float, float]:
    result = subprocess.run(
        [sys.executable, "-c", _HIT_CHILD, str(n)],
        env={**os.environ, "PYTHONPATH": str(pythonpath)},
        cwd=pythonpath,
        capture_output=True,
        text=True,
        check=True,
    )
    host, path = result.stdout.split()
    return float(host), float(path)


def bench_hit_against_before(n: int, rounds: int) -> list[tuple[str, str, str]]:
    """The hit path now and before the restructuring, interleaved child runs."""
    label = (
        f"1b. hit overhead against before the restructuring ({BEFORE_RESTRUCTURING})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        before = _baseline_tree(BEFORE_RESTRUCTURING, Path(tmp) / "before")
        if before is None:
            return [(label, "not measured", "needs the git history")]
        now = Path(__file__).resolve().parent.parent
        runs: dict[Path, list[tuple[float, float]]] = {before: [], now: []}
        for _ in range(rounds):
            for tree in runs:
                runs[tree].append(_hit_child(tree, n))
    rows = []
    for index, route in ((0, "host"), (1, "path")):
        old = min(run[index] for run in runs[before])
        new = min(run[index] for run in runs[now])
        rows.append(
            (
                f"{label}: by {route}",
                f"{new * 1e6:.2f} µs (before: {old * 1e6:.2f} µs)",
                f"{new / old:.2f}× before (target ≤ 1.0×, within noise)",
            )
        )
    return rows


# -- 2. Flask hello world ------------------------------------------------------


def bench_flask_ratio(url: str, n: int, rounds: int) -> list[tuple[str, str, str]]:
    registry = registry_with(url, 1, prefix="hello")
    direct = hello_flask()
    ours = TenantDispatcher(registry, hello_flask, base_domain="example.com")
    environ = environ_for("hello0.example.com")
    _request(ours, environ)
    direct_times, ours_times = [], []
    for _ in range(rounds):
        direct_times.append(_per_call(direct, environ, n, 1))
        ours_times.append(_per_call(ours, environ, n, 1))
    direct_rps, ours_rps = 1 / min(direct_times), 1 / min(ours_times)
    return [
        ("2. Flask hello world called directly", f"{direct_rps:,.0f} req/s", ""),
        (
            "2. Flask hello world through TenantDispatcher",
            f"{ours_rps:,.0f} req/s",
            f"{ours_rps / direct_rps:.3f} of direct (target ≥ 0.95)",
        ),
    ]


# -- 3. cold path --------------------------------------------------------------


def bench_cold(url: str, label: str, count: int) -> list[tuple[str, str, str]]:
    registry = registry_with(url, count, prefix="cold")
    lookups, builds = [], []
    for i in range(count):
        start = time.perf_counter()
        tenant = registry.find_by_subdomain(f"cold{i}")
        middle = time.perf_counter()
        assert tenant is not None
        hello_flask(tenant)
        end = time.perf_counter()
        lookups.append(middle - start)
        builds.append(end - middle)
    registry.close()
    return [
        (
            f"3. cold path on {label}: registry lookup",
            f"p50 {statistics.median(lookups) * 1e3:.3f} ms",
            f"p99 {percentile(lookups, 0.99) * 1e3:.3f} ms (target p50 < 1 ms)",
        ),
        (
            f"3. cold path on {label}: create_app (hello-world Flask)",
            f"p50 {statistics.median(builds) * 1e3:.3f} ms",
            f"p99 {percentile(builds, 0.99) * 1e3:.3f} ms",
        ),
    ]


# -- 4. memory (each contender in its own process) -----------------------------


def memory_child(kind: str, url: str, tenants: int, max_apps: int) -> str:
    registry = TenantRegistry(url)
    if kind == "ours":
        app: App = TenantDispatcher(
            registry,
            hello_flask,
            base_domain="example.com",
            policy=CachePolicy(max_apps=max_apps),
        )
    else:
        app = SubdomainDispatcher("example.com", lambda sub: hello_flask())
    # Warm-up: the first tenth of the tenants (ten times max_apps), so the
    # interpreter's and allocator's own caches have settled before the
    # measure; RSS after the first max_apps tenants is printed too.
    warm = tenants // 10
    rss = {}
    for i in range(tenants):
        _request(app, environ_for(f"mem{i}.example.com"))
        if i + 1 in (max_apps, warm, tenants):
            gc.collect()
            rss[i + 1] = rss_mib()
    start_rss, warm_rss, end_rss = rss[max_apps], rss[warm], rss[tenants]
    live = (
        len(app.instances) if isinstance(app, SubdomainDispatcher) else app.stats().apps
    )
    return f"{start_rss:.1f} {warm_rss:.1f} {end_rss:.1f} {live}"


def bench_memory(url: str, tenants: int, max_apps: int) -> list[tuple[str, str, str]]:
    registry_with(url, tenants, prefix="mem").close()
    rows = []
    for kind, label in (("docs", "SubdomainDispatcher"), ("ours", "TenantDispatcher")):
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                kind,
                url,
                str(tenants),
                str(max_apps),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        start, warm, end = (float(value) for value in output[:3])
        live = int(output[3])
        growth = (end - warm) / warm
        note = (
            "target: flat within 10%" if kind == "ours" else "grows with every tenant"
        )
        rows.append(
            (
                f"4. memory, {tenants:,} tenants once each, {label}"
                + (f" max_apps={max_apps}" if kind == "ours" else ""),
                f"RSS {start:.0f} / {warm:.0f} → {end:.0f} MiB ({growth:+.0%}), "
                f"{live:,} live apps",
                note,
            )
        )
    return rows


# -- 5. flood of unknown hosts -------------------------------------------------


def bench_flood(url: str, hosts: int) -> list[tuple[str, str, str]]:
    registry = registry_with(url, 10, prefix="known")
    dispatcher = TenantDispatcher(
        registry,
        hello_flask,
        base_domain="example.com",
        policy=CachePolicy(negative_size=10_000),
    )
    known = [environ_for(f"known{i}.example.com") for i in range(10)]

    def known_latencies(samples: int) -> list[float]:
        latencies = []
        for i in range(samples):
            start = time.perf_counter()
            _request(dispatcher, known[i % len(known)])
            latencies.append(time.perf_counter() - start)
        return latencies

    known_latencies(100)  # build them
    before = known_latencies(2000)
    gc.collect()
    rss_before = rss_mib()
    queries = QueryCounter(registry)
    hits_before = dispatcher.stats().hits
    during: list[float] = []
    for i in range(hosts):
        _request(dispatcher, environ_for(f"u{i}.example.com"))
        if i % 50 == 0:
            during.extend(known_latencies(1))
    gc.collect()
    rss_after = rss_mib()
    stats = dispatcher.stats()
    known_hits = stats.hits - hits_before
    return [
        (
            f"5. flood of {hosts:,} distinct unknown hosts",
            f"{queries.count:,} queries, RSS {rss_before:.0f} → {rss_after:.0f} MiB",
            f"{stats.negative_entries:,} negative entries (bound 10,000); "
            f"{stats.apps} known apps still cached",
        ),
        (
            "5. known tenant latency before → during the flood",
            f"p50 {us(statistics.median(before))} → {us(statistics.median(during))} µs",
            f"p99 {us(percentile(before, 0.99))} → {us(percentile(during, 0.99))} µs; "
            f"{known_hits} of {len(during)} were cache hits",
        ),
    ]


# -- 6. cross-process invalidation ---------------------------------------------


def probe_app(tenant: Any) -> App:
    """Tenant app for the gunicorn runs: answers ``<pid> <version>``."""
    body = f"{os.getpid()} {tenant.version}".encode()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


def _http(port: int, host: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", "/", skip_host=True)
        connection.putheader("Host", host)
        connection.putheader("Connection", "close")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bench_invalidation(
    url: str, label: str, changes: int, workers: int = 4
) -> list[tuple[str, str, str]]:
    """Commit → the last worker's first response built from the new version."""
    registry = registry_with(url, 1, prefix="inv")
    host = "inv0.example.com"
    latencies: list[float] = []
    options = ["-w", str(workers)]
    follow = {"DISPATCHER_POLL_INTERVAL": "1"}
    try:
        with gunicorn(url, "bench:probe_app", host, options, **follow) as port:
            pids: set[str] = set()
            for _ in range(400):  # every worker builds the app and starts following
                pids.add(_http(port, host)[1].split()[0])
                if len(pids) == workers and _ > 100:
                    break
            for i in range(changes):
                version = registry.update_config("inv0", {"n": i}).version
                committed = time.perf_counter()
                fresh: dict[str, float] = {}
                while len(fresh) < workers and time.perf_counter() - committed < 10:
                    status, body = _http(port, host)
                    pid, seen = body.split()
                    if int(seen) >= version and pid not in fresh:
                        fresh[pid] = time.perf_counter() - committed
                latencies.append(max(fresh.values()))
                time.sleep(0.3)  # let the workers settle between changes
    finally:
        registry.close()
    return [
        (
            f"6. invalidation, {label}, {workers} gunicorn workers",
            f"p50 {statistics.median(latencies) * 1e3:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1e3:.0f} ms",
            "commit → last worker's first fresh response",
        )
    ]


def bench_poll_cost(url: str, label: str, tenants: int) -> list[tuple[str, str, str]]:
    registry = registry_with(url, tenants, prefix="many")
    newest = registry.latest_generation()
    times = []
    for _ in range(200):
        start = time.perf_counter()
        registry.changes_since(newest)
        times.append(time.perf_counter() - start)
    registry.close()
    return [
        (
            f"6. one poll of the change feed, {label}, {tenants:,} tenants",
            f"p50 {statistics.median(times) * 1e3:.3f} ms",
            f"p99 {percentile(times, 0.99) * 1e3:.3f} ms",
        )
    ]


def _healthy_latencies(port: int, host: str, duration: float) -> list[float]:
    times = []
    stop = time.monotonic() + duration
    while time.monotonic() < stop:
        start = time.perf_counter()
        status, _ = _http(port, host)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"the healthy tenant answered {status}")
    return times


def bench_hung_tenant(
    url: str, duration: float, clients: int = 8
) -> list[tuple[str, str, str]]:
    """A healthy tenant's latency alone, then while a hung tenant is hammered.

    gunicorn ``-k gthread --threads 4 -w 2``; the hung tenant's ``create_app``
    never returns (``scripts/hung_tenant_app.py``). ``clients`` threads send it
    requests back to back while one client measures the healthy tenant.
    """
    registry = TenantRegistry(url)
    registry.migrate()
    for slug in ("healthy", "hung"):
        registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)
    registry.close()
    options = ["-k", "gthread", "--threads", "4", "-w", "2", "--graceful-timeout", "1"]
    healthy = "healthy.example.com"
    stop = threading.Event()
    answers: list[int] = []

    def hammer() -> None:
        while not stop.is_set():
            try:
                answers.append(_http(port, "hung.example.com")[0])
            except OSError:
                answers.append(0)  # timed out: a request stuck behind the build

    factory = "hung_tenant_app:create_app"
    with gunicorn(url, factory, healthy, options, HUNG_TENANT_SLUGS="hung") as port:
        _healthy_latencies(port, healthy, 1.0)  # warm both workers
        alone = _healthy_latencies(port, healthy, duration)
        hammers = [threading.Thread(target=hammer) for _ in range(clients)]
        for thread in hammers:
            thread.start()
        try:
            during = _healthy_latencies(port, healthy, duration)
        finally:
            stop.set()
            for thread in hammers:
                thread.join(timeout=15)
    fast_503 = sum(1 for status in answers if status == 503)

    def figures(times: list[float]) -> str:
        p50, p99 = statistics.median(times) * 1e3, percentile(times, 0.99) * 1e3
        return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"

    p99_ratio = percentile(during, 0.99) / percentile(alone, 0.99)
    return [
        (
            "7. healthy tenant alone, gthread 2×4",
            figures(alone),
            f"{len(alone):,} requests",
        ),
        (
            f"7. healthy tenant while {clients} clients hammer a hung tenant",
            figures(during),
            f"p99 {p99_ratio:.1f}× alone; hung tenant: {fast_503:,} of "
            f"{len(answers):,} answered 503 (was: healthy p99 ≈ build_timeout, 30 s)",
        ),
    ]


@contextmanager
def gunicorn(
    url: str, factory: str, host: str, options: list[str], **env: str
) -> Iterator[int]:
    """gunicorn serving ``dispatcher.wsgi`` with ``factory``; yields its port
    once ``host`` answers, and stops it afterwards."""
    port = _free_port()
    environ = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": url,
        "DISPATCHER_BASE_DOMAIN": "example.com",
        "DISPATCHER_APP_FACTORY": factory,
        "PYTHONPATH": str(Path(__file__).parent),
        **env,
    }
    command = [sys.executable, "-m", "gunicorn", *options]
    command += ["--bind", f"127.0.0.1:{port}", "--no-control-socket"]
    server = subprocess.Popen(
        [*command, "dispatcher.wsgi:application"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _http(port, host)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_signup_cost(url: str, hosts: int) -> list[tuple[str, str, str]]:
    """Registry queries a process makes after one signup, with ``hosts`` active.

    The signup is written by another registry object (another process, as far
    as this one knows); this process hears it through its change follower and
    then serves every active host once more. Ideal: no query but the new
    tenant's own lookup.
    """
    registry = registry_with(url, hosts, prefix="act")
    dispatcher = TenantDispatcher(
        registry,
        lambda tenant: trivial_app,
        base_domain="example.com",
        # The follower is polled below, not on a timer.
        policy=CachePolicy(poll_interval=3600),
    )
    environs = [environ_for(f"act{i}.example.com") for i in range(hosts)]
    for environ in environs:
        _request(dispatcher, dict(environ))
    lookups = 0

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal lookups
        # Tenant lookups only; the follower's polls read tenant_changes.
        if "tenant_changes" not in statement:
            lookups += 1

    writer = TenantRegistry(url)
    follower = registry.feed.follow(3600)
    try:
        event.listen(registry.engine, "before_cursor_execute", count)
        writer.create_tenant(
            "newcomer", owner_email="owner@newcomer.test", subdomain="newcomer"
        )
        follower.poll()
        for environ in environs:
            _request(dispatcher, dict(environ))
        _request(dispatcher, environ_for("newcomer.example.com"))
        event.remove(registry.engine, "before_cursor_execute", count)
    finally:
        writer.close()
        dispatcher.close()
        registry.close()
    return [
        (
            f"8. registry queries after one signup, {hosts:,} active hosts",
            f"{lookups:,} queries",
            "ideal 1 (the new tenant's own lookup); was one per active host",
        )
    ]


# -- 9-11. tenant data ----------------------------------------------------------


def items_metadata() -> tuple[MetaData, Table]:
    """The one table of rows 9 and 10."""
    metadata = MetaData()
    items = Table(
        "items",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("title", String(100), nullable=False),
    )
    return metadata, items


def _status(app: App, environ: dict[str, Any]) -> str:
    """A request as in ``_request``; its status line."""
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    body = app(dict(environ), start_response)
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return statuses[-1]


@contextmanager
def sampling(measure: Callable[[], int]) -> Iterator[list[int]]:
    """Samples of ``measure()`` taken back to back in a thread while inside."""
    samples: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append(measure())
            stop.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield samples
    finally:
        stop.set()
        watcher.join()
    samples.append(measure())


def serve_in_turn(
    app: App, hosts: list[str], threads: int
) -> tuple[int, BaseException | None]:
    """Each host once, in order, from ``threads`` threads; stops at the first
    failure. Returns how many were served, and the failure."""
    lock = threading.Lock()
    queue = iter(hosts)
    served = 0
    failure: list[BaseException] = []

    def serve() -> None:
        nonlocal served
        while not failure:
            with lock:
                host = next(queue, None)
            if host is None:
                return
            try:
                status = _status(app, environ_for(host))
                if status != "200 OK":
                    raise RuntimeError(f"{host} answered {status}")
            except Exception as error:  # noqa: BLE001 - the figure reported
                failure.append(error)
                return
            with lock:
                served += 1

    workers = [threading.Thread(target=serve) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return served, (failure[0] if failure else None)


#: CPython 3.11 before 3.11.8 (and 3.12 before 3.12.2) may raise SystemError
#: from ast.parse in several threads at once (gh-106905); werkzeug parses to
#: compile each Flask app's URL rules, so these rows build apps one at a time.
_building = Lock()


def count_app(source: Any, tenant: Any, items: Table) -> Flask:
    """A tenant app answering how many items its tenant has.

    ``source`` is a :class:`TenantData` (the app uses ``data.session``), or
    a function giving the tenant's engine: the obvious code, an engine made
    in ``create_app`` and a plain scoped session on it.
    """
    with _building:
        app = Flask(f"tenant_{tenant.slug}")
    app.config["PROPAGATE_EXCEPTIONS"] = True  # the failure is the figure
    if isinstance(source, TenantData):
        data = source
        data.init_app(app, tenant)

        def session() -> Session:
            return data.session

    else:
        engine = source(tenant)
        scoped = scoped_session(sessionmaker(bind=engine))

        @app.teardown_appcontext
        def remove(_error: BaseException | None) -> None:
            scoped.remove()

        def session() -> Session:
            return scoped()

    with _building:

        @app.route("/")
        def index() -> str:
            return str(session().scalar(select(func.count()).select_from(items)))

    return app


def counting_apps(source: Any, items: Table) -> Callable[[Tenant], Flask]:
    """``create_app`` of :func:`count_app` apps on ``source``."""

    def create_app(tenant: Tenant) -> Flask:
        return count_app(source, tenant, items)

    return create_app


@contextmanager
def postgres_database(base: str) -> Iterator[str]:
    """A database of its own on the server; dropped, with its connections, after."""
    name = f"bench_data_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def gone(held: Callable[[], int], within: float = 5.0) -> int:
    """Connections still held once closed ones have left the server (a
    backend leaves pg_stat_activity shortly after its client hangs up)."""
    deadline = time.monotonic() + within
    while (left := held()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def bench_connections(
    url: str, tenants: int, threads: int = 8
) -> list[tuple[str, str, str]]:
    """PostgreSQL connections of one process serving ``tenants`` in turn.

    Ours: one :class:`TenantData` (pool 5 + overflow 5). The baseline: the
    obvious code, ``create_engine`` in ``create_app``, served until the server
    refuses (``max_connections``) or every tenant has been served.
    """
    registry = registry_with(url, tenants, prefix="conn")
    listed = registry.list_tenants()
    hosts = [f"{tenant.subdomain}.example.com" for tenant in listed]
    metadata, items = items_metadata()
    # Each contender's connections carry a name of their own, to be counted.
    tag = f"bench_{uuid.uuid4().hex[:10]}"
    ours_name, their_name = f"{tag}_ours", f"{tag}_theirs"
    ours_url = make_url(url).update_query_dict({"application_name": ours_name})
    their_url = make_url(url).update_query_dict({"application_name": their_name})
    data = TenantData(ours_url, metadata=metadata, pool_size=5, max_overflow=5)
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(data.create, listed))
    created = time.perf_counter() - start
    data.dispose()  # its connections would count against the baseline's room
    monitor = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    count = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a")
    engines: list[Any] = []

    def engine_per_app(tenant: Any) -> Any:
        engine = create_engine(
            their_url,
            execution_options={"schema_translate_map": {None: schema_name(tenant)}},
        )
        engines.append(engine)
        return engine

    policy = CachePolicy(max_apps=tenants, poll_interval=None)
    results = {}
    with monitor.connect() as watch:
        max_connections = int(watch.scalar(text("SHOW max_connections")) or 0)
        for kind, source, name in (
            ("theirs", engine_per_app, their_name),
            ("ours", data, ours_name),
        ):

            def held(name: str = name) -> int:
                return int(watch.scalar(count, {"a": name}) or 0)

            dispatcher = TenantDispatcher(
                registry,
                counting_apps(source, items),
                base_domain="example.com",
                policy=policy,
            )
            with sampling(held) as samples:
                served, failure = serve_in_turn(dispatcher, hosts, threads)
            dispatcher.close()
            for engine in engines:
                engine.dispose()
            data.dispose()
            results[kind] = (served, failure, max(samples), gone(held))
    monitor.dispose()
    registry.close()

    def failed(failure: BaseException | None) -> str:
        if failure is None:
            return "none failed"
        # psycopg's message: "connection ... failed: FATAL:  sorry, too many ..."
        reason = str(getattr(failure, "orig", failure)).split("FATAL:")[-1]
        return f"then failed: {reason.strip().splitlines()[0]}"

    label = (
        f"9. PostgreSQL connections, one process serving {tenants:,} tenants"
        f" in turn ({threads} threads)"
    )
    their_served, their_failure, their_max, their_left = results["theirs"]
    served, failure, most, left = results["ours"]
    return [
        (
            f"{label}: an engine per tenant app (baseline)",
            f"{their_max:,} held; {their_served:,} of {tenants:,} tenants served,"
            f" {failed(their_failure)}",
            f"max_connections {max_connections}; {their_left} left after dispose",
        ),
        (
            f"{label}: TenantData, one pool (bound {data.bound})",
            f"{most:,} held at most; {served:,} of {tenants:,} tenants served,"
            f" {failed(failure)}",
            f"{most / max(their_max, 1):.2f}× baseline's connections;"
            f" {left} left after dispose; {tenants:,} schemas created in"
            f" {created:.1f} s",
        ),
    ]


def bench_open_files(
    directory: Path, registry_url: str, tenants: int, threads: int = 8
) -> list[tuple[str, str, str]]:
    """Open files of one process serving ``tenants`` SQLite tenants in turn,
    every app cached (``max_apps`` = tenants)."""
    registry = registry_with(registry_url, tenants, prefix="files")
    listed = registry.list_tenants()
    hosts = [f"{tenant.subdomain}.example.com" for tenant in listed]
    metadata, items = items_metadata()
    data = TenantData("sqlite://", metadata=metadata, directory=directory)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(data.create, listed))
    prefix = str(directory.resolve()) + os.sep
    engines: list[Any] = []

    def engine_per_app(tenant: Any) -> Any:
        path = directory / f"{schema_name(tenant)}.sqlite3"
        engine = create_engine(f"sqlite:///{path}")
        engines.append(engine)
        return engine

    def held() -> int:
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                found += os.readlink(f"/proc/self/fd/{fd}").startswith(prefix)
            except FileNotFoundError:
                pass
        return found

    policy = CachePolicy(max_apps=tenants, poll_interval=None)
    results = {}
    for kind, source in (("theirs", engine_per_app), ("ours", data)):
        dispatcher = TenantDispatcher(
            registry,
            counting_apps(source, items),
            base_domain="example.com",
            policy=policy,
        )
        with sampling(held) as samples:
            served, failure = serve_in_turn(dispatcher, hosts, threads)
        if failure is not None:
            raise failure
        results[kind] = (max(samples), samples[-1])
        dispatcher.close()
        for engine in engines:
            engine.dispose()
        data.dispose()
    registry.close()
    label = (
        f"9. SQLite open tenant files, one process serving {tenants:,} tenants"
        f" in turn ({threads} threads, every app cached)"
    )
    return [
        (
            f"{label}: an engine per tenant app (baseline)",
            f"{results['theirs'][1]:,} held after, at most {results['theirs'][0]:,}",
            "one pooled connection per cached app",
        ),
        (
            f"{label}: TenantData",
            f"{results['ours'][1]:,} held after, at most {results['ours'][0]:,}",
            "files open only while a request uses them",
        ),
    ]


def bench_session_overhead(
    registry_url: str, location: dict[str, Any], label: str, n: int, rounds: int
) -> list[tuple[str, str, str]]:
    """One query per request: through ``data.session`` (the tenant's schema by
    ``schema_translate_map``) against a plain Flask app with a plain scoped
    session on the same table. Each app is called directly."""
    registry = registry_with(registry_url, 1, prefix="overhead")
    tenant = registry.list_tenants()[0]
    registry.close()
    metadata, items = items_metadata()
    data = TenantData(metadata=metadata, **location)
    data.create(tenant)
    with data.engine_for(tenant).begin() as connection:
        connection.execute(items.insert(), [{"title": f"item {i}"} for i in range(10)])
    name = schema_name(tenant)
    if data.directory is None:
        # search_path: the same table as data.session's, named without a schema.
        plain_url = data.url.update_query_dict({"options": f"-csearch_path={name}"})
        engine = create_engine(plain_url)
        ours_label = "data.session, the tenant's schema by translate map"
        why = "; its pool pings each checkout and psycopg prepares nothing"
    else:
        engine = create_engine(f"sqlite:///{data.directory / name}.sqlite3")
        ours_label = "data.session, the tenant's file"
        why = "; a new SQLite connection per session (NullPool)"
    ours = count_app(data, tenant, items)
    plain = count_app(lambda _tenant: engine, tenant, items)
    environ = environ_for("overhead0.example.com")
    for app in (ours, plain):
        if _status(app, environ) != "200 OK":
            raise RuntimeError(f"{label}: the app did not answer 200")
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    for _ in range(rounds):  # interleaved, as for the hit overhead
        times["plain"].append(_per_call(plain, environ, n, 1))
        times["ours"].append(_per_call(ours, environ, n, 1))
    best = {kind: min(values) for kind, values in times.items()}
    engine.dispose()
    data.dispose()
    what = f"10. one query per request on {label}"
    return [
        (
            f"{what}: plain Flask app, plain scoped session (baseline)",
            f"{us(best['plain'])} µs/request",
            "",
        ),
        (
            f"{what}: {ours_label}",
            f"{us(best['ours'])} µs/request",
            f"{best['ours'] / best['plain']:.2f}× baseline"
            f" (+{us(best['ours'] - best['plain'])} µs{why})",
        ),
    ]


#: Row 11's tenant schema: 20 tables, each created by a revision of its own.
PROVISIONING_TABLES = 20

_ENV_PY = """from dispatcher.data_migrations import run_migrations

run_migrations()
"""

_REVISION = '''"""Table {table}."""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "{table}",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_{table}_name", "{table}", ["name"])
'''


def provisioning_schema(directory: Path) -> tuple[MetaData, Table]:
    """The 20-table metadata, and its migrations (a revision per table) written
    to ``directory``; also the first table, which the first page reads."""
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(_ENV_PY)
    metadata = MetaData()
    down = None
    for number in range(1, PROVISIONING_TABLES + 1):
        table, revision = f"table_{number:02}", f"{number:04}"
        Table(
            table,
            metadata,
            Column("id", Integer, primary_key=True),
            Column("name", String(100), nullable=False),
            Column("created_at", DateTime, nullable=True),
            Index(f"ix_{table}_name", "name"),
        )
        source = _REVISION.format(table=table, revision=revision, down=down)
        (directory / "versions" / f"{revision}_{table}.py").write_text(source)
        down = revision
    return metadata, metadata.tables["table_01"]


def bench_provisioning(
    registry_url: str,
    location: dict[str, Any],
    label: str,
    samples: int,
    workdir: Path,
) -> list[tuple[str, str, str]]:
    """Signup (:class:`Provisioner`) to the first page served by the dispatcher.

    Ours: ``data.create`` creates the 20 tables from the metadata and stamps
    the migration head. The baseline replays the 20 migrations one by one
    into the new schema (or file). Alternated, after one of each to warm up.
    """
    from dispatcher.data_migrations import TenantMigrations  # Alembic: only here

    migrations_dir = workdir / "tenant_migrations"
    metadata, first = provisioning_schema(migrations_dir)
    migrations = TenantMigrations(migrations_dir)
    registry = TenantRegistry(registry_url)
    registry.migrate()
    stamped = TenantData(metadata=metadata, migrations=migrations_dir, **location)
    replayed = TenantData(metadata=metadata, **location)

    def replay(tenant: Tenant) -> None:
        name = schema_name(tenant)
        if replayed.directory is not None:
            replayed.directory.mkdir(parents=True, exist_ok=True)
            (replayed.directory / f"{name}.sqlite3").touch(exist_ok=False)
            with replayed.engine_for(tenant).begin() as connection:
                migrations.upgrade(connection, None)
            return
        with replayed.engine_for(tenant).begin() as connection:
            connection.execute(CreateSchema(name))
            migrations.upgrade(connection, name)

    contenders = {
        kind: (
            Provisioner(registry, on_create=[hook]),
            TenantDispatcher(
                registry,
                counting_apps(data, first),
                base_domain="example.com",
                policy=CachePolicy(poll_interval=None),
            ),
        )
        for kind, hook, data in (
            ("replay", replay, replayed),
            ("ours", stamped.create, stamped),
        )
    }
    times: dict[str, list[float]] = {kind: [] for kind in contenders}
    for i in range(samples + 1):
        for kind, (provisioner, dispatcher) in contenders.items():
            slug = f"{kind}{i}"
            start = time.perf_counter()
            provisioner.create(slug, owner_email=f"o@{slug}.test", subdomain=slug)
            status = _status(dispatcher, environ_for(f"{slug}.example.com"))
            elapsed = time.perf_counter() - start
            if status != "200 OK":
                raise RuntimeError(f"{label}: {slug}'s first page answered {status}")
            if i:  # the first of each warms up
                times[kind].append(elapsed)
    for _provisioner, dispatcher in contenders.values():
        dispatcher.close()
    stamped.dispose()
    replayed.dispose()
    registry.close()

    def figures(kind: str) -> str:
        p50 = statistics.median(times[kind]) * 1e3
        return f"p50 {p50:.1f} ms, p99 {percentile(times[kind], 0.99) * 1e3:.1f} ms"

    ratio = statistics.median(times["ours"]) / statistics.median(times["replay"])
    target = " (target p50 < 150 ms)" if location.get("directory") is None else ""
    what = f"11. signup to first page, {PROVISIONING_TABLES}-table schema, {label}"
    return [
        (
            f"{what}: replaying {PROVISIONING_TABLES} migrations (baseline)",
            figures("replay"),
            f"{samples} signups each",
        ),
        (
            f"{what}: data.create (tables from the models, head stamped)",
            figures("ours"),
            f"p50 {ratio:.2f}× baseline{target}",
        ),
    ]


# -- 12-17. tenants outnumbering the cache, shared apps (issue 12) -------------

#: "Today's code" of rows 12 and 14: the tree before issue 12's work began.
BEFORE_SCALING = "df73979"

#: Traces of rows 12 and 14 (scripts/traces.py names them).
CHURN_TRACES = ("uniform", "zipf-0.8", "zipf-1.2", "scan")


def _trace_file(kind: str, tenants: int, length: int, into: Path) -> Path:
    """``traces.generate``'s trace, as tenant numbers for bench_churn.py."""
    import traces  # scripts/traces.py: the shipped Apps class, on import

    path = into / f"trace-{kind}-{tenants}-{length}.bin"
    if not path.exists():
        names = traces.generate(kind, tenants, length, seed=tenants)
        path.write_bytes(array("I", (int(name[1:]) for name in names)).tobytes())
    return path


def _churn_child(
    tree: Path,
    kind: str,
    app: str,
    registry: str,
    tenants: int,
    max_apps: int,
    trace: Path,
    warmup: int,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One contender of rows 12-15 in a process of its own, on ``tree``'s
    package (bench_churn.py prints its figures as JSON), with ``environ``
    added to this process's variables."""
    script = Path(__file__).resolve().parent / "bench_churn.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            kind,
            app,
            registry,
            str(tenants),
            str(max_apps),
            str(trace),
            str(warmup),
        ],
        env={**os.environ, **(environ or {}), "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench_churn.py {kind} {app} failed:\n{result.stderr}")
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def _churn_figures(run: dict[str, Any]) -> str:
    figure = (
        f"{run['rps']:,.0f} req/s, p50 {run['p50'] * 1e3:.2f} ms,"
        f" p99 {run['p99'] * 1e3:.1f} ms"
    )
    if run["hit_ratio"] is not None:
        figure += f", hits {run['hit_ratio']:.0%}"
    figure += (
        f", {run['full_gcs']} full GCs (longest {run['longest_gc'] * 1e3:.0f} ms),"
        f" RSS {run['rss']:.0f} MiB"  # less the bench's own environs
    )
    if run["failed"]:
        figure += f"; {run['failed']:,} answers not 200"
    return figure


def bench_churn(
    row: int,
    app: str,
    populations: list[int],
    kinds: tuple[str, ...],
    max_apps: int,
    warmup: int,
    length: int,
    workdir: Path,
) -> list[tuple[str, str, str]]:
    """Rows 12 and 14: an app per tenant, more tenants than ``max_apps``.

    Each contender in a process of its own, called directly as a server
    would (one thread): the docs pattern with every app built first (on the
    uniform trace; a hit costs it the same on any), today's code (the tree of
    BEFORE_SCALING), the dispatcher now. The first ``warmup`` requests of each
    trace fill the cache unmeasured; full collections are timed in the child.
    """
    now = Path(__file__).resolve().parent.parent
    before = _baseline_tree(BEFORE_SCALING, workdir / f"before-{row}")
    rows = []
    for tenants in populations:
        what = f"{row}. {app} app, {tenants:,} tenants, max_apps {max_apps:,}"

        def registry(tree: str, tenants: int = tenants) -> str:
            return f"sqlite:///{workdir / f'churn-{tree}-{tenants}.sqlite3'}"

        def per_tenant(
            tree: Path,
            name: str,
            trace: Path,
            environ: dict[str, str] | None = None,
            tenants: int = tenants,
        ) -> dict[str, Any]:
            """The dispatcher (of ``tree``) with an app per tenant, on ``trace``."""
            return _churn_child(
                tree,
                "per_tenant",
                app,
                registry(name, tenants),
                tenants,
                max_apps,
                trace,
                warmup,
                environ,
            )

        uniform = _trace_file("uniform", tenants, warmup + length, workdir)
        docs = _churn_child(
            now, "docs", app, registry("now"), tenants, max_apps, uniform, warmup
        )
        rows.append(
            (
                f"{what}: docs pattern, every app cached (baseline)",
                _churn_figures(docs),
                "uniform trace",
            )
        )
        for kind in kinds:
            trace = _trace_file(kind, tenants, warmup + length, workdir)
            today = None
            if before is not None:
                today = per_tenant(before, "before", trace)
                rows.append(
                    (
                        f"{what}, {kind}: today's code ({BEFORE_SCALING})",
                        _churn_figures(today),
                        f"{today['rps'] / docs['rps']:.2f}× docs",
                    )
                )
            ours = per_tenant(now, "now", trace)
            against = f"{ours['rps'] / docs['rps']:.2f}× docs"
            if today is not None:
                against += f", {ours['rps'] / today['rps']:.2f}× today"
            targets = "no pause > 20 ms"
            if kind == "uniform" and tenants == 2 * max_apps:
                targets = "≥ 2× today, " + targets
                # The collector's share alone: the same code, left unmanaged.
                off = per_tenant(now, "now", trace, {"DISPATCHER_GC": "off"})
                rows.append(
                    (
                        f"{what}, {kind}: TenantDispatcher now, DISPATCHER_GC=off",
                        _churn_figures(off),
                        f"{off['rps'] / docs['rps']:.2f}× docs",
                    )
                )
            rows.append(
                (
                    f"{what}, {kind}: TenantDispatcher now",
                    _churn_figures(ours),
                    f"{against} (target {targets})",
                )
            )
    return rows


def bench_hit_ratio(
    populations: list[int], max_apps: int, length: int
) -> list[tuple[str, str, str]]:
    """Row 13: the cache's hit ratio on each trace against Belady's optimum
    (``scripts/traces.py``: the shipped ``Apps`` replayed, LRU without
    admission beside it)."""
    import traces

    rows = []
    for tenants in populations:
        for kind in traces.KINDS:
            trace = traces.generate(kind, tenants, length, seed=tenants)
            shipped = traces.simulate(trace, max_apps)
            try:
                lru: float | None = traces.simulate(trace, max_apps, admission=False)
            except TypeError:  # an Apps without admission to turn off
                lru = None
            best = traces.belady(trace, max_apps)
            target = (
                " (target ≥ 0.90)" if kind == "zipf-1.0" and tenants >= 10_000 else ""
            )
            lru_text = f"LRU {lru:.3f}, " if lru is not None else ""
            rows.append(
                (
                    f"13. hit ratio, {tenants:,} tenants, max_apps {max_apps:,},"
                    f" {kind}, {length:,} requests",
                    f"{lru_text}shipped Apps {shipped:.3f}, Belady {best:.3f}",
                    f"{shipped / best:.2f} of the optimum{target}" if best else "",
                )
            )
    return rows


def bench_shared(
    small: int,
    large: int,
    max_apps: int,
    warmup: int,
    length: int,
    workdir: Path,
    postgres: str | None,
) -> list[tuple[str, str, str]]:
    """Row 15: one shared app for every tenant, in one process (as rows 12).

    Against the docs pattern with every app cached, on ``large`` tenants; RSS
    at ``small`` and ``large`` tenants; and against django-tenants' per-request
    queries on PostgreSQL (``bench_churn.django_tenants_queries``). The
    shared app is first asked for every tenant once: its steady state.
    """
    from bench_apps import supports_shared_app

    what = f"15. shared app, uniform, max_apps {max_apps:,}"
    if not supports_shared_app():
        return [(what, "not measured", "needs TenantDispatcher(shared_app=)")]
    now = Path(__file__).resolve().parent.parent
    runs = {}
    for tenants in (small, large):
        trace = _trace_file("uniform", tenants, warmup + length, workdir)
        registry = f"sqlite:///{workdir / f'shared-{tenants}.sqlite3'}"
        runs[tenants] = _churn_child(
            now, "shared", "hello", registry, tenants, max_apps, trace, warmup
        )
    trace = _trace_file("uniform", large, warmup + length, workdir)
    docs = _churn_child(
        now,
        "docs",
        "hello",
        f"sqlite:///{workdir / 'shared-docs.sqlite3'}",
        large,
        max_apps,
        trace,
        warmup,
    )
    ours = runs[large]
    rows = [
        (
            f"{what}: docs pattern, {large:,} tenants, every app cached (baseline)",
            _churn_figures(docs),
            "",
        ),
        (
            f"{what}: TenantDispatcher(shared_app=), {small:,} tenants",
            _churn_figures(runs[small]),
            f"{runs[small]['rps'] / docs['rps']:.2f}× docs",
        ),
        (
            f"{what}: TenantDispatcher(shared_app=), {large:,} tenants",
            _churn_figures(ours),
            f"{ours['rps'] / docs['rps']:.2f}× docs (target ≥ 0.95×); RSS"
            f" {ours['rss'] - runs[small]['rss']:+.0f} MiB from {small:,} tenants"
            " (target flat)",
        ),
    ]
    if postgres:
        theirs = _churn_child(
            now, "django_tenants", "hello", postgres, large, max_apps, trace, warmup
        )
        rows.append(
            (
                f"{what}: django-tenants' per-request queries (SET search_path +"
                f" domain lookup, PostgreSQL), not Django; {large:,} tenants",
                _churn_figures(theirs),
                f"shared app: {ours['rps'] / theirs['rps']:.2f}× its req/s",
            )
        )
    return rows


# -- driver --------------------------------------------------------------------

#: Rows are numbered 1 to ROWS in the printed table; ``--only`` picks some.
ROWS = 19


def postgres_schema_url(base: str) -> tuple[str, Callable[[], None]]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description="Dispatcher benchmarks.")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument(
        "--only",
        type=int,
        nargs="+",
        metavar="ROW",
        choices=range(1, ROWS + 1),
        help=f"run only these numbered rows (1-{ROWS}), e.g. --only 9 10 11",
    )
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        kind, url, tenants, max_apps = args.memory_child
        print(memory_child(kind, url, int(tenants), int(max_apps)))
        return
    scale = 10 if args.quick else 1
    wanted = set(args.only or range(1, ROWS + 1))
    rows: list[tuple[str, str, str]] = []
    pg = os.environ.get("DISPATCHER_BENCH_POSTGRES_URL")
    with tempfile.TemporaryDirectory() as tmp:

        def sqlite(name: str) -> str:
            return f"sqlite:///{Path(tmp) / name}.sqlite3"

        if 1 in wanted:
            rows += bench_hit_overhead(sqlite("hit"), 100_000 // scale, 7)
            rows += bench_hit_against_before(100_000 // scale, 7)
        if 2 in wanted:
            rows += bench_flask_ratio(sqlite("flask"), 20_000 // scale, 7)
        if 3 in wanted:
            rows += bench_cold(sqlite("cold"), "SQLite", 1000 // scale)
            if pg:
                url, drop = postgres_schema_url(pg)
                try:
                    rows += bench_cold(url, "PostgreSQL", 1000 // scale)
                finally:
                    drop()
        if 4 in wanted:
            rows += bench_memory(sqlite("memory"), 10_000 // scale, 100 // scale)
        if 5 in wanted:
            rows += bench_flood(sqlite("flood"), 100_000 // scale)
        if 6 in wanted:
            rows += bench_invalidation(
                sqlite("inv"), "SQLite, poll every 1 s", 30 // scale
            )
            rows += bench_poll_cost(sqlite("poll"), "SQLite", 100_000 // scale)
            if pg:
                for bench, bench_args in (
                    (bench_invalidation, ("PostgreSQL, NOTIFY", 30 // scale)),
                    (bench_poll_cost, ("PostgreSQL", 100_000 // scale)),
                ):
                    url, drop = postgres_schema_url(pg)
                    try:
                        rows += bench(url, *bench_args)  # type: ignore[operator]
                    finally:
                        drop()
        if 7 in wanted:
            rows += bench_hung_tenant(sqlite("hung"), 10.0 / scale)
        if 8 in wanted:
            rows += bench_signup_cost(sqlite("signup"), 1000 // scale)
        if 9 in wanted:
            rows += bench_open_files(
                Path(tmp) / "files", sqlite("files"), 1000 // scale
            )
            if pg:
                with postgres_database(pg) as url:
                    rows += bench_connections(url, 1000 // scale)
        if 10 in wanted:
            sqlite_data = {"url": "sqlite://", "directory": Path(tmp) / "overhead"}
            rows += bench_session_overhead(
                sqlite("overhead"), sqlite_data, "SQLite", 2_000 // scale, 7
            )
            if pg:
                with postgres_database(pg) as url:
                    rows += bench_session_overhead(
                        url, {"url": url}, "PostgreSQL", 2_000 // scale, 7
                    )
        if 11 in wanted:
            sqlite_data = {"url": "sqlite://", "directory": Path(tmp) / "signups"}
            workdir = Path(tmp) / "provisioning-sqlite"
            rows += bench_provisioning(
                sqlite("signups"), sqlite_data, "SQLite", 100 // scale, workdir
            )
            if pg:
                with postgres_database(pg) as url:
                    workdir = Path(tmp) / "provisioning-postgresql"
                    rows += bench_provisioning(
                        url, {"url": url}, "PostgreSQL", 100 // scale, workdir
                    )
        workdir = Path(tmp)
        # A smoke run: two traces (one skewed), and the realistic app on one.
        kinds = ("uniform", "zipf-1.2") if args.quick else CHURN_TRACES
        if 12 in wanted:
            rows += bench_churn(
                12,
                "hello",
                [2_000 // scale, 10_000 // scale],
                kinds,
                1_000 // scale,
                10_000 // scale,
                40_000 // scale,
                workdir,
            )
        if 13 in wanted:
            rows += bench_hit_ratio(
                [2_000 // scale, 10_000 // scale], 1_000 // scale, 100_000 // scale
            )
        if 14 in wanted:
            rows += bench_churn(
                14,
                "realistic",
                [2_000 // scale],
                kinds[:1] if args.quick else kinds,
                1_000 // scale,
                4_000 // scale,
                10_000 // scale,
                workdir,
            )
        if 15 in wanted:
            rows += bench_shared(
                1_000 // scale,
                10_000 // scale,
                1_000 // scale,
                10_000 // scale,
                40_000 // scale,
                workdir,
                pg,
            )
        if wanted & {16, 17}:
            import bench_server

            if not bench_server.have_wrk():
                rows.append(("16-17. gunicorn + wrk", "not measured", "needs wrk"))
            else:
                if 16 in wanted:
                    seconds, warmup = (2, 1) if args.quick else (10, 3)
                    rows += bench_server.server_rows(seconds, warmup, scale)
                if 17 in wanted:
                    rows += bench_server.rss_rows()
    if 18 in wanted:
        if not pg:
            rows.append(("18. fleet upgrade", "not measured", "needs PostgreSQL"))
        else:
            from bench_fleet import bench_fleet

            fleet = bench_fleet(pg, tenants=1000 // scale, noop_tenants=10_000 // scale)
            rows += [(f"18. {what}", figure, note) for what, figure, note in fleet]
    if 19 in wanted:
        from bench_metrics import bench_metrics

        rows += bench_metrics(100_000 // scale, 7)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| measure | figure | against |")
    print("|---|---|---|")
    for measure, figure, against in rows:
        print(f"| {measure} | {figure} | {against} |")


if __name__ == "__main__":
    main()

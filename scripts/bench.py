"""Benchmarks of the dispatcher, measured side by side in one run.

    python scripts/bench.py            # the full run whose table is in the README
    python scripts/bench.py --quick    # smaller counts, a smoke test
    DISPATCHER_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python scripts/bench.py        # adds the cold path on PostgreSQL

The baseline is Flask's documented ``SubdomainDispatcher`` (a dict of apps
under one lock); werkzeug's ``DispatcherMiddleware`` is shown beside it. Every
figure is printed with the target it is held to; nothing here is a test.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Lock
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, event, make_url, text
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import EnvironBuilder

from dispatcher import CachePolicy, TenantDispatcher, TenantRegistry

App = Callable[[dict[str, Any], Any], Iterable[bytes]]


# -- the baselines -------------------------------------------------------------


class SubdomainDispatcher:
    """Flask's documentation pattern, verbatim but for the create_app call."""

    def __init__(self, domain: str, create_app: Callable[[str], App]) -> None:
        self.domain = domain
        self.create_app = create_app
        self.lock = Lock()
        self.instances: dict[str, App] = {}

    def get_application(self, host: str) -> App:
        host = host.split(":")[0]
        assert host.endswith(self.domain), "Configuration error"
        subdomain = host[: -len(self.domain)].rstrip(".")
        with self.lock:
            app = self.instances.get(subdomain)
            if app is None:
                app = self.create_app(subdomain)
                self.instances[subdomain] = app
            return app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        app = self.get_application(environ["HTTP_HOST"])
        return app(environ, start_response)


def trivial_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def hello_flask(_tenant: object = None) -> Flask:
    app = Flask("hello")

    @app.route("/")
    def index() -> str:
        return "Hello, World!"

    return app


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


# -- driver --------------------------------------------------------------------


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
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        kind, url, tenants, max_apps = args.memory_child
        print(memory_child(kind, url, int(tenants), int(max_apps)))
        return
    scale = 10 if args.quick else 1
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:

        def sqlite(name: str) -> str:
            return f"sqlite:///{Path(tmp) / name}.sqlite3"

        rows += bench_hit_overhead(sqlite("hit"), 100_000 // scale, 7)
        rows += bench_hit_against_before(100_000 // scale, 7)
        rows += bench_flask_ratio(sqlite("flask"), 20_000 // scale, 7)
        rows += bench_cold(sqlite("cold"), "SQLite", 1000 // scale)
        pg = os.environ.get("DISPATCHER_BENCH_POSTGRES_URL")
        if pg:
            url, drop = postgres_schema_url(pg)
            try:
                rows += bench_cold(url, "PostgreSQL", 1000 // scale)
            finally:
                drop()
        rows += bench_memory(sqlite("memory"), 10_000 // scale, 100 // scale)
        rows += bench_flood(sqlite("flood"), 100_000 // scale)
        rows += bench_invalidation(sqlite("inv"), "SQLite, poll every 1 s", 30 // scale)
        rows += bench_poll_cost(sqlite("poll"), "SQLite", 100_000 // scale)
        if pg:
            for bench, args in (
                (bench_invalidation, ("PostgreSQL, NOTIFY", 30 // scale)),
                (bench_poll_cost, ("PostgreSQL", 100_000 // scale)),
            ):
                url, drop = postgres_schema_url(pg)
                try:
                    rows += bench(url, *args)  # type: ignore[operator]
                finally:
                    drop()
        rows += bench_hung_tenant(sqlite("hung"), 10.0 / scale)
        rows += bench_signup_cost(sqlite("signup"), 1000 // scale)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| measure | figure | against |")
    print("|---|---|---|")
    for measure, figure, against in rows:
        print(f"| {measure} | {figure} | {against} |")


if __name__ == "__main__":
    main()

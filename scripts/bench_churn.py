"""One contender of bench.py's rows 12-15, alone in this process.

    python scripts/bench_churn.py KIND APP REGISTRY TENANTS MAX_APPS TRACE WARMUP

KIND is ``docs``, ``per_tenant`` or ``shared`` (see ``bench_apps``), or
``django_tenants``; APP ``hello`` or ``realistic``; REGISTRY a SQLite file's
URL, made with TENANTS tenants by this version's code if it does not exist
(for ``django_tenants``, a PostgreSQL URL: see :func:`django_tenants_queries`);
TRACE is a file of tenant numbers (``array('I')``),
one request each, called directly as a WSGI server would. The first WARMUP
requests fill the cache unmeasured (the docs pattern builds every app first).
Prints one JSON object: req/s, p50/p99, hit ratio, full collections and their
longest pause (timed here through ``gc.callbacks``), RSS.

bench.py runs it once per contender, and on an older tree of the package
(``PYTHONPATH``) for "today's code": it uses only names every version has.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import uuid
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bench_apps
from werkzeug.test import EnvironBuilder


class FullCollections:
    """The cyclic collector's generation-2 runs, timed from start to stop."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)


def vm_status(field: str) -> float:
    """A ``/proc/self/status`` size (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise LookupError(field)


def ensure_registry(url: str, tenants: int) -> None:
    """The registry of tenants t0 ... t<tenants-1>, made unless it exists."""
    from dispatcher import TenantRegistry

    if os.path.exists(url.removeprefix("sqlite:///")):
        return
    registry = TenantRegistry(url)
    registry.migrate()
    specs = (
        registry.new_tenant(
            f"t{i}", owner_email=f"o{i % 100}@bench.test", subdomain=f"t{i}"
        )
        for i in range(tenants)
    )
    for _ in registry.import_tenants(specs, batch_size=1000):
        pass
    registry.close()


@contextmanager
def django_tenants_queries(url: str, tenants: int) -> Iterator[Any]:
    """One hello app behind django-tenants' per-request queries, not Django.

    django-tenants' middleware, on every request, looks the Host up in its
    domain table (joined to its tenant) on the public schema; its cursor sets
    ``search_path`` before that query (and again before the view's first
    query, on the tenant's schema: a hello view makes none). Here those two
    statements run on one persistent psycopg connection (the cheapest Django
    could do: ``CONN_MAX_AGE`` set) in front of a hello app. Its tables are
    made in a schema of their own, dropped after.
    """
    import psycopg
    from sqlalchemy import make_url

    plain = (
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    schema = f"bench_dt_{uuid.uuid4().hex[:10]}"
    connection = psycopg.connect(plain, autocommit=True)
    connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        connection.execute(
            f'CREATE TABLE "{schema}".client (id serial PRIMARY KEY,'
            " schema_name varchar(63) UNIQUE NOT NULL)"
        )
        connection.execute(
            f'CREATE TABLE "{schema}".domain (id serial PRIMARY KEY,'
            " domain varchar(253) UNIQUE NOT NULL, tenant_id integer NOT NULL"
            f' REFERENCES "{schema}".client (id), is_primary boolean NOT NULL)'
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                f'INSERT INTO "{schema}".client (id, schema_name) VALUES (%s, %s)',
                [(i + 1, f"t{i}") for i in range(tenants)],
            )
            cursor.executemany(
                f'INSERT INTO "{schema}".domain (domain, tenant_id, is_primary)'
                " VALUES (%s, %s, true)",
                [(bench_apps.tenant_host(i), i + 1) for i in range(tenants)],
            )
        connection.execute(f'ANALYZE "{schema}".client, "{schema}".domain')
        lookup = (
            f'SELECT c.id, c.schema_name FROM "{schema}".domain d'
            f' JOIN "{schema}".client c ON c.id = d.tenant_id WHERE d.domain = %s'
        )
        app = bench_apps.hello_flask()

        def django_tenants(environ: dict[str, Any], start_response: Any) -> Any:
            host = environ["HTTP_HOST"].split(":")[0]
            connection.execute(f'SET search_path = "{schema}", public')
            if connection.execute(lookup, (host,)).fetchone() is None:
                raise LookupError(host)
            return app(environ, start_response)

        yield django_tenants
    finally:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        connection.close()


def run(
    kind: str,
    app_kind: str,
    registry: str,
    tenants: int,
    max_apps: int,
    trace: list[int],
    warmup: int,
) -> dict[str, Any]:
    if kind == "django_tenants":
        with django_tenants_queries(registry, tenants) as app:
            return measure(app, tenants, trace, warmup)
    ensure_registry(registry, tenants)
    if kind == "docs":
        app = bench_apps.docs_pattern(tenants, app_kind, registry)
    elif kind == "per_tenant":
        app = bench_apps.per_tenant(registry, max_apps, app_kind)
    else:
        app = bench_apps.shared(registry, max_apps)
    return measure(app, tenants, trace, warmup, prime=kind == "shared")


def measure(
    app: Any, tenants: int, trace: list[int], warmup: int, prime: bool = False
) -> dict[str, Any]:
    """Serve ``trace`` through ``app``, the first ``warmup`` unmeasured; with
    ``prime``, every tenant once before (a shared app's steady state: every
    tenant's record held). RSS is given less the requests' environs."""
    bare = vm_status("VmRSS")
    environs = [
        EnvironBuilder(
            path="/", headers={"Host": bench_apps.tenant_host(i)}
        ).get_environ()
        for i in range(tenants)
    ]
    harness = vm_status("VmRSS") - bare
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def request(index: int) -> None:
        body = app(dict(environs[index]), start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    for index in [*(range(tenants) if prime else ()), *trace[:warmup]]:
        request(index)
    stats = getattr(app, "stats", None)
    before = stats() if stats else None
    statuses.clear()
    collections = FullCollections()
    gc.callbacks.append(collections)
    latencies = []
    clock = time.perf_counter
    began = clock()
    for index in trace[warmup:]:
        start = clock()
        request(index)
        latencies.append(clock() - start)
    elapsed = clock() - began
    gc.callbacks.remove(collections)
    result: dict[str, Any] = {
        "rps": len(latencies) / elapsed,
        "p50": _percentile(latencies, 0.50),
        "p99": _percentile(latencies, 0.99),
        "full_gcs": len(collections.pauses),
        "longest_gc": max(collections.pauses, default=0.0),
        "gc_time": sum(collections.pauses),
        "seconds": elapsed,
        "rss": vm_status("VmRSS") - harness,
        "failed": sum(1 for status in statuses if not status.startswith("200")),
        "requests": len(latencies),
        "hit_ratio": None,
    }
    if stats is not None and before is not None:
        after = stats()
        hits, misses = after.hits - before.hits, after.misses - before.misses
        result["hit_ratio"] = hits / max(1, hits + misses)
        result["builds"] = after.builds - before.builds
    return result


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    kind, app_kind, registry, tenants, max_apps, trace_file, warmup = sys.argv[1:]
    trace = array("I")
    with open(trace_file, "rb") as source:
        trace.frombytes(source.read())
    result = run(
        kind,
        app_kind,
        registry,
        int(tenants),
        int(max_apps),
        trace.tolist(),
        int(warmup),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

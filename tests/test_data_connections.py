"""One process serving 1,000 tenants, each on its own data: what it holds open.

A real :class:`TenantDispatcher` with ``max_apps=1000`` serves every tenant in
turn, from a few threads, and each tenant app writes and reads through
``data.session``. On PostgreSQL a second connection watches
``pg_stat_activity`` throughout (the process's connections carry the unique
``application_name`` of ``tenant_data_location``); on SQLite the process's open
file descriptors are watched, with apps evicted as they go.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import pytest
from flask import Flask
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    make_url,
    select,
    text,
)
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.data import TenantData

BASE = "example.com"
TENANTS = 1000
#: Threads sending requests at once; more than the PostgreSQL pool's bound
#: below, so sessions queue for connections rather than open more.
THREADS = 6

T = TypeVar("T")

metadata = MetaData()
rows = Table(
    "rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(40), nullable=False),
)


#: CPython 3.11 before 3.11.8 (and 3.12 before 3.12.2) may raise SystemError
#: from ast.parse run in several threads at once (gh-106905), and werkzeug
#: parses to compile each app's URL rules: there the apps are built one at a time.
AST_RACE = sys.version_info < (3, 11, 8) or (3, 12) <= sys.version_info < (3, 12, 2)


def create_app_for(data: TenantData) -> Callable[[Tenant], Flask]:
    building: AbstractContextManager[Any] = (
        threading.Lock() if AST_RACE else nullcontext()
    )

    def create_app(tenant: Tenant) -> Flask:
        with building:
            app = Flask(f"tenant_{tenant.slug}")
            data.init_app(app, tenant)
            add_routes(app, data, tenant)
        return app

    return create_app


def add_routes(app: Flask, data: TenantData, tenant: Tenant) -> None:
    @app.post("/rows")
    def add() -> tuple[str, int]:
        data.session.execute(insert(rows), {"owner": tenant.slug})
        data.session.commit()
        return "", 201

    @app.get("/rows")
    def owners() -> list[str]:
        return list(data.session.scalars(select(rows.c.owner)))


def provision(registry: TenantRegistry, data: TenantData) -> list[Tenant]:
    """``TENANTS`` tenants in the registry, each with its data created."""
    specs = (
        registry.new_tenant(f"c{n}", owner_email=f"o@c{n}.test", subdomain=f"c{n}")
        for n in range(TENANTS)
    )
    for _ in registry.import_tenants(specs, batch_size=TENANTS):
        pass
    tenants = registry.list_tenants()
    assert len(tenants) == TENANTS
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(data.create, tenants))
    return tenants


def serve_each_once(dispatcher: TenantDispatcher, tenants: list[Tenant]) -> None:
    """Every tenant writes its row and reads its rows back; only its own."""
    errors: list[BaseException] = []
    wrong: dict[str, Any] = {}

    def serve(part: list[Tenant]) -> None:
        client = Client(dispatcher)
        try:
            for tenant in part:
                host = {"HTTP_HOST": f"{tenant.subdomain}.{BASE}"}
                added = client.post("/rows", environ_overrides=host, buffered=True)
                assert added.status_code == 201, added.get_data(as_text=True)
                seen = client.get("/rows", environ_overrides=host, buffered=True).json
                if seen != [tenant.slug]:
                    wrong[tenant.slug] = seen
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=serve, args=(tenants[n::THREADS],))
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert wrong == {}


@contextmanager
def watching(measure: Callable[[], T]) -> Iterator[list[T]]:
    """Samples of ``measure()`` taken back to back in a thread while inside."""
    samples: list[T] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append(measure())
            stop.wait(0.002)  # a sampling interval, not a wait for anything

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield samples
    finally:
        stop.set()
        watcher.join()
    samples.append(measure())


def test_postgresql_connections_never_exceed_the_pool_bound(
    registry: TenantRegistry, tenant_data_location: dict[str, Any]
) -> None:
    url = make_url(tenant_data_location.get("url", ""))
    if url.get_backend_name() != "postgresql":
        pytest.skip("pg_stat_activity is PostgreSQL's")
    data = TenantData(
        metadata=metadata, pool_size=2, max_overflow=2, **tenant_data_location
    )
    dispatcher = TenantDispatcher(
        registry,
        create_app_for(data),
        base_domain=BASE,
        policy=CachePolicy(max_apps=TENANTS, poll_interval=None),
    )
    # No application_name: the watcher's own connection is not counted.
    monitor = create_engine(url.set(query={}), isolation_level="AUTOCOMMIT")
    count = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a")
    try:
        with monitor.connect() as connection:

            def connections() -> int:
                found = connection.scalar(count, {"a": url.query["application_name"]})
                return int(found or 0)

            with watching(connections) as samples:
                tenants = provision(registry, data)
                serve_each_once(dispatcher, tenants)
        # Every app is still cached: 1,000 apps, one pool.
        assert dispatcher.stats().apps == TENANTS
        assert len(samples) > 10
        assert 1 <= max(samples) <= data.bound == 4
    finally:
        dispatcher.close()
        data.dispose()
        drop_schemas(monitor, [data.schema_name(t) for t in registry.list_tenants()])
        monitor.dispose()


def drop_schemas(engine: Engine, names: list[str]) -> None:
    """Drop the tenants' schemas a hundred at a time (one by one takes seconds)."""
    with engine.connect() as connection:
        for start in range(0, len(names), 100):
            listed = ", ".join(f'"{name}"' for name in names[start : start + 100])
            connection.execute(text(f"DROP SCHEMA IF EXISTS {listed} CASCADE"))


def open_files() -> list[str]:
    """What this process's file descriptors point at."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the listing's own, closed since
            pass
    return targets


def test_sqlite_open_files_stay_bounded_while_apps_are_evicted(
    registry: TenantRegistry, tenant_data_location: dict[str, Any]
) -> None:
    directory = tenant_data_location.get("directory")
    if directory is None:
        pytest.skip("tenant files are SQLite's")
    data = TenantData(metadata=metadata, **tenant_data_location)
    max_apps = 20
    dispatcher = TenantDispatcher(
        registry,
        create_app_for(data),
        base_domain=BASE,
        policy=CachePolicy(max_apps=max_apps, poll_interval=None),
    )
    tenants = provision(registry, data)
    tenant_files = str(Path(directory).resolve())
    # The registry's pool may open connections (files) for new threads: not
    # the tenants' files, so counted apart.
    registry_files = str(Path(make_url(registry.url).database or "").resolve())

    def files() -> tuple[int, int]:
        """The tenants' open files, and all others but the registry's."""
        targets = open_files()
        mine = sum(1 for target in targets if target.startswith(tenant_files))
        theirs = sum(1 for target in targets if target.startswith(registry_files))
        return mine, len(targets) - mine - theirs

    try:
        serve_each_once(dispatcher, tenants[:100])  # warm up
        _, before = files()
        with watching(files) as samples:
            serve_each_once(dispatcher, tenants[100:])
        assert dispatcher.stats().apps <= max_apps
        mine, others = zip(*samples, strict=True)
        # Per request in flight: the tenant's file, its rollback journal and,
        # while a commit syncs it, the directory. Never the evicted apps' files.
        assert max(mine) <= 3 * THREADS
        assert mine[-1] == 0
        assert max(others) <= before
    finally:
        dispatcher.close()
        data.dispose()

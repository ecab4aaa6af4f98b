"""Shared fixtures: a real, freshly migrated registry database per test.

SQLite by default (a file in the test's temporary directory). When
``DISPATCHER_TEST_DATABASE_URL`` names a PostgreSQL server, the run creates its
own database there (so concurrent runs never collide) and every test gets its
own schema in it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_helpers import ACME_SETTINGS
from sqlalchemy import Engine, create_engine, make_url, text

from dispatcher import Tenant, TenantRegistry
from dispatcher.data import TenantData
from dispatcher.demo.data import make_tenant_data

TEST_DATABASE_URL_VARIABLE = "DISPATCHER_TEST_DATABASE_URL"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests start without the user's dispatcher settings and cannot leak their own."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("DISPATCHER_") and name != TEST_DATABASE_URL_VARIABLE:
            monkeypatch.delenv(name)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def server_database_url() -> Iterator[str | None]:
    """A database of this run's own on the PostgreSQL server, or None for SQLite."""
    base = os.environ.get(TEST_DATABASE_URL_VARIABLE)
    if not base:
        yield None
        return
    name = f"dispatcher_test_{uuid.uuid4().hex[:12]}"
    # pre_ping: a test may restart the server between creating and dropping.
    admin = create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def database_url(server_database_url: str | None, tmp_path: Path) -> Iterator[str]:
    """An empty database for one test: a SQLite file, or a PostgreSQL schema."""
    if server_database_url is None:
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(
        server_database_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True
    )
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(server_database_url).update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def registry(database_url: str) -> Iterator[TenantRegistry]:
    """A registry on a freshly migrated database."""
    registry = TenantRegistry(database_url)
    registry.migrate()
    yield registry
    registry.close()


@pytest.fixture
def acme(registry: TenantRegistry) -> Tenant:
    """A tenant with every kind of name and a nested config (``ACME_SETTINGS``)."""
    return registry.create_tenant("acme", owner_name="Ada", **ACME_SETTINGS)


@pytest.fixture
def backend(database_url: str) -> str:
    """``sqlite`` or ``postgresql``: the backend this run tests."""
    return make_url(database_url).get_backend_name()


@pytest.fixture
def tenant_data_location(database_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``url`` (and ``directory``) keywords of a TenantData for one test.

    On PostgreSQL the URL keeps the test's ``search_path`` (TenantData must not
    depend on it), carries an ``application_name`` of its own for counting its
    connections, and every schema the test creates is dropped after it.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        yield {"url": "sqlite://", "directory": tmp_path / "tenants"}
        return
    admin = create_engine(
        url.set(query={}), isolation_level="AUTOCOMMIT", pool_pre_ping=True
    )
    listing = text("SELECT nspname FROM pg_namespace")
    with admin.connect() as connection:
        before = set(connection.scalars(listing))
    name = f"dispatcher_data_{uuid.uuid4().hex[:12]}"
    tagged = url.update_query_dict({"application_name": name})
    try:
        yield {"url": tagged.render_as_string(hide_password=False)}
    finally:
        with admin.connect() as connection:
            for schema in set(connection.scalars(listing)) - before:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def demo_data(
    database_url: str,
    tenant_data_location: dict[str, Any],  # drops the tenants' schemas afterwards
) -> Iterator[TenantData]:
    """The demo's tenant data beside the test's registry, as the server has it."""
    data = make_tenant_data(database_url)
    yield data
    data.dispose()


@pytest.fixture(scope="module")
def eu_database(server_database_url: str | None) -> Iterator[str]:
    """A second database standing for a second data server, dropped after the
    module; tests of several servers skip on SQLite runs."""
    if server_database_url is None:
        pytest.skip("several data servers are PostgreSQL's; this run is SQLite")
    url = make_url(server_database_url)
    name = f"dispatcher_eu_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def eu(eu_database: str) -> Iterator[Engine]:
    """An admin engine on ``eu_database``; every schema a test leaves is dropped."""
    engine = create_engine(eu_database, isolation_level="AUTOCOMMIT")
    yield engine
    with engine.connect() as connection:
        left = text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'")
        for schema in list(connection.scalars(left)):
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()

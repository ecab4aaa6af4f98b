"""Cache entries on their own: leases, one teardown, one expiry clock.

The entries' tenants are real snapshots from a real registry; the apps are
plain WSGI callables and the clock a fake one.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from flask import Flask
from helpers import Timer
from sqlalchemy import QueuePool, create_engine, text

from dispatcher import Tenant, TenantRegistry
from dispatcher.entries import Apps, Entry, default_teardown


class Teardowns:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, app: Any, tenant: Tenant) -> None:
        self.calls.append(tenant.slug)


def app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


@pytest.fixture
def acme(registry: TenantRegistry) -> Tenant:
    return registry.create_tenant("acme", owner_email="owner@acme.test")


# -- default_teardown ------------------------------------------------------------


def test_default_teardown_runs_each_registered_callable_once(
    acme: Tenant, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'tenant.sqlite3'}")
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    pool = cast(QueuePool, engine.pool)
    assert pool.checkedin() == 1
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("cannot dispose")

    flask_app = Flask("tenant_acme")
    flask_app.extensions["dispatcher.teardown"] = [
        engine.dispose,
        broken,
        partial(calls.append, "counter"),
    ]
    with caplog.at_level(logging.ERROR, logger="dispatcher.entries"):
        default_teardown(flask_app, acme)

    assert pool.checkedin() == 0  # the engine's connections were closed
    assert engine.pool is not pool
    assert calls == ["broken", "counter"]  # one failure does not stop the rest
    assert "teardown" in caplog.text and "acme" in caplog.text
    # Apps without extensions, or without the key, are left alone.
    default_teardown(app, acme)
    default_teardown(Flask("tenant_plain"), acme)
    engine.dispose()


# -- Entry: leases and teardown --------------------------------------------------


def test_a_retired_entry_is_torn_down_once_after_its_last_lease(acme: Tenant) -> None:
    torn = Teardowns()
    entry = Entry(app, acme, 60, torn)
    assert entry.acquire() and entry.acquire()

    entry.retire()
    assert torn.calls == []
    assert entry.acquire() is False  # no new responses
    entry.release()
    assert (entry.inflight, torn.calls) == (1, [])
    entry.release()

    assert torn.calls == ["acme"]
    entry.retire()
    assert entry.acquire() is False
    assert torn.calls == ["acme"]


def test_a_failing_teardown_is_logged_not_raised(
    acme: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(app: Any, tenant: Tenant) -> None:
        raise RuntimeError("cannot dispose")

    entry = Entry(app, acme, 60, broken)
    with caplog.at_level(logging.ERROR, logger="dispatcher.entries"):
        entry.retire()
    assert "teardown of tenant 'acme' failed" in caplog.text


# -- Entry and Apps: one expiry clock --------------------------------------------


def test_an_entry_is_served_no_longer_than_it_is_kept(acme: Tenant) -> None:
    entry = Entry(app, acme, 60, Teardowns(), kept_until=70)
    entry.serve_until(65)
    assert entry.expires_at == 65
    entry.serve_until(75)
    assert (entry.expires_at, entry.kept_until) == (70, 70)
    # Without a stale window it is kept as long as it is served.
    assert Entry(app, acme, 60, Teardowns()).kept_until == 60


def test_an_entry_cannot_be_kept_shorter_than_it_is_served(acme: Tenant) -> None:
    with pytest.raises(ValueError, match=r"kept_until must be at least .*60.*59"):
        Entry(app, acme, 60, Teardowns(), kept_until=59)


def test_apps_drop_an_entry_at_its_kept_until_whatever_happened_since(
    registry: TenantRegistry, acme: Tenant
) -> None:
    timer = Timer()
    dropped: list[tuple[str, str]] = []
    apps = Apps(
        2, timer, lambda entry, cause: dropped.append((entry.tenant.slug, cause))
    )
    other = registry.create_tenant("other", owner_email="owner@other.test")
    third = registry.create_tenant("third", owner_email="owner@third.test")
    kept = apps["acme"] = Entry(app, acme, 60, Teardowns(), kept_until=70)
    apps["other"] = Entry(app, other, 60, Teardowns(), kept_until=70)
    timer.tick(65)
    kept.serve_until(80)  # no later than kept_until
    kept.used = True

    # Over capacity: acme, used, gets a second chance; other goes.
    apps["third"] = Entry(app, third, 125, Teardowns(), kept_until=130)
    assert dropped == [("other", "capacity")]
    assert "acme" in apps

    timer.tick(5)
    apps.expire()
    assert dropped == [("other", "capacity"), ("acme", "expired")]
    assert list(apps) == ["third"]

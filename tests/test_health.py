"""``/live`` and ``/ready``: a real registry, a real dispatcher, werkzeug's client.

The registry goes away in ways each backend really has: its change feed's
table renamed away (a restore of the wrong dump: ``SchemaMissing``, on both),
and on PostgreSQL the server unreachable behind a
:class:`~tcp_proxy.TcpProxy` taken down (``RegistryUnavailable``). Time is a
:class:`Clock` the test moves: no test sleeps for ``check_every`` or for the
follower's bound.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from forking import held_by_another_thread, run_in_child
from servers import (
    TESTS,
    free_port,
    gunicorn_command,
    python_path,
    request,
    running,
)
from sqlalchemy import Engine, create_engine, event, make_url, text
from tcp_proxy import TcpProxy
from werkzeug.test import Client, TestResponse

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.health import HealthApp, judge

BASE = "example.com"


class Clock:
    """A monotonic clock that stands still until the test moves it.

    It starts at ``time.monotonic()``, so the follower's read times (taken
    from the real clock) compare with it: ``tick(60)`` makes its last read a
    minute old.
    """

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def create_app(tenant: Tenant) -> Flask:
    app = Flask(tenant.slug)
    app.add_url_rule("/", "index", lambda: tenant.slug)
    return app


@pytest.fixture
def dispatcher(registry: TenantRegistry) -> Iterator[TenantDispatcher]:
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    dispatcher = TenantDispatcher(registry, create_app, base_domain=BASE)
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def admin(database_url: str) -> Iterator[Engine]:
    """A connection of the operator's own to the registry's database."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def feed_away(admin: Engine) -> None:
    """The change feed's table renamed: every registry read is SchemaMissing."""
    with admin.connect() as connection:
        connection.execute(text("ALTER TABLE tenant_changes RENAME TO feed_away"))


def feed_back(admin: Engine) -> None:
    with admin.connect() as connection:
        connection.execute(text("ALTER TABLE feed_away RENAME TO tenant_changes"))


def generation_queries(registry: TenantRegistry) -> list[str]:
    """Each ``latest_generation`` query the registry's engine runs from now on."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        statement = args[2]
        if "max(tenant_changes.generation)" in statement:
            seen.append(statement)

    event.listen(registry.engine, "before_cursor_execute", record)
    return seen


def get(app: HealthApp, path: str, method: str = "GET") -> TestResponse:
    return Client(app).open(path, method=method)


def body(response: TestResponse) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(response.get_data(as_text=True))
    return parsed


# -- /live ----------------------------------------------------------------------


def test_live_answers_without_touching_the_database(
    dispatcher: TenantDispatcher, admin: Engine
) -> None:
    statements: list[str] = []
    event.listen(
        dispatcher.registry.engine,
        "before_cursor_execute",
        lambda *args: statements.append(args[2]),
    )
    feed_away(admin)  # the registry is broken: /live must not notice
    app = HealthApp(dispatcher)
    for method in ("GET", "HEAD"):
        response = get(app, "/live", method)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert response.mimetype == "application/json"
    assert body(get(app, "/live")) == {"live": True}
    assert get(app, "/live", "HEAD").get_data() == b""
    assert statements == []
    assert dispatcher.registry.feed.follower is None  # not started either
    feed_back(admin)


# -- /ready ---------------------------------------------------------------------


def test_ready_starts_the_follower_in_a_process_that_served_nothing(
    dispatcher: TenantDispatcher, database_url: str, clock: Clock
) -> None:
    assert dispatcher.registry.feed.follower is None
    response = get(HealthApp(dispatcher, timer=clock), "/ready")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    follower = dispatcher.registry.feed.follower
    assert follower is not None and follower.running
    found = body(response)
    assert found == {
        "ready": True,
        "registry": {"reachable": True, "error": None, "required": True},
        "follower": {
            "running": True,
            "generation": dispatcher.registry.latest_generation(),
            "lag": found["follower"]["lag"],
            # 2 * (poll_interval + DISPATCHER_DB_TIMEOUT): 2 * (1 + 5)
            "max_lag": 12.0,
        },
        "problems": [],
    }
    assert 0 <= found["follower"]["lag"] < 12
    # Operators' eyes only, still: no tenant, no URL, no path.
    text_ = response.get_data(as_text=True)
    for secret in ("acme", str(make_url(database_url).database), "sqlite", "@"):
        assert secret not in text_


def test_an_unmigrated_registry_is_not_ready(database_url: str) -> None:
    registry = TenantRegistry(database_url)  # never migrated
    dispatcher = TenantDispatcher(registry, create_app, base_domain=BASE)
    try:
        for require_registry in (True, False):
            app = HealthApp(dispatcher, require_registry=require_registry)
            response = get(app, "/ready")
            assert response.status_code == 503
            found = body(response)
            assert found["registry"]["error"] == "SchemaMissing"
            assert found["follower"]["running"] is True
            assert found["follower"]["lag"] is None
            # Without the registry required, too: this process has never
            # reached its registry (a wrong URL, a missing migration).
            assert "change feed never read" in found["problems"]
            assert ("registry unreachable" in found["problems"]) is require_registry
            text_ = response.get_data(as_text=True)
            assert str(make_url(database_url).database) not in text_
        assert get(HealthApp(dispatcher), "/live").status_code == 200
    finally:
        dispatcher.close()
        registry.close()


def test_a_registry_that_goes_away_and_comes_back(
    dispatcher: TenantDispatcher, admin: Engine, clock: Clock
) -> None:
    app = HealthApp(dispatcher, timer=clock)
    assert get(app, "/ready").status_code == 200
    feed_away(admin)
    try:
        # Remembered for check_every: the probe does not ask yet.
        assert get(app, "/ready").status_code == 200
        clock.tick(app.check_every)
        response = get(app, "/ready")
        assert response.status_code == 503
        found = body(response)
        assert found["registry"] == {
            "reachable": False,
            "error": "SchemaMissing",
            "required": True,
        }
        assert found["problems"] == ["registry unreachable"]
        assert get(app, "/live").status_code == 200
    finally:
        feed_back(admin)
    clock.tick(app.check_every)
    assert get(app, "/ready").status_code == 200


def test_a_probe_storm_asks_the_registry_once_per_interval(
    registry: TenantRegistry, admin: Engine, clock: Clock
) -> None:
    # Not following (poll_interval None): every generation query is a probe's.
    dispatcher = TenantDispatcher(
        registry,
        create_app,
        base_domain=BASE,
        policy=CachePolicy(poll_interval=None),
    )
    queries = generation_queries(registry)
    app = HealthApp(dispatcher, check_every=5, timer=clock)
    for _ in range(20):
        response = get(app, "/ready")
        assert response.status_code == 200
        # Not following: nothing to judge but the registry.
        assert body(response)["follower"] is None
    assert len(queries) == 1
    clock.tick(4.9)
    get(app, "/ready")
    assert len(queries) == 1
    clock.tick(0.1)
    get(app, "/ready")
    assert len(queries) == 2
    # Failures are remembered too: an outage is when a storm would hurt.
    feed_away(admin)
    try:
        clock.tick(5)
        for _ in range(20):
            assert get(app, "/ready").status_code == 503
        assert len(queries) == 3
    finally:
        feed_back(admin)
    dispatcher.close()


def test_probes_during_a_check_get_the_last_answer(
    dispatcher: TenantDispatcher, clock: Clock
) -> None:
    """A check held up (a database slow to answer) is not joined by a queue
    of others: probes meanwhile answer from the last check, at once."""
    app = HealthApp(dispatcher, timer=clock)
    assert get(app, "/ready").status_code == 200
    queries = generation_queries(dispatcher.registry)
    entered, release = threading.Event(), threading.Event()

    def hold(*args: Any) -> None:
        if "max(tenant_changes.generation)" in args[2] and not entered.is_set():
            entered.set()
            release.wait(10)

    event.listen(dispatcher.registry.engine, "before_cursor_execute", hold)
    clock.tick(app.check_every)
    slow = threading.Thread(target=get, args=(app, "/ready"))
    slow.start()
    try:
        assert entered.wait(10), "the held check never ran"
        for _ in range(5):
            assert get(app, "/ready").status_code == 200
        assert len(queries) == 1  # only the held one
    finally:
        release.set()
        slow.join(10)


def test_a_follower_that_has_not_read_the_feed_recently(
    dispatcher: TenantDispatcher, clock: Clock
) -> None:
    app = HealthApp(dispatcher, timer=clock)
    found = body(get(app, "/ready"))
    assert found["ready"] is True
    clock.tick(found["follower"]["max_lag"] + 1)
    response = get(app, "/ready")
    assert response.status_code == 503
    found = body(response)
    assert found["problems"] == ["change feed read too long ago"]
    assert found["registry"]["reachable"] is True
    assert found["follower"]["lag"] > found["follower"]["max_lag"]
    # The registry answers, so the follower is stuck: not ready in either mode.
    relaxed = HealthApp(dispatcher, require_registry=False, timer=clock)
    assert get(relaxed, "/ready").status_code == 503


def test_max_lag_is_the_callers(dispatcher: TenantDispatcher, clock: Clock) -> None:
    app = HealthApp(dispatcher, max_lag=30, timer=clock)
    assert body(get(app, "/ready"))["follower"]["max_lag"] == 30
    clock.tick(29)
    assert get(app, "/ready").status_code == 200
    clock.tick(2)
    assert get(app, "/ready").status_code == 503


def test_a_stopped_follower_is_not_ready(dispatcher: TenantDispatcher) -> None:
    app = HealthApp(dispatcher)
    assert get(app, "/ready").status_code == 200
    dispatcher.registry.feed.close()
    response = get(app, "/ready")
    assert response.status_code == 503
    assert body(response)["problems"] == ["follower not running"]


def test_an_outage_need_not_pull_every_instance(
    dispatcher: TenantDispatcher, admin: Engine, clock: Clock
) -> None:
    """require_registry=False: the outage is reported, the process stays ready
    (it serves its cached tenants), even once the follower falls behind."""
    assert Client(dispatcher).get("/", headers={"Host": f"acme.{BASE}"}).text == "acme"
    strict = HealthApp(dispatcher, timer=clock)
    relaxed = HealthApp(dispatcher, require_registry=False, timer=clock)
    assert get(relaxed, "/ready").status_code == 200
    feed_away(admin)
    try:
        clock.tick(60)  # past check_every and past the follower's bound
        assert get(strict, "/ready").status_code == 503
        response = get(relaxed, "/ready")
        assert response.status_code == 200
        found = body(response)
        assert found["ready"] is True
        assert found["registry"] == {
            "reachable": False,
            "error": "SchemaMissing",
            "required": False,
        }
        assert found["follower"]["lag"] > found["follower"]["max_lag"]
        # What it stays ready for: the cached tenant is still served.
        answer = Client(dispatcher).get("/", headers={"Host": f"acme.{BASE}"})
        assert answer.text == "acme"
    finally:
        feed_back(admin)


@pytest.fixture
def proxied_registry(
    registry: TenantRegistry, backend: str, database_url: str
) -> Iterator[tuple[TcpProxy, TenantRegistry]]:
    """The test's migrated registry, reached through a proxy that can go down."""
    if backend != "postgresql":
        pytest.skip("an unreachable database server; SQLite has none")
    url = make_url(database_url)
    with TcpProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        far = TenantRegistry(proxied.render_as_string(hide_password=False), timeout=1)
        yield proxy, far
        far.close()


def test_an_unreachable_database_server(
    proxied_registry: tuple[TcpProxy, TenantRegistry], clock: Clock
) -> None:
    proxy, registry = proxied_registry
    dispatcher = TenantDispatcher(registry, create_app, base_domain=BASE)
    app = HealthApp(dispatcher, timer=clock)
    assert get(app, "/ready").status_code == 200
    proxy.down()
    clock.tick(app.check_every)
    response = get(app, "/ready")
    assert response.status_code == 503
    assert body(response)["registry"]["error"] == "RegistryUnavailable"
    assert str(proxy.port) not in response.get_data(as_text=True)
    assert get(app, "/live").status_code == 200
    proxy.up()
    clock.tick(app.check_every)
    assert get(app, "/ready").status_code == 200
    dispatcher.close()


# -- after fork -----------------------------------------------------------------


def test_a_forked_worker_follows_and_asks_the_registry_anew(
    dispatcher: TenantDispatcher, admin: Engine, clock: Clock
) -> None:
    app = HealthApp(dispatcher, timer=clock)
    assert get(app, "/ready").status_code == 200  # remembered: reachable

    def child() -> bool:
        # The parent's answer is not this process's: it asks, and finds the
        # feed gone; its follower runs here, in threads of its own.
        feed_away(admin)
        try:
            found = body(get(app, "/ready"))
        finally:
            feed_back(admin)
        follower = dispatcher.registry.feed.follower
        return (
            found["registry"]["error"] == "SchemaMissing"
            and found["follower"]["running"] is True
            and follower is not None
            and follower.running
        )

    # A parent thread holding the app's lock at the fork does not hang the child.
    with held_by_another_thread(app._lock):
        assert run_in_child(child) == 0


# -- HTTP -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("POST", "/ready", 405, id="POST /ready"),
        pytest.param("DELETE", "/live", 405, id="DELETE /live"),
        pytest.param("GET", "/", 404, id="root"),
        pytest.param("GET", "/ready/", 404, id="trailing slash"),
        pytest.param("POST", "/metrics", 404, id="unknown path, any method"),
    ],
)
def test_only_get_and_head_on_two_paths(
    dispatcher: TenantDispatcher, method: str, path: str, status: int
) -> None:
    response = get(HealthApp(dispatcher), path, method)
    assert response.status_code == status
    assert response.headers["Cache-Control"] == "no-store"
    if status == 405:
        assert response.headers["Allow"] == "GET, HEAD"
    assert dispatcher.registry.feed.follower is None  # nothing was judged


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"check_every": -1}, "check_every must be", id="negative"),
        pytest.param({"max_lag": 0}, "max_lag must be", id="zero max_lag"),
        pytest.param(
            {"max_lag": float("inf")}, "max_lag must be", id="infinite max_lag"
        ),
        pytest.param({"check_every": "2"}, "check_every must be", id="a string"),
        pytest.param({"timer": 3.0}, "timer must be callable", id="timer"),
    ],
)
def test_bad_settings_are_refused(
    dispatcher: TenantDispatcher, options: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        HealthApp(dispatcher, **options)


@pytest.mark.parametrize(
    ("found", "problems"),
    [
        pytest.param(
            dict(registry_error=None, lag=1.0), (), id="reachable, recent read"
        ),
        pytest.param(
            dict(registry_error="RegistryUnavailable", lag=50.0),
            ("registry unreachable", "change feed read too long ago"),
            id="outage, required",
        ),
        pytest.param(
            dict(registry_error="RegistryUnavailable", lag=50.0, require=False),
            (),
            id="outage, not required",
        ),
        pytest.param(
            dict(registry_error=None, lag=50.0, require=False),
            ("change feed read too long ago",),
            id="stuck follower, registry up",
        ),
        pytest.param(
            dict(registry_error="SchemaMissing", lag=None, require=False),
            ("change feed never read",),
            id="never read, not required",
        ),
        pytest.param(
            dict(registry_error=None, lag=1.0, running=False),
            ("follower not running",),
            id="stopped follower",
        ),
        pytest.param(
            dict(registry_error=None, lag=None, following=False),
            (),
            id="not following",
        ),
    ],
)
def test_judge(found: dict[str, Any], problems: tuple[str, ...]) -> None:
    assert (
        judge(
            found["registry_error"],
            require_registry=found.get("require", True),
            following=found.get("following", True),
            running=found.get("running", True),
            lag=found["lag"],
            max_lag=12.0,
        )
        == problems
    )


# -- a real server --------------------------------------------------------------


def test_mounted_beside_the_tenants_under_gunicorn(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    port = free_port()
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_BASE_DOMAIN": "localhost",
        "DISPATCHER_APP_FACTORY": "gunicorn_probe_app:create_app",
        "DISPATCHER_DEFAULT_APP": "health_probe_app:default_app",
        "DISPATCHER_MIGRATE": "0",
        "PYTHONPATH": python_path(TESTS),
    }
    command = gunicorn_command("health_probe_app:application", port=port, workers=2)
    log_path = tmp_path / "gunicorn.log"
    with running(command, port=port, env=env, log_path=log_path, cwd=tmp_path) as s:
        host = f"localhost:{port}"
        # Every worker, whichever takes the probe, follows before serving.
        for _ in range(6):
            ready = request(port, "/_health/ready", host=host)
            assert ready.status == 200, (ready, s.log())
            found = ready.json()
            assert found["follower"]["running"] is True
            assert found["registry"]["reachable"] is True
            assert ready.headers["Cache-Control"] == "no-store"
        live = request(port, "/_health/live", host=host)
        assert (live.status, live.json()) == (200, {"live": True})
        head = request(port, "/_health/ready", host=host, method="HEAD")
        assert (head.status, head.body) == (200, "")
        post = request(port, "/_health/ready", host=host, method="POST", body="")
        assert (post.status, post.headers["Allow"]) == (405, "GET, HEAD")
        # The tenants beside it are served as before.
        tenant = request(port, "/", host=f"acme.localhost:{port}")
        assert tenant.status == 200 and tenant.json()["tenant"] == "acme"

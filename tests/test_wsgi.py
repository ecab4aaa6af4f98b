"""``dispatcher.wsgi``: the application the ``DISPATCHER_*`` variables describe.

Settings that do not depend on the database run on the default SQLite file,
in the test's own working directory; what does (the URL, the migration) runs
on the backend under test.
"""

from __future__ import annotations

import functools
import html
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import make_url
from tenant_data_probe import DIRECTORY_VARIABLE
from werkzeug.test import Client, TestResponse

import dispatcher.wsgi as wsgi
from dispatcher import TenantDispatcher, TenantRegistry
from dispatcher.data import TenantData
from dispatcher.demo import create_app as demo_create_app
from dispatcher.demo.data import TENANTS_DIRECTORY
from dispatcher.exceptions import InvalidName, SchemaMissing
from dispatcher.wsgi import make_application, migrate_at_start

DEFAULT_FILE = "dispatcher.sqlite3"
FORM = {
    "organisation": "Acme Corp",
    "subdomain": "acme",
    "email": "ada@acme.test",
    "password": "correct horse battery",
}

Build = Callable[..., TenantDispatcher]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, where the default SQLite file would land."""
    directory = tmp_path / "cwd"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def build(cwd: Path) -> Iterator[Build]:
    """A server's start on the given variables: ``make_application``, then
    ``migrate_at_start`` (as gunicorn's master or ``tenantctl serve`` do).

    Closed after the test.
    """
    made: list[TenantDispatcher] = []

    def build(**environ: str) -> TenantDispatcher:
        application = make_application(environ)
        migrate_at_start(environ)
        made.append(application)
        return application

    yield build
    for application in made:
        close(application)


def close(application: TenantDispatcher) -> None:
    application.close()
    application.registry.close()
    data = data_of(application)
    if data is not None:
        data.dispose()


def data_of(application: TenantDispatcher) -> TenantData | None:
    """The tenant data the demo's app was given, if any."""
    create_app = application.create_app
    if not isinstance(create_app, functools.partial):
        return None
    assert create_app.func is demo_create_app
    data: TenantData = create_app.keywords["data"]
    return data


def get(client: Client, host: str = "localhost:8000", path: str = "/") -> TestResponse:
    return client.get(path, base_url=f"http://{host}", buffered=True)


def sign_up(
    client: Client, host: str = "localhost:8000", form: dict[str, str] = FORM
) -> TestResponse:
    """Load the signup form, then send it as a browser would."""
    page = get(client, host)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert found is not None
    data = {**form, "csrf_token": html.unescape(found.group(1))}
    return client.post("/", base_url=f"http://{host}", data=data, buffered=True)


def follow(client: Client, response: TestResponse) -> TestResponse:
    """Follow redirects (the signup's one-time sign-in link, then the home)."""
    host = "localhost:8000"
    while response.status_code in (302, 303):
        location = urlsplit(response.headers["Location"])
        host = location.netloc or host
        path = f"{location.path}?{location.query}" if location.query else location.path
        response = get(client, host, path)
    return response


def add_tenant(application: TenantDispatcher, slug: str) -> None:
    application.registry.create_tenant(
        slug,
        owner_email=f"owner@{slug}.test",
        subdomain=slug,
        path_prefix=slug,
        config={"greeting": f"Hello from {slug}"},
    )


# -- defaults -------------------------------------------------------------------


def test_defaults(build: Build, cwd: Path) -> None:
    application = build()
    # The SQLite file in the working directory, migrated: a fresh clone works.
    assert sorted(p.name for p in cwd.iterdir() if p.suffix == ".sqlite3") == [
        DEFAULT_FILE
    ]
    assert application.registry.url == f"sqlite:///{DEFAULT_FILE}"
    assert application.base_domain == "localhost"
    assert application.path_routing is True
    # The demo's app, with the demo's notes in files beside the registry's.
    data = data_of(application)
    assert data is not None
    assert data.directory == Path(TENANTS_DIRECTORY)
    assert isinstance(application.default_app, Flask)
    assert application.default_app.import_name == "dispatcher.demo.signup"
    assert not (cwd / TENANTS_DIRECTORY).exists()  # nothing made before a signup

    client = Client(application)
    response = sign_up(client)
    assert response.status_code == 303
    assert response.headers["Location"].startswith(
        "http://acme.localhost:8000/welcome?token="
    )
    home = follow(client, response)
    assert home.status_code == 200
    assert "Welcome to Acme Corp!" in home.text
    assert 'id="no-items-yet"' in home.text
    assert get(client, path="/acme/about").status_code == 200
    assert get(client, "nobody.localhost:8000").status_code == 404
    # The signup created the tenant's data.
    acme = application.registry.get_tenant("acme")
    files = [p.name for p in (cwd / TENANTS_DIRECTORY).iterdir()]
    assert files == [f"{data.schema_name(acme)}.sqlite3"]


def test_without_arguments_it_reads_os_environ(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_BASE_DOMAIN", "Example.COM.")
    monkeypatch.setenv("DISPATCHER_PATH_ROUTING", "0")
    application = make_application()
    try:
        assert application.base_domain == "example.com"
        assert application.path_routing is False
        assert migrate_at_start() is True
        assert (cwd / DEFAULT_FILE).exists()
    finally:
        close(application)


def test_the_database_url_is_honoured(
    build: Build,
    cwd: Path,
    database_url: str,
    tenant_data_location: dict[str, Any],  # drops the tenants' schemas afterwards
) -> None:
    # An empty database: the schema is migrated at start.
    application = build(DISPATCHER_DATABASE_URL=database_url)
    expected = make_url(database_url).render_as_string(hide_password=True)
    assert application.registry.url == expected
    assert list(cwd.iterdir()) == []

    client = Client(application)
    response = sign_up(client)
    assert response.status_code == 303
    assert "Welcome to Acme Corp!" in follow(client, response).text
    with TenantRegistry(database_url) as other:
        [acme] = other.list_tenants()
    assert acme.slug == "acme"
    # The tenant's data lies beside the registry: its database, or its folder.
    data = data_of(application)
    assert data is not None
    assert data.exists(acme)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        assert data.directory == Path(url.database).parent / TENANTS_DIRECTORY
    else:
        assert data.url == url
    assert not (cwd / TENANTS_DIRECTORY).exists()


# -- routing settings -----------------------------------------------------------


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_base_domain_disables_subdomain_routing(
    build: Build, value: str
) -> None:
    application = build(
        DISPATCHER_BASE_DOMAIN=value, DISPATCHER_PATH_ROUTING_HOSTS="localhost"
    )
    assert application.base_domain is None
    add_tenant(application, "beta")
    client = Client(application)

    by_subdomain = get(client, "beta.localhost:8000")
    assert by_subdomain.status_code == 200
    assert "Start your team board" in by_subdomain.text  # the signup site, not beta
    by_path = get(client, "localhost:8000", "/beta/")
    assert by_path.status_code == 200
    assert "Hello from beta" in by_path.text

    # The signup site sends new tenants to their path instead.
    response = sign_up(client)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/acme/welcome?token=")
    assert "Welcome to Acme Corp!" in follow(client, response).text


def test_the_base_domain_is_normalised(build: Build) -> None:
    application = build(DISPATCHER_BASE_DOMAIN=" Example.COM. ")
    assert application.base_domain == "example.com"
    client = Client(application)
    response = sign_up(client, "example.com:8000")
    assert response.status_code == 303
    assert response.headers["Location"].startswith(
        "http://acme.example.com:8000/welcome?token="
    )
    assert "Welcome to Acme Corp!" in follow(client, response).text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", True, id="unset"),
        pytest.param("1", True, id="1"),
        pytest.param("true", True, id="true"),
        pytest.param(" YES ", True, id="yes"),
        pytest.param("on", True, id="on"),
        pytest.param("0", False, id="0"),
        pytest.param("False", False, id="false"),
        pytest.param("no", False, id="no"),
        pytest.param("off", False, id="off"),
    ],
)
def test_path_routing_flag(build: Build, value: str, expected: bool) -> None:
    application = build(DISPATCHER_PATH_ROUTING=value)
    assert application.path_routing is expected
    add_tenant(application, "beta")
    client = Client(application)
    assert get(client, "beta.localhost:8000").status_code == 200
    assert get(client, "localhost:8000", "/beta/").status_code == (
        200 if expected else 404
    )


@pytest.mark.parametrize(("value", "apps"), [("1", 1), ("", 2), ("5", 2)])
def test_max_apps(build: Build, value: str, apps: int) -> None:
    application = build(DISPATCHER_MAX_APPS=value)
    client = Client(application)
    for slug in ("alpha", "beta"):
        add_tenant(application, slug)
        assert get(client, f"{slug}.localhost:8000").status_code == 200
    assert application.stats().apps == apps


def test_other_numbers_are_accepted(build: Build) -> None:
    application = build(
        DISPATCHER_APP_TTL="1.5", DISPATCHER_NEGATIVE_TTL=" 2 ", DISPATCHER_MAX_APPS="7"
    )
    add_tenant(application, "beta")
    assert get(Client(application), "beta.localhost:8000").status_code == 200


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        pytest.param("DISPATCHER_BUILD_TIMEOUT", "0", "greater than 0", id="build"),
        pytest.param("DISPATCHER_MAX_WAITERS", "-1", "at least 0", id="waiters"),
        pytest.param("DISPATCHER_DB_TIMEOUT", "0", "positive", id="db-zero"),
        pytest.param("DISPATCHER_DB_TIMEOUT", "inf", "finite", id="db-infinite"),
    ],
)
def test_a_value_out_of_range_names_the_variable_and_the_rule(
    build: Build, name: str, value: str, rule: str
) -> None:
    with pytest.raises(ValueError, match=f"^{name}: .*must be.*{rule}"):
        build(**{name: value})


def test_timeouts_and_waiters_reach_the_dispatcher_and_registry(build: Build) -> None:
    application = build(
        DISPATCHER_BUILD_TIMEOUT="7.5",
        DISPATCHER_MAX_WAITERS="0",
        DISPATCHER_DB_TIMEOUT="1.5",
    )
    assert application.registry.timeout == 1.5
    assert application.policy.build_timeout == 7.5
    assert application.policy.max_waiters == 0


def test_a_custom_app_factory(build: Build, cwd: Path) -> None:
    application = build(
        DISPATCHER_APP_FACTORY="dispatcher.demo.tenant_app:create_app",
        DISPATCHER_DEFAULT_APP="dispatcher.demo.signup:create_signup_app",
    )
    assert application.create_app is demo_create_app
    # Not the default factory: no tenant data unless DISPATCHER_TENANT_DATA says.
    client = Client(application)
    assert sign_up(client).status_code == 303
    assert 'id="no-board"' in get(client, "acme.localhost:8000").text
    assert not (cwd / TENANTS_DIRECTORY).exists()


def test_a_shared_app_serves_every_tenant(build: Build) -> None:
    application = build(DISPATCHER_SHARED_APP="shared_app_probe:app")
    from shared_app_probe import app as shared

    assert application.create_app is None
    assert application.shared_apps == (shared,)
    # The demo's notes are the demo app's: a shared app of yours has none.
    assert wsgi.settings.tenant_data({"DISPATCHER_SHARED_APP": "x:y"}) is None
    for slug in ("acme", "globex"):
        add_tenant(application, slug)
    client = Client(application)
    for slug in ("acme", "globex"):
        answer = get(client, f"{slug}.localhost:8000")
        assert answer.text == f"{slug}: Hello from {slug}"
    assert application.stats().apps == 0  # records, not apps
    assert application.stats().shared_tenants == 2


def test_a_shared_app_beside_a_factory_is_a_mixed_deployment(build: Build) -> None:
    application = build(
        DISPATCHER_SHARED_APP="shared_app_probe:app",
        DISPATCHER_APP_FACTORY="shared_app_probe:create_app",
    )
    add_tenant(application, "acme")
    assert get(Client(application), "acme.localhost:8000").text.startswith("acme:")
    assert application.stats().shared_tenants == 1


# -- tenant data ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_tenant_data_setting_means_none(
    build: Build, cwd: Path, value: str
) -> None:
    application = build(DISPATCHER_TENANT_DATA=value)
    assert data_of(application) is None
    client = Client(application)
    assert sign_up(client).status_code == 303
    home = get(client, "acme.localhost:8000")
    assert home.status_code == 200
    assert 'id="no-board"' in home.text
    assert not (cwd / TENANTS_DIRECTORY).exists()


def test_a_named_tenant_data_is_the_demos_and_the_signups(
    build: Build, cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "elsewhere"
    monkeypatch.setenv(DIRECTORY_VARIABLE, str(directory))
    application = build(DISPATCHER_TENANT_DATA="tenant_data_probe:data")
    data = data_of(application)
    assert data is not None
    assert data.directory == directory
    client = Client(application)
    assert sign_up(client).status_code == 303
    assert data.exists(application.registry.get_tenant("acme"))
    assert 'id="no-items-yet"' in get(client, "acme.localhost:8000").text
    assert not (cwd / TENANTS_DIRECTORY).exists()


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param("nonexistent.module:data", "cannot be imported", id="module"),
        pytest.param("dispatcher.demo.data:nope", "cannot be imported", id="attr"),
        pytest.param("os:sep", "is a str, not a dispatcher.data.TenantData", id="type"),
        pytest.param("no colon", "cannot be imported", id="garbage"),
    ],
)
def test_a_bad_tenant_data_setting_stops_the_boot(
    build: Build, cwd: Path, value: str, rule: str
) -> None:
    with pytest.raises(ValueError, match="DISPATCHER_TENANT_DATA=") as raised:
        build(DISPATCHER_TENANT_DATA=value)
    assert repr(value.strip()) in str(raised.value)
    assert rule in str(raised.value)
    assert list(cwd.iterdir()) == []


def test_the_demos_data_needs_a_registry_file(build: Build, cwd: Path) -> None:
    with pytest.raises(ValueError, match="DISPATCHER_TENANT_DATA is unset.*in-memory"):
        build(DISPATCHER_DATABASE_URL="sqlite://", DISPATCHER_MIGRATE="0")
    # Said how to run without: no tenant data.
    application = build(
        DISPATCHER_DATABASE_URL="sqlite://",
        DISPATCHER_MIGRATE="0",
        DISPATCHER_TENANT_DATA="",
    )
    assert data_of(application) is None


def test_a_default_app_without_a_provisioner_is_refused_with_tenant_data(
    build: Build, cwd: Path
) -> None:
    with pytest.raises(ValueError, match="DISPATCHER_DEFAULT_APP=.*provisioner="):
        build(DISPATCHER_DEFAULT_APP="tenant_data_probe:landing")
    # Without tenant data it is called as before.
    application = build(
        DISPATCHER_DEFAULT_APP="tenant_data_probe:landing", DISPATCHER_TENANT_DATA=""
    )
    assert get(Client(application)).text == "a landing page"


def test_an_evicted_tenants_sqlite_engine_is_disposed(build: Build) -> None:
    application = build(DISPATCHER_MAX_APPS="1")
    data = data_of(application)
    assert data is not None
    client = Client(application)
    for name in ("acme", "beta"):
        response = sign_up(
            client, form={**FORM, "subdomain": name, "email": f"o@{name}.test"}
        )
        assert response.status_code == 303
    acme = application.registry.get_tenant("acme")
    assert 'id="no-items-yet"' in get(client, "acme.localhost:8000").text
    served = data.engine_for(acme)
    assert data.engine_for(acme) is served
    assert 'id="no-items-yet"' in get(client, "beta.localhost:8000").text
    assert application.stats().apps == 1
    # acme's app was evicted for beta's, and its engine with it.
    assert data.engine_for(acme) is not served


# -- bad settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("DISPATCHER_MAX_APPS", "abc", id="max-apps-abc"),
        pytest.param("DISPATCHER_MAX_APPS", "1.5", id="max-apps-float"),
        pytest.param("DISPATCHER_APP_TTL", "soon", id="app-ttl"),
        pytest.param("DISPATCHER_NEGATIVE_TTL", "5s", id="negative-ttl"),
        pytest.param("DISPATCHER_PATH_ROUTING", "maybe", id="path-routing"),
        pytest.param("DISPATCHER_MIGRATE", "perhaps", id="migrate"),
        pytest.param("DISPATCHER_MAX_WAITERS", "2.5", id="max-waiters-float"),
        pytest.param("DISPATCHER_APP_FACTORY", "nonexistent.module:x", id="no-module"),
        pytest.param("DISPATCHER_APP_FACTORY", "dispatcher.demo:nope", id="no-attr"),
        pytest.param("DISPATCHER_APP_FACTORY", "os:sep", id="not-callable"),
        pytest.param("DISPATCHER_DEFAULT_APP", "nonexistent:x", id="default-module"),
        pytest.param("DISPATCHER_DEFAULT_APP", "os:sep", id="default-not-callable"),
        pytest.param("DISPATCHER_SHARED_APP", "nonexistent:x", id="shared-module"),
        pytest.param("DISPATCHER_SHARED_APP", "os:sep", id="shared-not-callable"),
        pytest.param(
            "DISPATCHER_SHARED_APP", "shared_app_probe:create_app", id="shared-factory"
        ),
    ],
)
def test_a_bad_value_names_the_variable(build: Build, name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name) as raised:
        build(**{name: value})
    assert repr(value) in str(raised.value)


def test_a_bad_database_url_is_a_value_error(build: Build) -> None:
    with pytest.raises(ValueError, match="database URL 'not a url' is not valid"):
        build(DISPATCHER_DATABASE_URL="not a url")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("DISPATCHER_MAX_APPS", "0", id="max-apps-0"),
        pytest.param("DISPATCHER_MAX_TENANTS", "0", id="max-tenants-0"),
        pytest.param("DISPATCHER_APP_TTL", "-1", id="app-ttl-negative"),
        pytest.param("DISPATCHER_NEGATIVE_TTL", "nan", id="negative-ttl-nan"),
        pytest.param("DISPATCHER_BASE_DOMAIN", "localhost:8000", id="base-port"),
    ],
)
def test_an_out_of_range_value_names_the_variable(
    build: Build, name: str, value: str
) -> None:
    with pytest.raises(ValueError, match=name):
        build(**{name: value})


def test_a_short_deployment_secret_stops_the_boot(build: Build) -> None:
    with pytest.raises(ValueError, match="DISPATCHER_SECRET_KEY must be at least 32"):
        build(DISPATCHER_SECRET_KEY="too short")


def test_the_servers_registry_refuses_domains_under_the_base_domain(
    build: Build,
) -> None:
    application = build(DISPATCHER_BASE_DOMAIN="example.com")
    add_tenant(application, "mallory")
    with pytest.raises(InvalidName, match="base domain"):
        application.registry.add_domain("mallory", "victim.example.com")


def test_path_routing_without_a_host_to_route_on_is_refused(build: Build) -> None:
    with pytest.raises(ValueError, match="DISPATCHER_PATH_ROUTING.*path_routing_hosts"):
        build(DISPATCHER_BASE_DOMAIN="")


def test_path_routing_hosts_are_listed_with_commas(build: Build) -> None:
    application = build(
        DISPATCHER_BASE_DOMAIN="example.com",
        DISPATCHER_PATH_ROUTING_HOSTS=" Intranet.Test , 127.0.0.1,",
    )
    add_tenant(application, "beta")
    client = Client(application)
    for host in ("intranet.test", "127.0.0.1:8000", "example.com"):
        assert "Hello from beta" in get(client, host, "/beta/").text, host
    # Any other host does not route by path (it names no tenant either).
    assert get(client, "attacker.test", "/beta/").status_code == 404


def test_a_tenant_header_is_asked_before_host_and_path(build: Build) -> None:
    application = build(
        DISPATCHER_BASE_DOMAIN="example.com", DISPATCHER_TENANT_HEADER="X-Tenant"
    )
    add_tenant(application, "beta")
    client = Client(application)

    by_header = client.get(
        "/", base_url="http://example.com", headers={"X-Tenant": "beta"}
    )
    assert "Hello from beta" in by_header.text
    # Without the header, host and path route as usual.
    assert "Hello from beta" in get(client, "example.com", "/beta/").text
    bad = client.get("/", base_url="http://example.com", headers={"X-Tenant": "B eta"})
    assert bad.status_code == 400


def test_no_tenant_header_unless_configured(build: Build) -> None:
    application = build(DISPATCHER_BASE_DOMAIN="example.com")
    add_tenant(application, "beta")
    client = Client(application)

    response = client.get(
        "/", base_url="http://example.com", headers={"X-Tenant": "beta"}
    )

    assert "Hello from beta" not in response.text


@pytest.mark.parametrize("header", ["X Tenant", "Host", "X_Tenant"])
def test_a_bad_tenant_header_names_the_variable(build: Build, header: str) -> None:
    with pytest.raises(
        ValueError, match=f"^DISPATCHER_TENANT_HEADER: header '{header}'"
    ):
        build(DISPATCHER_TENANT_HEADER=header)


# -- the schema -----------------------------------------------------------------

UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:9/nowhere"


def test_building_the_application_needs_no_database(cwd: Path) -> None:
    # A worker boots, and a crashed one comes back, while the database is down.
    application = make_application({"DISPATCHER_DATABASE_URL": UNREACHABLE})
    try:
        client = Client(application)
        for host, path in [("acme.localhost:8000", "/"), ("localhost:8000", "/acme/")]:
            response = get(client, host, path)
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
        # The signup form itself needs no database.
        assert get(client).status_code == 200
    finally:
        close(application)


def test_migrating_at_start_tolerates_an_outage(
    cwd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="dispatcher.wsgi"):
        assert migrate_at_start({"DISPATCHER_DATABASE_URL": UNREACHABLE}) is False
    [record] = caplog.records
    assert "not migrating the schema at start" in record.getMessage()
    assert "tenantctl db upgrade" in record.getMessage()


def test_migrating_at_start_can_be_turned_off(cwd: Path) -> None:
    assert migrate_at_start({"DISPATCHER_MIGRATE": "0"}) is False
    assert list(cwd.iterdir()) == []


def test_migrating_at_start_upgrades_an_empty_database(database_url: str) -> None:
    assert migrate_at_start({"DISPATCHER_DATABASE_URL": database_url}) is True
    with TenantRegistry(database_url) as registry:
        assert registry.list_tenants() == []


def test_without_migration_an_empty_database_answers_503(
    build: Build, database_url: str
) -> None:
    application = build(DISPATCHER_DATABASE_URL=database_url, DISPATCHER_MIGRATE="0")
    client = Client(application)
    for host, path in [("acme.localhost:8000", "/"), ("localhost:8000", "/acme/")]:
        response = get(client, host, path)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
    # The signup form itself needs no database.
    assert get(client).status_code == 200
    with TenantRegistry(database_url) as other, pytest.raises(SchemaMissing):
        other.list_tenants()


def test_without_migration_a_signup_answers_503(
    build: Build, database_url: str
) -> None:
    application = build(DISPATCHER_DATABASE_URL=database_url, DISPATCHER_MIGRATE="0")
    response = sign_up(Client(application))
    assert response.status_code == 503
    assert "Sign-up is unavailable" in response.text


def test_without_migration_a_migrated_database_works(
    build: Build, registry: TenantRegistry, database_url: str
) -> None:
    registry.create_tenant("beta", owner_email="owner@beta.test", subdomain="beta")
    application = build(DISPATCHER_DATABASE_URL=database_url, DISPATCHER_MIGRATE="0")
    assert get(Client(application), "beta.localhost:8000").status_code == 200


# -- the module-level application -----------------------------------------------


@pytest.fixture
def no_application(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dispatcher.wsgi`` without a built ``application``, restored afterwards."""
    # setitem first, so that undoing removes whatever the test built.
    monkeypatch.setitem(vars(wsgi), "application", None)
    monkeypatch.delitem(vars(wsgi), "application")


def test_importing_the_module_opens_no_database(
    cwd: Path, no_application: None
) -> None:
    importlib.reload(wsgi)
    assert "application" not in vars(wsgi)
    assert list(cwd.iterdir()) == []


def test_a_fresh_import_opens_no_database(cwd: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    code = (
        "import os, dispatcher.wsgi as m\n"
        "assert 'application' not in vars(m)\n"
        "print(sorted(os.listdir('.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert list(cwd.iterdir()) == []


def test_the_application_is_built_on_first_access(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, no_application: None
) -> None:
    monkeypatch.setenv("DISPATCHER_BASE_DOMAIN", "example.com")
    assert "application" not in vars(wsgi)
    assert not (cwd / DEFAULT_FILE).exists()

    application = wsgi.application
    try:
        assert isinstance(application, TenantDispatcher)
        assert application.base_domain == "example.com"
        # A worker boots without its database: nothing connected yet.
        assert not (cwd / DEFAULT_FILE).exists()
        # Built once, then an ordinary module attribute.
        assert vars(wsgi)["application"] is application
        assert wsgi.application is application
        from dispatcher.wsgi import application as imported

        assert imported is application
        page = get(Client(application), "example.com")
        assert page.status_code == 200
        assert "Start your team board" in page.text
    finally:
        close(application)


def test_other_missing_attributes_raise_attribute_error(cwd: Path) -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        wsgi.nope  # noqa: B018
    assert not hasattr(wsgi, "applications")
    assert list(cwd.iterdir()) == []


# -- metrics --------------------------------------------------------------------


def test_metrics_instrument_the_dispatcher_with_its_tenant_data(build: Build) -> None:
    from prometheus_client import REGISTRY

    from dispatcher.metrics import DispatcherMetrics

    application = build(DISPATCHER_METRICS="1", DISPATCHER_METRICS_INTERVAL="0.5")
    metrics = application.observer
    assert isinstance(metrics, DispatcherMetrics)
    try:
        assert metrics.interval == 0.5
        assert metrics.data is data_of(application) is not None
        metrics.sync()
        assert REGISTRY.get_sample_value("tenant_dispatcher_registry_up") == 1
    finally:
        metrics.close()


def test_metrics_are_off_by_default(build: Build) -> None:
    from dispatcher.counts import NO_OBSERVER

    assert build().observer is NO_OBSERVER


def test_a_metrics_path_serves_them_beside_the_tenants(cwd: Path) -> None:
    from dispatcher.wsgi import make_server_app

    environ = {"DISPATCHER_METRICS": "1", "DISPATCHER_METRICS_PATH": "/-/metrics"}
    served = make_server_app(environ)
    migrate_at_start(environ)
    dispatcher = served.app  # type: ignore[attr-defined]
    try:
        client = Client(served)
        page = get(client, "localhost:8000", "/-/metrics")
        assert page.status_code == 200
        assert 'tenant_dispatcher_requests_total{outcome="hit"}' in page.text
        assert client.post("/-/metrics", base_url="http://localhost").status_code == 405
        assert get(client, "localhost:8000", "/").status_code == 200  # the signup site
    finally:
        dispatcher.observer.close()
        close(dispatcher)


def test_a_health_path_serves_the_checks_beside_the_tenants(cwd: Path) -> None:
    from dispatcher.wsgi import make_server_app

    environ = {"DISPATCHER_HEALTH_PATH": "/_health"}
    served = make_server_app(environ)
    migrate_at_start(environ)
    dispatcher = served.app  # type: ignore[attr-defined]
    try:
        client = Client(served)
        assert get(client, "localhost:8000", "/_health/live").status_code == 200
        ready = get(client, "acme.localhost:8000", "/_health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json is not None and ready.json["ready"] is True
        assert get(client, "localhost:8000", "/").status_code == 200  # the signup site
    finally:
        close(dispatcher)


def test_without_mount_paths_the_server_app_is_the_dispatcher(cwd: Path) -> None:
    from dispatcher.wsgi import make_server_app

    served = make_server_app({})
    try:
        assert isinstance(served, TenantDispatcher)
    finally:
        close(served)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"DISPATCHER_METRICS": "maybe"}, "DISPATCHER_METRICS=", id="flag"),
        pytest.param(
            {"DISPATCHER_METRICS": "1", "DISPATCHER_METRICS_INTERVAL": "0"},
            "DISPATCHER_METRICS_INTERVAL='0' must be a number of seconds > 0",
            id="interval",
        ),
        pytest.param(
            {"DISPATCHER_METRICS": "1", "DISPATCHER_METRICS_PATH": "metrics"},
            "DISPATCHER_METRICS_PATH='metrics' must be a path",
            id="path",
        ),
        pytest.param(
            {"DISPATCHER_METRICS_PATH": "/-/metrics"},
            "needs DISPATCHER_METRICS=1",
            id="path without metrics",
        ),
        pytest.param(
            {"DISPATCHER_HEALTH_PATH": "/health check"},
            "DISPATCHER_HEALTH_PATH='/health check' must be a path",
            id="health path",
        ),
    ],
)
def test_a_bad_metrics_setting_names_its_variable(
    cwd: Path, settings: dict[str, str], message: str
) -> None:
    from dispatcher.wsgi import make_server_app

    with pytest.raises(ValueError, match=re.escape(message)):
        make_server_app(settings)

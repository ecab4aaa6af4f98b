"""The demo's notes: each site's own, kept in its own schema or SQLite file.

Through the real dispatcher, as ``dispatcher.wsgi.make_application`` builds it
by default (the demo's app and signup site, the demo's tenant data beside the
registry), on the backend under test; driven by :class:`werkzeug.test.Client`,
which keeps each site's session cookie apart as a browser does.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.test import Client, TestResponse

from dispatcher import Provisioner, TenantDispatcher, TenantRegistry
from dispatcher.context import ENVIRON_KEY
from dispatcher.data import TenantData
from dispatcher.demo import create_app
from dispatcher.demo.data import MAX_NOTE, Base, Note
from dispatcher.wsgi import make_application, migrate_at_start

SECRET = "the-demo-deployment-secret-of-the-notes-tests"
APEX = "localhost:8000"


@pytest.fixture
def site(
    database_url: str,
    tenant_data_location: dict[str, Any],  # drops the tenants' schemas afterwards
) -> Iterator[TenantDispatcher]:
    environ = {
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_SECRET_KEY": SECRET,
        "DISPATCHER_POLL_INTERVAL": "0",  # this process's writes evict at once
    }
    site = make_application(environ)
    migrate_at_start(environ)
    yield site
    site.close()
    site.registry.close()
    data_of(site).dispose()


def data_of(site: TenantDispatcher) -> TenantData:
    """The tenant data the demo's app was given by make_application."""
    assert isinstance(site.create_app, partial)
    data: TenantData = site.create_app.keywords["data"]
    return data


def get(client: Client, host: str, path: str = "/") -> TestResponse:
    return client.get(path, base_url=f"http://{host}", buffered=True)


def post(client: Client, host: str, path: str, data: dict[str, str]) -> TestResponse:
    return client.post(path, base_url=f"http://{host}", data=data, buffered=True)


def token_of(page: TestResponse) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def sign_up(client: Client, name: str, email: str | None = None) -> None:
    form = {
        "organisation": name.title(),
        "subdomain": name,
        "email": email or f"owner@{name}.test",
        "csrf_token": token_of(get(client, APEX)),
    }
    assert post(client, APEX, "/", form).status_code == 303


def add_note(
    client: Client, host: str, body: str, prefix: str = "", token: str | None = None
) -> TestResponse:
    if token is None:
        token = token_of(get(client, host, f"{prefix}/"))
    return post(client, host, f"{prefix}/notes", {"body": body, "csrf_token": token})


def notes_on(page: TestResponse) -> list[str]:
    return [
        html.unescape(note)
        for note in re.findall(r'<li class="note">(.*?)</li>', page.text, re.S)
    ]


def stored(site: TenantDispatcher, slug: str) -> list[str]:
    """The notes in the tenant's own data, read past the app."""
    data = data_of(site)
    with data.sessionmaker_for(site.registry.get_tenant(slug))() as session:
        return list(session.scalars(select(Note.body).order_by(Note.id)))


def note_error_of(page: TestResponse) -> str | None:
    found = re.search(
        r'<p class="error" id="note-error" role="alert">(.*?)</p>', page.text
    )
    return None if found is None else html.unescape(found.group(1))


# -- adding and showing ---------------------------------------------------------------


def test_a_note_is_kept_and_shown_newest_first(site: TenantDispatcher) -> None:
    client = Client(site)
    sign_up(client, "acme")
    host = "acme.localhost:8000"
    assert 'id="no-notes-yet"' in get(client, host).text

    first = add_note(client, host, "  first  ")
    assert first.status_code == 303
    assert first.headers["Location"] == "/"
    assert add_note(client, host, "<b>second</b>").status_code == 303

    page = get(client, host)
    assert notes_on(page) == ["<b>second</b>", "first"]
    assert "<b>second</b>" not in page.text  # escaped
    assert stored(site, "acme") == ["first", "<b>second</b>"]
    # The same site under its path prefix: the same notes, its own links.
    by_path = get(client, APEX, "/acme/")
    assert notes_on(by_path) == ["<b>second</b>", "first"]
    assert 'action="/acme/notes"' in by_path.text


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        pytest.param("", 422, "Please write a note.", id="empty"),
        pytest.param("   ", 422, "Please write a note.", id="blank"),
        pytest.param(
            "x" * (MAX_NOTE + 1),
            422,
            f"The note is longer than {MAX_NOTE} characters.",
            id="too-long",
        ),
        pytest.param("a\x00b", 422, "The note holds control characters.", id="nul"),
        pytest.param("a\x1bb", 422, "The note holds control characters.", id="escape"),
    ],
)
def test_a_bad_note_is_refused_and_writes_nothing(
    site: TenantDispatcher, body: str, status: int, error: str
) -> None:
    client = Client(site)
    sign_up(client, "acme")
    host = "acme.localhost:8000"

    refused = add_note(client, host, body)

    assert refused.status_code == status
    assert note_error_of(refused) == error
    assert notes_on(refused) == []
    assert stored(site, "acme") == []


def test_a_note_of_the_longest_length_is_kept(site: TenantDispatcher) -> None:
    client = Client(site)
    sign_up(client, "acme")
    longest = "é" * MAX_NOTE  # characters, not bytes
    assert add_note(client, "acme.localhost:8000", longest).status_code == 303
    assert stored(site, "acme") == [longest]


def test_a_note_needs_the_sites_form_token(site: TenantDispatcher) -> None:
    client = Client(site)
    sign_up(client, "acme")
    host = "acme.localhost:8000"
    for token in ("", "forged"):
        refused = add_note(client, host, "sneaky", token=token)
        assert refused.status_code == 400
        assert note_error_of(refused) == "The form expired; please send it again."
    assert stored(site, "acme") == []


# -- isolation ------------------------------------------------------------------------


def test_one_sites_notes_never_show_on_another(site: TenantDispatcher) -> None:
    client = Client(site)
    for name in ("acme", "beta"):
        sign_up(client, name)
    assert add_note(client, "acme.localhost:8000", "acme's secret").status_code == 303
    assert add_note(client, APEX, "beta's secret", prefix="/beta").status_code == 303

    for slug in ("acme", "beta"):
        for host, path in ((f"{slug}.localhost:8000", "/"), (APEX, f"/{slug}/")):
            page = get(client, host, path)
            assert page.status_code == 200
            assert notes_on(page) == [f"{slug}'s secret"]
    assert stored(site, "acme") == ["acme's secret"]
    assert stored(site, "beta") == ["beta's secret"]


def test_one_sites_form_token_is_refused_by_another(site: TenantDispatcher) -> None:
    client = Client(site)
    for name in ("acme", "beta"):
        sign_up(client, name)
    acme_token = token_of(get(client, APEX, "/acme/"))
    beta_token = token_of(get(client, APEX, "/beta/"))
    assert acme_token != beta_token

    refused = add_note(client, APEX, "from acme's page", "/beta", token=acme_token)

    assert refused.status_code == 400
    assert stored(site, "beta") == []
    assert stored(site, "acme") == []


def test_a_site_made_again_on_a_removed_ones_name_starts_empty(
    site: TenantDispatcher,
) -> None:
    client = Client(site)
    sign_up(client, "acme")
    assert add_note(client, "acme.localhost:8000", "old").status_code == 303
    data = data_of(site)
    Provisioner(site.registry, on_delete=[data.archive]).delete("acme")

    # The owner's account stays; another signs up on the free name.
    sign_up(client, "acme", email="new-owner@acme.test")

    page = get(client, "acme.localhost:8000")
    assert page.status_code == 200
    assert 'id="no-notes-yet"' in page.text
    assert stored(site, "acme") == []


# -- a site without data --------------------------------------------------------------


def test_a_site_made_without_its_data_has_no_notes(site: TenantDispatcher) -> None:
    registry: TenantRegistry = site.registry
    bare = registry.create_tenant(
        "bare", owner_email="owner@bare.test", subdomain="bare", path_prefix="bare"
    )
    client = Client(site)
    host = "bare.localhost:8000"

    page = get(client, host)
    assert page.status_code == 200
    assert 'id="no-notes"' in page.text
    assert 'action="/notes"' not in page.text
    refused = add_note(client, host, "where to?")
    assert refused.status_code == 409
    assert note_error_of(refused) == "This site keeps no notes."
    # Never made behind the registry's back, not even as an empty file.
    data = data_of(site)
    assert not data.exists(bare)
    assert data.directory is None or not data.directory.exists()
    # Its visitors' sessions still work.
    token = token_of(page)
    signed_in = post(client, host, "/sign-in", {"visitor": "Ada", "csrf_token": token})
    assert signed_in.status_code == 303
    assert 'id="visitor-name">Ada<' in get(client, host).text


def test_notes_are_counted_per_site_in_the_database(site: TenantDispatcher) -> None:
    """The tables are the tenants' own: a count in one sees none of the other's."""
    client = Client(site)
    for name in ("acme", "beta"):
        sign_up(client, name)
    for body in ("one", "two", "three"):
        assert add_note(client, "acme.localhost:8000", body).status_code == 303
    data = data_of(site)
    counts = {}
    for slug in ("acme", "beta"):
        tenant = site.registry.get_tenant(slug)
        with data.sessionmaker_for(tenant)() as session:
            counts[slug] = session.scalar(select(func.count()).select_from(Note))
    assert counts == {"acme": 3, "beta": 0}


# -- a data server that is down -------------------------------------------------------

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def test_an_unreachable_data_server_is_503_not_no_notes(
    registry: TenantRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure the page cannot tell from missing data is not answered as such."""
    monkeypatch.setenv("DISPATCHER_SECRET_KEY", SECRET)
    acme = registry.create_tenant("acme", owner_email="o@acme.test")
    data = TenantData(UNREACHABLE, metadata=Base.metadata, connect_timeout=2)
    environ = {ENVIRON_KEY: acme}
    try:
        client = Client(create_app(acme, data))
        page = client.get("/", environ_base=environ, buffered=True)
        assert page.status_code == 503
        assert page.headers["Retry-After"] == str(data.retry_after)
        # A form token from the same site without its data (same session key).
        bare = Client(create_app(acme))
        token = token_of(bare.get("/", environ_base=environ, buffered=True))
        cookie = bare.get_cookie("session")
        assert cookie is not None
        client.set_cookie("session", cookie.value)
        posted = client.post(
            "/notes",
            data={"body": "lost?", "csrf_token": token},
            environ_base=environ,
            buffered=True,
        )
        assert posted.status_code == 503
    finally:
        data.dispose()

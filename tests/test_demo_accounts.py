"""The demo's owner accounts from the command line: a site made by
``tenantctl import`` (no signup, so no password) gets its owner's password
through ``tenantctl run SLUG -- set-password``, and its owner signs in.

Real ``tenantctl`` processes on the demo's default configuration (the
registry's database, the demo's tenant data beside it), then the same
configuration served through werkzeug's test client.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import COMMAND_TIMEOUT, TENANTCTL, tenantctl
from werkzeug.test import Client

from dispatcher.wsgi import make_application

CSV = Path(__file__).parent.parent / "scripts" / "demo_tenants.csv"
PASSWORD = "a long enough password"


@pytest.fixture
def environ(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    monkeypatch.chdir(tmp_path)  # the demo's files go beside a SQLite registry
    environ = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_SECRET_KEY": "x" * 32,
    }
    monkeypatch.setenv("DISPATCHER_SECRET_KEY", environ["DISPATCHER_SECRET_KEY"])
    tenantctl(database_url, "db", "upgrade")
    tenantctl(database_url, "import", str(CSV))
    yield environ


def set_password(
    environ: dict[str, str], *answers: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TENANTCTL), "run", "northwind", "--", "set-password"],
        input="".join(f"{answer}\n" for answer in answers),
        capture_output=True,
        text=True,
        env=environ,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def sign_in(client: Client, password: str) -> int:
    base = "http://northwind.localhost:8000"
    page = client.get("/sign-in", base_url=base)
    token = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert token is not None, page.text
    form = {
        "csrf_token": html.unescape(token.group(1)),
        "email": "owner@northwind.test",
        "password": password,
    }
    return client.post("/sign-in", base_url=base, data=form).status_code


def test_an_imported_sites_owner_sets_a_password_and_signs_in(
    environ: dict[str, str],
) -> None:
    done = set_password(environ, PASSWORD, PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "owner@northwind.test was made, with that password" in done.stdout

    application = make_application(environ)
    try:
        client = Client(application)
        assert sign_in(client, "not the password") == 400
        assert sign_in(client, PASSWORD) == 303
    finally:
        # The demo's tenant data has an engine of its own: disposed, or its
        # pooled connection is dropped open in some later test.
        application.close()
        application.registry.close()
        application.create_app.keywords["data"].dispose()  # type: ignore[union-attr]


def test_a_short_password_is_refused_in_one_line(environ: dict[str, str]) -> None:
    done = set_password(environ, "short", "short")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "Error: tenant 'northwind': The password must be at least 10 characters long."
    ]

"""A deployment for code run outside requests: ``tenantctl run``/``each`` and
RQ workers import it (with ``tests/`` on the path).

``DISPATCHER_APP_FACTORY=tenant_jobs_probe:create_app``: a Flask app per
tenant keeping the demo's notes in its tenant's data, at
``$PROBE_DATA_URL`` (and, for SQLite files, ``$PROBE_DATA_DIRECTORY``), with
commands to drive from ``tenantctl run`` and functions to run as jobs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from flask import Flask
from sqlalchemy import func, select

from dispatcher.context import current_tenant
from dispatcher.data import TenantData
from dispatcher.demo.data import Base, Note
from dispatcher.tenant import Tenant

URL_VARIABLE = "PROBE_DATA_URL"
DIRECTORY_VARIABLE = "PROBE_DATA_DIRECTORY"

#: Module-level state a command leaves behind: what ``each`` must not let one
#: tenant's run see of another's.
SEEN: list[str] = []


def make_data() -> TenantData:
    directory = os.environ.get(DIRECTORY_VARIABLE)
    location: dict[str, Any] = {"url": os.environ[URL_VARIABLE]}
    if directory:
        location["directory"] = directory
    return TenantData(metadata=Base.metadata, **location)


_made: dict[str, TenantData] = {}


def data() -> TenantData:
    """This process's tenant data, made from its environment when first used."""
    if "data" not in _made:
        _made["data"] = make_data()
    return _made["data"]


def create_app(tenant: Tenant) -> Flask:
    app = Flask(f"tenant_{tenant.slug}")
    data().init_app(app, tenant)

    @app.cli.command("add-note")
    @click.argument("body")
    def add_note_command(body: str) -> None:
        click.echo(f"adding {body!r} to {add_note(body)}")

    @app.cli.command("count-notes")
    def count_notes_command() -> None:
        click.echo(f"{current_tenant.slug} has {count_notes()} notes")

    @app.cli.command("seen")
    def seen_command() -> None:
        SEEN.append(current_tenant.slug)
        click.echo(f"seen: {','.join(SEEN)}")

    @app.cli.command("lines")
    @click.argument("count", type=int)
    def lines_command(count: int) -> None:
        for i in range(count):
            click.echo(f"line {i} of {current_tenant.slug}")
            print(f"stderr {i} of {current_tenant.slug}", file=sys.stderr, flush=True)

    @app.cli.command("exit-with")
    @click.argument("code", type=int)
    def exit_with_command(code: int) -> None:
        click.echo(f"exiting with {code}")
        sys.exit(code)

    @app.cli.command("fail-in")
    @click.argument("slug")
    def fail_in_command(slug: str) -> None:
        if current_tenant.slug == slug:
            raise RuntimeError(f"broken in {slug}")
        click.echo("fine")

    return app


# -- jobs -------------------------------------------------------------------------


def add_note(body: str) -> str:
    """Store a note in the current tenant's data; the tenant's slug."""
    session = data().session
    session.add(Note(body=body))
    session.commit()
    return current_tenant.slug


def count_notes() -> int:
    return data().session.scalar(select(func.count()).select_from(Note)) or 0


def where_am_i() -> tuple[int, int, str]:
    """The worker's process, the app's identity and the tenant's slug."""
    from flask import current_app

    return os.getpid(), id(current_app._get_current_object()), current_tenant.slug  # type: ignore[attr-defined]

"""A serving worker imports only what serving needs.

The worker is built as gunicorn builds it (``dispatcher.wsgi:application``
from ``DISPATCHER_*`` variables, here a hello-world tenant app) in a fresh
interpreter, serves a tenant's request and the default app's, and then lists
the heavy modules it loaded: migrations (Alembic, Mako), the ORM (the registry
reads and serves through SQLAlchemy Core; only writes load the ORM), the CLI
and the demo, and on a SQLite registry SQLAlchemy's PostgreSQL dialect. Click
stays: Flask itself imports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from dispatcher import Tenant, TenantRegistry
from dispatcher.models import metadata

#: Modules (and their submodules) a worker that only serves never needs.
NOT_FOR_SERVING = (
    "alembic",
    "mako",
    "sqlalchemy.orm",
    "sqlalchemy.ext",
    "flask_sqlalchemy",
    "dispatcher.cli",
    "dispatcher.cli_data",
    "dispatcher.migrate",
    "dispatcher.data_migrations",
    "dispatcher.demo",
    "dispatcher.writes",
    "dispatcher.models.schema",
)

HELLO_APP = """
from flask import Flask


def create_app(tenant):
    app = Flask(__name__)

    @app.route("/")
    def index():
        return f"hello {tenant.slug}"

    return app


def default_app(registry, base_domain):
    return create_app(type("Nobody", (), {"slug": "nobody"}))
"""

WORKER = """
import json
import sys
from wsgiref.util import setup_testing_defaults

from dispatcher.wsgi import application

answers = []
for host in ("acme.localhost", "localhost"):
    environ = {"HTTP_HOST": host, "PATH_INFO": "/"}
    setup_testing_defaults(environ)
    statuses = []
    body = b"".join(application(environ, lambda s, h, e=None: statuses.append(s)))
    answers.append([statuses[0], body.decode()])
heavy = sorted(
    name
    for name in sys.modules
    if any(name == top or name.startswith(top + ".") for top in sys.argv[1:])
)
print(json.dumps({"answers": answers, "heavy": heavy}))
"""


def test_a_worker_serves_without_migrations_orm_cli_or_demo(
    registry: TenantRegistry,
    acme: Tenant,
    database_url: str,
    backend: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "hello_light_app.py").write_text(HELLO_APP, encoding="utf-8")
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(tmp_path),
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_SECRET_KEY": "s" * 32,
        "DISPATCHER_APP_FACTORY": "hello_light_app:create_app",
        "DISPATCHER_DEFAULT_APP": "hello_light_app:default_app",
        "DISPATCHER_POLL_INTERVAL": "0",
    }
    heavy = list(NOT_FOR_SERVING)
    if backend == "sqlite":
        heavy.append("sqlalchemy.dialects.postgresql")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WORKER), *heavy],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    worker = json.loads(done.stdout)
    assert worker["answers"] == [["200 OK", "hello acme"], ["200 OK", "hello nobody"]]
    assert worker["heavy"] == []


def test_the_registry_metadata_holds_the_index_serving_leaves_out() -> None:
    """The partial index (one primary domain per tenant) is declared with the
    ORM classes, not with the tables; the package's metadata still has it."""
    [index] = [
        index
        for index in metadata.tables["domains"].indexes
        if index.name == "uq_domains_tenant_id_primary"
    ]
    assert index.unique
    assert str(index.dialect_options["postgresql"]["where"]) == "is_primary"
    assert str(index.dialect_options["sqlite"]["where"]) == "is_primary"


MASTER = """
import json
import sys

from dispatcher.gunicorn_conf import on_starting

on_starting(None)
heavy = sorted(
    name
    for name in sys.modules
    if any(name == top or name.startswith(top + ".") for top in sys.argv[1:])
)
print(json.dumps(heavy))
"""


def test_gunicorns_master_migrates_without_loading_migrations(
    tmp_path: Path,
) -> None:
    """Workers fork from the master, so what it imports is in every worker's
    pages: it migrates in a child of its own and stays as light as a worker."""
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MASTER), *NOT_FOR_SERVING],
        env={"PATH": os.environ.get("PATH", ""), "DISPATCHER_DATABASE_URL": url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    with TenantRegistry(url) as registry:
        assert registry.list_tenants() == []  # migrated: the tables are there


def test_a_failed_migration_at_start_stops_gunicorns_master(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MASTER)],
        env={
            "PATH": os.environ.get("PATH", ""),
            "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
            "DISPATCHER_MIGRATE": "perhaps",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DISPATCHER_MIGRATE='perhaps' must be 1 or 0" in done.stderr


def test_tenant_data_loads_no_flask_until_an_app_is_bound() -> None:
    # tenantctl's data commands (a no-op fleet upgrade must take under a
    # second) import the deployment's TenantData; Flask is for binding apps.
    import subprocess
    import sys

    probe = "import sys, dispatcher.data; print('flask' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == "False"

"""A shared app for ``DISPATCHER_SHARED_APP=shared_app_probe:app`` in tests."""

from __future__ import annotations

from flask import Flask

from dispatcher import current_tenant

app = Flask(__name__)


@app.route("/")
def index() -> str:
    return f"{current_tenant.slug}: {current_tenant.config.get('greeting')}"


def create_app(tenant: object) -> Flask:
    """A factory sharing ``app`` with every tenant (a mixed deployment's)."""
    return app

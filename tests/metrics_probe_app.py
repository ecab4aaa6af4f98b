"""A tenant app for the metrics server test: a tenant whose config says
``broken`` fails to build, every other one answers ``GET /`` with its slug.

``DISPATCHER_APP_FACTORY=metrics_probe_app:create_app`` (with ``tests/`` on
``PYTHONPATH``).
"""

from __future__ import annotations

from flask import Flask

from dispatcher import Tenant


def create_app(tenant: Tenant) -> Flask:
    if tenant.config.get("broken"):
        raise RuntimeError(f"tenant {tenant.slug!r} is set up to fail its build")
    app = Flask(__name__)
    app.add_url_rule("/", "index", lambda: tenant.slug)
    return app

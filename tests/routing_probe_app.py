"""A dispatcher for the server-level routing tests, run by gunicorn or werkzeug.

``gunicorn routing_probe_app:application`` or ``python routing_probe_app.py PORT``
(werkzeug's development server), with ``tests/`` on ``PYTHONPATH`` and
``DISPATCHER_DATABASE_URL`` naming a migrated registry. Tenants are routed on
``example.com`` by subdomain and by path; ``GET /<anything>`` answers what the
tenant app saw: ``{"tenant", "host", "path", "script_root", "external"}``,
``external`` being ``url_for(..., _external=True)`` of its index.
"""

from __future__ import annotations

import os
import sys

from flask import Flask, request, url_for
from werkzeug.serving import run_simple

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.context import current_tenant

BASE = "example.com"


def create_app(tenant: Tenant) -> Flask:
    app = Flask(__name__)

    @app.get("/", defaults={"rest": ""})
    @app.get("/<path:rest>")
    def index(rest: str) -> dict[str, object]:
        return {
            "tenant": current_tenant.slug,
            "host": request.host,
            "path": request.path,
            "script_root": request.script_root,
            "external": url_for("index", _external=True),
        }

    return app


application = TenantDispatcher(
    TenantRegistry(os.environ["DISPATCHER_DATABASE_URL"]),
    create_app,
    base_domain=BASE,
    path_routing=True,
    policy=CachePolicy(poll_interval=None),
)

if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), application)

"""A tenant app for the gunicorn tests: it says which tenant and which worker.

``DISPATCHER_APP_FACTORY=gunicorn_probe_app:create_app`` (with ``tests/`` on
``PYTHONPATH``); ``GET /`` answers ``{"tenant": slug, "pid": worker pid,
"version": version}``, the version of the snapshot the request was routed with.
"""

from __future__ import annotations

import os

from flask import Flask

from dispatcher import Tenant
from dispatcher.context import current_tenant


def create_app(tenant: Tenant) -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> dict[str, object]:
        return {
            "tenant": current_tenant.slug,
            "pid": os.getpid(),
            "version": current_tenant.version,
        }

    return app

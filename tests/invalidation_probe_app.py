"""Tenant app for the invalidation tests: which worker, which tenant version.

``GET /`` answers ``{"tenant", "pid", "version", "config"}`` from the snapshot
the app was built from, so a test sees exactly when each worker rebuilt it.
"""

from __future__ import annotations

import os

from flask import Flask

from dispatcher import Tenant
from dispatcher.tenant import thaw


def create_app(tenant: Tenant) -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> dict[str, object]:
        return {
            "tenant": tenant.slug,
            "pid": os.getpid(),
            "version": tenant.version,
            "config": thaw(tenant.config),
        }

    return app

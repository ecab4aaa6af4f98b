"""A tenant app factory whose ``create_app`` never returns for chosen tenants.

Stands in for a tenant whose app cannot be built, say because ``create_app``
connects to that tenant's own database and the connection never answers,
next to healthy tenants. ``tests/test_hung_build.py`` and ``scripts/bench.py``
serve it to show that such a tenant does not starve the others::

    HUNG_TENANT_SLUGS=hung \\
    DISPATCHER_APP_FACTORY=hung_tenant_app:create_app PYTHONPATH=scripts \\
        gunicorn -k gthread --threads 4 -w 2 dispatcher.wsgi:application

``HUNG_TENANT_SLUGS``: comma-separated slugs whose build blocks forever
(default ``hung``; empty: none). Read at each build, so a test can set it in
the server's environment. Every other tenant gets a tiny Flask app whose
``GET /`` answers ``{"tenant": slug, "pid": worker pid}``.

A thread stuck in a hung build never ends, so a server stopped gracefully waits
for it until its graceful timeout (gunicorn ``--graceful-timeout``) runs out.
"""

from __future__ import annotations

import os
import threading

from flask import Flask

from dispatcher import Tenant

__all__ = ["HUNG_TENANT_SLUGS", "create_app", "hung_slugs"]

#: The environment variable naming the tenants whose build hangs.
HUNG_TENANT_SLUGS = "HUNG_TENANT_SLUGS"
DEFAULT_HUNG = "hung"


def hung_slugs() -> frozenset[str]:
    """The slugs ``HUNG_TENANT_SLUGS`` names (default ``hung``)."""
    value = os.environ.get(HUNG_TENANT_SLUGS, DEFAULT_HUNG)
    return frozenset(slug.strip() for slug in value.split(",") if slug.strip())


def create_app(tenant: Tenant) -> Flask:
    """A small app for ``tenant``; never returns if its slug is a hung one."""
    if tenant.slug in hung_slugs():
        # An event nobody sets: blocked like a connect that never completes.
        threading.Event().wait()
    app = Flask(f"tenant_{tenant.slug}")
    slug = tenant.slug

    @app.get("/")
    def index() -> dict[str, object]:
        return {"tenant": slug, "pid": os.getpid()}

    return app

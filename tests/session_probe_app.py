"""A tenant app for the session server tests: log in, ask who is logged in.

``DISPATCHER_APP_FACTORY=session_probe_app:create_app`` (with ``tests/`` on
``PYTHONPATH``) and ``DISPATCHER_SECRET_KEY`` as the deployment secret.
``POST /login`` with form field ``user`` logs in, ``POST /logout`` logs out,
``GET /whoami`` answers ``{"tenant", "user", "pid"}``.
"""

from __future__ import annotations

import os

from flask import Flask, request, session

from dispatcher import Tenant
from dispatcher.sessions import init_tenant_sessions


def create_app(tenant: Tenant) -> Flask:
    app = Flask(__name__)
    init_tenant_sessions(app, tenant, os.environ["DISPATCHER_SECRET_KEY"])

    def answer() -> dict[str, object]:
        return {"tenant": tenant.slug, "user": session.get("user"), "pid": os.getpid()}

    @app.post("/login")
    def login() -> dict[str, object]:
        session["user"] = request.form["user"]
        return answer()

    @app.post("/logout")
    def logout() -> dict[str, object]:
        session.clear()
        return answer()

    @app.get("/whoami")
    def whoami() -> dict[str, object]:
        return answer()

    return app

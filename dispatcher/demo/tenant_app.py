"""The demo tenant app: a page per tenant, and a visitor session to show isolation.

Public pages show what is meant to be public (the site's name, greeting and
colour), never the owner's e-mail or the rest of the config, which may hold
secrets. A visitor can "sign in" under a name of their choosing (no
password: a demo of the session, not of authentication); the name lives in
the site's session cookie, which :func:`init_tenant_sessions` signs with a
key of the tenant's own and scopes to the tenant's host and path, so signing
in on one site never signs you in or out of another. The deployment secret
comes from ``DISPATCHER_SECRET_KEY`` (see :mod:`dispatcher.demo.secret`).
"""

from __future__ import annotations

import re
import secrets

from flask import Flask, Response, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from dispatcher.context import current_tenant
from dispatcher.demo.secret import deployment_secret
from dispatcher.sessions import init_tenant_sessions
from dispatcher.tenant import Tenant

# The colour goes into a style attribute, where HTML escaping is not enough.
_SAFE_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]{1,20}")
DEFAULT_COLOUR = "#3b5bdb"
MAX_VISITOR_NAME = 40
_CSRF = "csrf_token"


def create_app(tenant: Tenant) -> Flask:
    """Build tenant ``tenant``'s app from its registry snapshot."""
    app = Flask(__name__)
    app.config["TENANT_SLUG"] = tenant.slug
    init_tenant_sessions(app, tenant, deployment_secret())

    @app.route("/")
    def index() -> Response:
        return page(None, 200)

    @app.route("/about")
    def about() -> str:
        return render_template(
            "about.html", tenant=current_tenant, colour=colour(current_tenant)
        )

    @app.post("/sign-in")
    def sign_in() -> Response | BaseResponse:
        if not token_matches():
            return page("The form expired; please send it again.", 400)
        name = request.form.get("visitor", "").strip()
        if not name:
            return page("Please give a name to sign in with.", 422)
        if len(name) > MAX_VISITOR_NAME:
            return page(f"The name is longer than {MAX_VISITOR_NAME} characters.", 422)
        session["visitor"] = name
        return redirect(url_for("index"), code=303)

    @app.post("/sign-out")
    def sign_out() -> Response | BaseResponse:
        if not token_matches():
            return page("The form expired; please send it again.", 400)
        session.clear()
        return redirect(url_for("index"), code=303)

    return app


def page(error: str | None, status: int) -> Response:
    """The site's home page, with the visitor's sign-in or sign-out form."""
    tenant = current_tenant
    body = render_template(
        "tenant.html",
        tenant=tenant,
        name=site_name(tenant),
        greeting=greeting(tenant),
        colour=colour(tenant),
        visitor=session.get("visitor"),
        csrf_token=csrf_token(),
        error=error,
    )
    return Response(body, status=status)


def csrf_token() -> str:
    # Kept in the (signed, tenant-scoped) session: a form on another site,
    # or another tenant's page, cannot know it.
    token = session.get(_CSRF)
    if not isinstance(token, str):
        token = session[_CSRF] = secrets.token_urlsafe(32)
    return token


def token_matches() -> bool:
    expected = session.get(_CSRF)
    sent = request.form.get(_CSRF, "")
    # Bytes: compare_digest refuses non-ASCII str.
    return isinstance(expected, str) and secrets.compare_digest(
        sent.encode(), expected.encode()
    )


def site_name(tenant: Tenant) -> str:
    value = tenant.config.get("name")
    return value if isinstance(value, str) and value else tenant.slug


def greeting(tenant: Tenant) -> str:
    value = tenant.config.get("greeting")
    return value if isinstance(value, str) else f"Welcome to {tenant.slug}!"


def colour(tenant: Tenant) -> str:
    value = tenant.config.get("color")
    if isinstance(value, str) and _SAFE_COLOUR.fullmatch(value):
        return value
    return DEFAULT_COLOUR

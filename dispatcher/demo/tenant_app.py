"""The demo tenant app: a page per tenant, its notes, and a visitor session.

Public pages show what is meant to be public (the site's name, greeting and
colour), never the owner's e-mail or the rest of the config, which may hold
secrets. A visitor can "sign in" under a name of their choosing (no
password: a demo of the session, not of authentication); the name lives in
the site's session cookie, which :func:`init_tenant_sessions` signs with a
key of the tenant's own and scopes to the tenant's host and path, so signing
in on one site never signs you in or out of another. The deployment secret
comes from ``DISPATCHER_SECRET_KEY`` (see :mod:`dispatcher.demo.secret`).

With a :class:`~dispatcher.data.TenantData` holding the demo's tables
(:mod:`dispatcher.demo.data`), the home page shows the site's notes and takes
new ones, kept in the tenant's own schema or file: no site can read or write
another's. A tenant made without its data (``registry.create_tenant``, or
before ``DISPATCHER_TENANT_DATA`` was set) is served without notes, never given
an empty store behind the registry's back.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Sequence

from flask import Flask, Response, redirect, render_template, request, session, url_for
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from werkzeug.wrappers import Response as BaseResponse

from dispatcher.context import current_tenant
from dispatcher.data import TenantData
from dispatcher.demo.data import MAX_NOTE, Note
from dispatcher.demo.secret import deployment_secret
from dispatcher.sessions import init_tenant_sessions
from dispatcher.tenant import Tenant

# The colour goes into a style attribute, where HTML escaping is not enough.
_SAFE_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]{1,20}")
DEFAULT_COLOUR = "#3b5bdb"
MAX_VISITOR_NAME = 40
#: The newest notes the home page shows.
SHOWN_NOTES = 20
_CSRF = "csrf_token"
# Tab, line feed and carriage return are text; other control characters are
# not (PostgreSQL refuses NUL in text outright).
_TEXT_CONTROLS = frozenset("\t\n\r")


def create_app(tenant: Tenant, data: TenantData | None = None) -> Flask:
    """Build tenant ``tenant``'s app from its registry snapshot.

    ``data``: where the site's notes live (the demo's tables); None: no notes.
    """
    app = Flask(__name__)
    app.config["TENANT_SLUG"] = tenant.slug
    init_tenant_sessions(app, tenant, deployment_secret())
    if data is not None:
        data.init_app(app, tenant)

    def home(
        status: int = 200,
        *,
        error: str | None = None,
        note_error: str | None = None,
        note: str = "",
    ) -> Response:
        notes = stored_notes(data, tenant)
        return page(error, status, notes=notes, note_error=note_error, note=note)

    @app.route("/")
    def index() -> Response:
        return home()

    @app.post("/notes")
    def add_note() -> Response | BaseResponse:
        if not token_matches():
            return home(400, note_error="The form expired; please send it again.")
        body = request.form.get("body", "").strip()
        refused = check_note(body)
        if refused is not None:
            return home(422, note_error=refused, note=body)
        if data is None or not store_note(data, tenant, body):
            return home(409, note_error="This site keeps no notes.")
        return redirect(url_for("index"), code=303)

    @app.route("/about")
    def about() -> str:
        return render_template(
            "about.html", tenant=current_tenant, colour=colour(current_tenant)
        )

    @app.post("/sign-in")
    def sign_in() -> Response | BaseResponse:
        if not token_matches():
            return home(400, error="The form expired; please send it again.")
        name = request.form.get("visitor", "").strip()
        if not name:
            return home(422, error="Please give a name to sign in with.")
        if len(name) > MAX_VISITOR_NAME:
            return home(
                422, error=f"The name is longer than {MAX_VISITOR_NAME} characters."
            )
        session["visitor"] = name
        return redirect(url_for("index"), code=303)

    @app.post("/sign-out")
    def sign_out() -> Response | BaseResponse:
        if not token_matches():
            return home(400, error="The form expired; please send it again.")
        session.clear()
        return redirect(url_for("index"), code=303)

    return app


def page(
    error: str | None,
    status: int,
    *,
    notes: Sequence[Note] | None = None,
    note_error: str | None = None,
    note: str = "",
) -> Response:
    """The site's home page: the visitor's sign-in or sign-out form, the notes.

    ``notes`` None: the site keeps none; ``note``: the text to put back in the
    form after a refusal.
    """
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
        notes=notes,
        note_error=note_error,
        note=note,
        max_note=MAX_NOTE,
    )
    return Response(body, status=status)


def stored_notes(data: TenantData | None, tenant: Tenant) -> list[Note] | None:
    """The site's newest notes, or None when it keeps none."""
    if data is None:
        return None
    newest = select(Note).order_by(Note.id.desc()).limit(SHOWN_NOTES)
    try:
        return list(data.session.scalars(newest))
    except DBAPIError:
        if has_no_data(data, tenant):
            return None
        raise


def store_note(data: TenantData, tenant: Tenant, body: str) -> bool:
    """Add a note to the site's data; False when the site has none."""
    try:
        data.session.add(Note(body=body))
        data.session.commit()
    except DBAPIError:
        if has_no_data(data, tenant):
            return False
        raise
    return True


def has_no_data(data: TenantData, tenant: Tenant) -> bool:
    """After a failed statement: whether the site has no data of its own.

    Only then is the failure an answer ("no notes"); anything else (a server
    that is down, say) is raised on, for the data's 503.
    """
    data.session.rollback()
    return not data.exists(tenant)


def check_note(body: str) -> str | None:
    """Why a note cannot be kept, or None when it can."""
    if not body:
        return "Please write a note."
    if len(body) > MAX_NOTE:
        return f"The note is longer than {MAX_NOTE} characters."
    if any(
        unicodedata.category(char) == "Cc" and char not in _TEXT_CONTROLS
        for char in body
    ):
        return "The note holds control characters."
    return None


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

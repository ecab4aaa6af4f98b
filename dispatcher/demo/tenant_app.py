"""The demo tenant app: a team board per site, its owner's sign-in and settings.

Every site keeps its board (tasks to add, mark done and delete), its owner's
account and its spent sign-in links in its own schema or SQLite file
(:mod:`dispatcher.demo.data`): no site can read or write another's. The owner
is signed in by the one-time link the signup hands over
(:mod:`dispatcher.demo.handover`), or by e-mail and password; the session
cookie is the site's own (:func:`init_tenant_sessions`: a key per tenant, a
cookie scoped to the tenant's host and path), so a session of one site is
never valid on another. A session keeps a stamp of the owner's password
hash: a new password (``tenantctl run SLUG -- set-password``) signs every
browser out. The deployment secret comes from ``DISPATCHER_SECRET_KEY`` (see
:mod:`dispatcher.demo.secret`).

The site's own errors (an unknown path, a wrong method) are the demo's answer
page in the site's colour with a link back to its board, with werkzeug's
status and headers (``Allow`` on 405).

Visitors who are not signed in see the board read-only, and what is meant to
be public (the site's name, greeting and colour): never the owner's e-mail
or the rest of the config, which may hold secrets.

The owner's settings (name, greeting, colour, custom domains) are written
through the registry given as ``registry=``: the write evicts this process's
app at once and reaches every other process through the change feed, so the
next page shows it without a restart. Without a registry the settings page
says they are unavailable. A tenant made without its data
(``registry.create_tenant``) is served without a board, never given an empty
store behind the registry's back.
"""

from __future__ import annotations

import math
import secrets
import sys
import unicodedata
from typing import Any

import click
from flask import Flask, Response, redirect, render_template, request, session, url_for
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from dispatcher.data import TenantData
from dispatcher.demo import handover
from dispatcher.demo.accounts import (
    check_sign_in,
    password_problem,
    password_stamp,
    set_password,
)
from dispatcher.demo.answers import page_templates
from dispatcher.demo.data import MAX_ITEM, MAX_ITEM_ID, Item
from dispatcher.demo.ratelimit import RateLimiter, client_key
from dispatcher.demo.secret import deployment_secret
from dispatcher.demo.site_settings import (
    DEFAULT_COLOUR,
    MAX_GREETING,
    MAX_SITE_NAME,
    SettingRefused,
    clean_colour,
    clean_greeting,
    clean_site_name,
    shown_colour,
)
from dispatcher.exceptions import (
    Conflict,
    InvalidConfig,
    InvalidName,
    RegistryUnavailable,
    SchemaMissing,
    TenantNotFound,
)
from dispatcher.registry import TenantRegistry
from dispatcher.sessions import init_tenant_sessions
from dispatcher.tenant import Tenant

__all__ = ["DEFAULT_COLOUR", "SHOWN_ITEMS", "create_app"]

#: The newest items the board shows.
SHOWN_ITEMS = 100
#: Sign-in attempts allowed per client address in any SIGN_IN_WINDOW seconds,
#: per site and process (see dispatcher.demo.ratelimit).
SIGN_IN_LIMIT = 10
SIGN_IN_WINDOW = 60.0
_CSRF = "csrf_token"
_OWNER = "owner"
_STAMP = "password_stamp"
# Tab, line feed and carriage return are text; other control characters are
# not (PostgreSQL refuses NUL in text outright).
_TEXT_CONTROLS = frozenset("\t\n\r")
_EXPIRED = "The form expired; please send it again."
_WRONG = "The e-mail address or the password is wrong."
_LINK_REFUSED = (
    "This sign-in link has expired or was used already; sign in with your password."
)
_SAVE_FAILED = "Settings cannot be saved right now; please try again in a moment."
ResponseLike = Response | BaseResponse


def create_app(
    tenant: Tenant,
    data: TenantData | None = None,
    registry: TenantRegistry | None = None,
) -> Flask:
    """Build tenant ``tenant``'s board from its registry snapshot.

    ``data``: where the site's board and owner live (the demo's tables); None:
    no board, no owner. ``registry``: where the owner's settings are written;
    None: the settings page says they are unavailable.
    """
    app = Flask(__name__)
    app.config["TENANT_SLUG"] = tenant.slug
    secret = deployment_secret()
    init_tenant_sessions(app, tenant, secret)
    if data is not None:
        data.init_app(app, tenant)
    limiter = RateLimiter(SIGN_IN_LIMIT, SIGN_IN_WINDOW)
    templates = page_templates()

    def owner() -> str | None:
        """The signed-in owner's address, or None: a session signed in
        before the password last changed is signed out."""
        email, stamp = session.get(_OWNER), session.get(_STAMP)
        if not (isinstance(email, str) and isinstance(stamp, str)):
            return None
        current = stamp_of(email)
        if current is None or not secrets.compare_digest(current, stamp):
            return None
        return email

    def stamp_of(email: str) -> str | None:
        """``email``'s account's password stamp; None: no such account."""
        if data is None:
            return None
        try:
            return password_stamp(data.session, email)
        except DBAPIError:
            # As stored_items: a site without data has no accounts; anything
            # else is raised on, for the data's 503.
            data.session.rollback()
            if not data.exists(tenant):
                return None
            raise

    def start_session(email: str, stamp: str) -> None:
        """Sign ``email`` in: a fresh session, so nothing from before carries over."""
        session.clear()
        session[_OWNER] = email
        session[_STAMP] = stamp
        session[_CSRF] = secrets.token_urlsafe(32)

    def find_item(item_id: int) -> Item | None:
        assert data is not None
        if item_id > MAX_ITEM_ID:
            return None  # no such row; the query would overflow the column
        return data.session.get(Item, item_id)

    @app.errorhandler(HTTPException)
    def styled(error: HTTPException) -> ResponseLike:
        # The site's own page, never werkzeug's bare one. Rendered without
        # the site's context (no owner to look up): the data may be down.
        response = error.get_response()
        page = templates.get_template("answer.html").render(
            heading=error.name,
            lines=[error.description],
            retry_after=None,
            back_url=url_for("index"),
            back_label="Back to the board",
            colour=shown_colour(tenant.config.get("color")),
        )
        response.set_data(page)
        return response

    @app.context_processor
    def site() -> dict[str, Any]:
        return {
            "tenant": tenant,
            "name": site_name(tenant),
            "colour": shown_colour(tenant.config.get("color")),
            "owner": owner(),
            "csrf_token": csrf_token(),
        }

    def board(
        status: int = 200, *, error: str | None = None, item: str = ""
    ) -> Response:
        items = stored_items(data, tenant)
        page = render_template(
            "board.html",
            greeting=greeting(tenant),
            items=items,
            error=error,
            item=item,
            max_item=MAX_ITEM,
        )
        return Response(page, status=status)

    def refused() -> Response | None:
        """The answer to a board change that may not be made, or None."""
        if not token_matches():
            return board(400, error=_EXPIRED)
        if owner() is None:
            return board(403, error="Please sign in to change the board.")
        if data is None or stored_items(data, tenant) is None:
            return board(409, error="This site keeps no board.")
        return None

    @app.get("/")
    def index() -> Response:
        return board()

    @app.post("/items")
    def add_item() -> ResponseLike:
        answer = refused()
        if answer is not None:
            return answer
        body = request.form.get("body", "").strip()
        problem = item_problem(body)
        if problem is not None:
            return board(422, error=problem, item=body)
        assert data is not None
        data.session.add(Item(body=body))
        data.session.commit()
        return redirect(url_for("index"), code=303)

    @app.post("/items/<int:item_id>/done")
    def toggle_item(item_id: int) -> ResponseLike:
        answer = refused()
        if answer is not None:
            return answer
        assert data is not None
        item = find_item(item_id)
        if item is None:
            return board(404, error="That task is no longer on the board.")
        item.done = not item.done
        data.session.commit()
        return redirect(url_for("index"), code=303)

    @app.post("/items/<int:item_id>/delete")
    def delete_item(item_id: int) -> ResponseLike:
        answer = refused()
        if answer is not None:
            return answer
        assert data is not None
        item = find_item(item_id)
        if item is not None:
            data.session.delete(item)
            data.session.commit()
        return redirect(url_for("index"), code=303)

    def sign_in_page(status: int = 200, *, error: str | None = None) -> Response:
        email = request.form.get("email", "").strip()
        page = render_template("sign_in.html", error=error, email=email)
        return Response(page, status=status)

    @app.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> ResponseLike:
        if request.method == "GET":
            return sign_in_page()
        if not token_matches():
            return sign_in_page(400, error=_EXPIRED)
        wait = limiter.hit(client_key(request.remote_addr))
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            response = sign_in_page(
                429,
                error=f"Too many attempts; please try again in {seconds} seconds.",
            )
            response.headers["Retry-After"] = str(seconds)
            return response
        email = request.form.get("email", "")
        password = request.form.get("password", "")
        found = None
        if data is not None and stored_items(data, tenant) is not None:
            found = check_sign_in(data.session, email, password)
        stamp = None if found is None else stamp_of(found)
        if found is None or stamp is None:
            return sign_in_page(400, error=_WRONG)
        start_session(found, stamp)
        return redirect(url_for("index"), code=303)

    @app.get("/welcome")
    def welcome() -> ResponseLike:
        token = request.args.get("token", "")
        try:
            link = handover.read_link(secret, tenant, token)
        except handover.InvalidLink:
            return sign_in_page(400, error=_LINK_REFUSED)
        # The link signs the site's owner in: it names nobody (it lands in
        # access logs).
        stamp = stamp_of(tenant.owner_email)
        if data is None or stamp is None:
            return sign_in_page(400, error=_LINK_REFUSED)
        if not handover.spend(data.session, link.nonce):
            return sign_in_page(400, error=_LINK_REFUSED)
        start_session(tenant.owner_email, stamp)
        # A redirect: the token leaves the address bar and the history.
        return redirect(url_for("index"), code=303)

    @app.post("/sign-out")
    def sign_out() -> ResponseLike:
        if not token_matches():
            return board(400, error=_EXPIRED)
        session.clear()
        return redirect(url_for("index"), code=303)

    def settings_page(
        status: int = 200,
        *,
        error: str | None = None,
        form: dict[str, str] | None = None,
        domain: str = "",
    ) -> Response:
        current = {
            "name": site_name(tenant),
            "greeting": greeting(tenant),
            "colour": form_colour(tenant),
        }
        page = render_template(
            "settings.html",
            available=registry is not None,
            error=error,
            saved=request.args.get("saved") == "1" and error is None,
            form=form or current,
            domain=domain,
            domains=tenant.domains,
            max_name=MAX_SITE_NAME,
            max_greeting=MAX_GREETING,
        )
        return Response(page, status=status)

    def settings_refused() -> ResponseLike | None:
        if owner() is None:
            return redirect(url_for("sign_in"), code=303)
        if request.method == "GET":
            return None
        if not token_matches():
            return settings_page(400, error=_EXPIRED)
        if registry is None:
            return settings_page(503)
        return None

    @app.route("/settings", methods=["GET", "POST"])
    def settings() -> ResponseLike:
        answer = settings_refused()
        if answer is not None or request.method == "GET":
            return answer or settings_page()
        assert registry is not None
        form = {
            name: request.form.get(name, "") for name in ("name", "greeting", "colour")
        }
        try:
            config = {
                "name": clean_site_name(form["name"]),
                "greeting": clean_greeting(form["greeting"]),
                "color": clean_colour(form["colour"]),
            }
        except SettingRefused as e:
            return settings_page(422, error=str(e), form=form)
        try:
            registry.update_config(tenant.slug, config)
        except InvalidConfig as e:
            return settings_page(422, error=str(e), form=form)
        except (RegistryUnavailable, SchemaMissing, TenantNotFound):
            return settings_page(503, error=_SAVE_FAILED, form=form)
        return redirect(url_for("settings", saved="1"), code=303)

    @app.post("/settings/domains")
    def add_domain() -> ResponseLike:
        answer = settings_refused()
        if answer is not None:
            return answer
        assert registry is not None
        host = request.form.get("domain", "").strip()
        try:
            registry.add_domain(tenant.slug, host)
        except InvalidName as e:
            refusal = f"The domain cannot be added: {e}."
            return settings_page(422, error=refusal, domain=host)
        except Conflict as e:
            refusal = f"The domain cannot be added: {e}."
            return settings_page(409, error=refusal, domain=host)
        except (RegistryUnavailable, SchemaMissing, TenantNotFound):
            return settings_page(503, error=_SAVE_FAILED, domain=host)
        return redirect(url_for("settings", saved="1"), code=303)

    @app.post("/settings/domains/remove")
    def remove_domain() -> ResponseLike:
        answer = settings_refused()
        if answer is not None:
            return answer
        assert registry is not None
        host = request.form.get("domain", "")
        if host not in tenant.domains:
            return settings_page(404, error="This site has no such domain.")
        try:
            registry.remove_domain(tenant.slug, host)
        except TenantNotFound:
            return settings_page(404, error="This site has no such domain.")
        except (RegistryUnavailable, SchemaMissing):
            return settings_page(503, error=_SAVE_FAILED)
        return redirect(url_for("settings", saved="1"), code=303)

    @app.get("/about")
    def about() -> str:
        return render_template("about.html")

    @app.cli.command("set-password")
    def set_owner_password() -> None:
        """Set the site owner's password (asked for, never an argument).

        For a site made without one, by tenantctl import, say:
        tenantctl run SLUG -- set-password
        """
        if data is None:
            raise click.ClickException("this site has no data to keep accounts in")
        password = click.prompt(
            f"New password for {tenant.owner_email}",
            # Piped in (a script): getpass would warn that it cannot hide it.
            hide_input=sys.stdin.isatty(),
            confirmation_prompt=True,
        )
        problem = password_problem(password)
        if problem is not None:
            raise click.ClickException(problem)
        made = set_password(data.session, tenant.owner_email, password)
        done = "made, with that password" if made else "given the new password"
        click.echo(f"The account of {tenant.owner_email} was {done}.")

    return app


def stored_items(data: TenantData | None, tenant: Tenant) -> list[Item] | None:
    """The board's items, open ones first; None when the site keeps no board."""
    if data is None:
        return None
    newest = select(Item).order_by(Item.done, Item.id.desc()).limit(SHOWN_ITEMS)
    try:
        return list(data.session.scalars(newest))
    except DBAPIError:
        # Only a site without data is an answer ("no board"); anything else (a
        # server that is down, say) is raised on, for the data's 503.
        data.session.rollback()
        if not data.exists(tenant):
            return None
        raise


def item_problem(body: str) -> str | None:
    """Why a task cannot go on the board, or None when it can."""
    if not body:
        return "Please write the task."
    if len(body) > MAX_ITEM:
        return f"The task is longer than {MAX_ITEM} characters."
    if any(
        unicodedata.category(char) == "Cc" and char not in _TEXT_CONTROLS
        for char in body
    ):
        return "The task holds control characters."
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


def form_colour(tenant: Tenant) -> str:
    """The stored colour as ``<input type=color>`` takes it (#rrggbb only)."""
    value = shown_colour(tenant.config.get("color"))
    if len(value) == 4 and value.startswith("#"):
        value = "#" + "".join(c * 2 for c in value[1:])
    if len(value) == 7 and value.startswith("#"):
        return value.lower()
    return DEFAULT_COLOUR

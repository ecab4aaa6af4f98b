"""The demo's default app: the signup page on the apex, "no such site" elsewhere.

A valid signup creates the tenant (its site name is its slug, subdomain and
path prefix) through the provisioner, so its data is made; writes the owner's
account (e-mail and password hash) into the tenant's own data; and sends the
browser to a one-time sign-in link on the new site
(``http://<name>.<base domain>:<port>/welcome?token=...``, see
:mod:`dispatcher.demo.handover`), which the dispatcher serves on that very
request and which lands the owner signed in. An e-mail address that already
owns a site is refused (409): typing an address is no proof of controlling
it, so a signup never adds a site to an existing account.

Each client address may send the form :data:`SIGNUP_LIMIT` times in any
:data:`SIGNUP_WINDOW` seconds, in each process (see
:mod:`dispatcher.demo.ratelimit`); more get 429 with ``Retry-After``. The
address is ``REMOTE_ADDR``, never ``X-Forwarded-For``, which any client can
write: behind a proxy, wrap the dispatcher in werkzeug's ``ProxyFix`` with
the number of proxies you trust, and it sets ``REMOTE_ADDR`` from them.

Any page it does not have, on the apex (``/nobody/``: a site that does not
exist, by path) or on another host (``nobody.localhost``), is the styled
"No such site" page (404) with a link back to the signup page.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from functools import partial

from flask import Flask, Response, redirect, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from dispatcher.data import TenantData
from dispatcher.demo import handover
from dispatcher.demo.accounts import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    add_account,
    password_problem,
)
from dispatcher.demo.links import apex_url, port_suffix, site_address
from dispatcher.demo.ratelimit import RateLimiter, client_key
from dispatcher.demo.secret import deployment_secret
from dispatcher.demo.site_settings import (
    SettingRefused,
    clean_greeting,
    clean_site_name,
)
from dispatcher.exceptions import (
    Conflict,
    InvalidConfig,
    InvalidHost,
    InvalidName,
    OwnerExists,
    RegistryUnavailable,
    SchemaMissing,
)
from dispatcher.provisioning import Provisioner, ProvisioningFailed
from dispatcher.registry import TenantRegistry
from dispatcher.resolve import is_apex, parse_host
from dispatcher.tenant import Tenant
from dispatcher.validation import normalise_email, normalise_label, shown

__all__ = ["CSRF_COOKIE", "SIGNUP_LIMIT", "SIGNUP_WINDOW", "create_signup_app"]

CSRF_COOKIE = "signup_csrf"
MAX_ORGANISATION = 100
BLUE, GREY = "#3b5bdb", "#495057"
#: Form posts allowed per client address in any SIGNUP_WINDOW seconds.
SIGNUP_LIMIT = 5
SIGNUP_WINDOW = 60.0
_NAME_RULE = (
    "must be 1–63 letters, digits or hyphens, not starting or ending with a hyphen"
)


def create_signup_app(
    registry: TenantRegistry,
    base_domain: str | None,
    provisioner: Provisioner | None = None,
    *,
    data: TenantData | None = None,
    limiter: RateLimiter | None = None,
    secret: Callable[[], str] = deployment_secret,
) -> Flask:
    """The signup site for ``registry``; tenants live under ``base_domain``.

    ``provisioner`` creates each tenant (with its data: its ``on_create``
    hooks); ``data`` is where those hooks made it, and where the owner's
    account is written (None: no account, the new site has no board and no
    sign-in). With ``data`` and no provisioner, the provisioner is
    ``Provisioner(registry, on_create=[data.create])``. ``limiter`` counts
    form posts per client address (default: :data:`SIGNUP_LIMIT` in
    :data:`SIGNUP_WINDOW` seconds, in this process). ``secret`` returns the
    deployment secret the sign-in links' keys are derived from (read at each
    signup, as the tenant apps read it at each build).
    """
    app = Flask(__name__)
    if provisioner is None:
        hooks = [] if data is None else [data.create]
        provisioner = Provisioner(registry, on_create=hooks)
    if limiter is None:
        limiter = RateLimiter(SIGNUP_LIMIT, SIGNUP_WINDOW)

    def on_apex() -> bool:
        if base_domain is None:
            return True
        try:
            host = parse_host(request.host)
        except InvalidHost:
            return False
        return host.startswith("[") or is_apex(host, base_domain)

    @app.errorhandler(HTTPException)
    def styled(error: HTTPException) -> tuple[str, int]:
        # Every other path here (/nobody/: a site that does not exist) gets the
        # demo's page, never werkzeug's bare one.
        if error.code == 404 or not on_apex():
            return not_found(), 404
        page = render_template(
            "answer.html",
            heading=error.name,
            lines=[error.description],
            retry_after=None,
            apex=apex(),
            colour=GREY,
        )
        return page, error.code or 500

    @app.route("/", methods=["GET", "POST"])
    def signup() -> Response | BaseResponse | tuple[str, int]:
        if not on_apex():
            return not_found(), 404
        if request.method == "GET":
            return form({}, None, 200)
        fields = {
            name: request.form.get(name, "").strip()
            for name in ("organisation", "subdomain", "email")
        }
        password = request.form.get("password", "")
        # Before any other work: refused and invalid forms count too.
        wait = limiter.hit(client_key(request.remote_addr))
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            message = (
                "Too many sign-ups from your address; please try again in "
                f"{seconds} seconds."
            )
            response = form(fields, message, 429)
            response.headers["Retry-After"] = str(seconds)
            return response
        sent = request.form.get("csrf_token", "")
        expected = request.cookies.get(CSRF_COOKIE, "")
        # Bytes: compare_digest refuses non-ASCII str.
        if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
            return form(fields, "The form expired; please send it again.", 400)
        error = check(fields, password)
        if error is not None:
            return form(fields, error, 422)
        organisation = fields["organisation"]
        try:
            # The rules of the settings page, which could not save them else.
            config = {
                "name": clean_site_name(organisation),
                "greeting": clean_greeting(f"Welcome to {organisation}!"),
            }
        except SettingRefused as e:
            return form(fields, str(e), 422)
        name = normalise_label(fields["subdomain"])
        try:
            tenant = with_owner(password).create(
                name,
                owner_email=fields["email"],
                subdomain=name,
                path_prefix=name,
                config=config,
                # Typing an address proves no control of it: never attach
                # a new site to someone else's account.
                allow_existing_owner=False,
            )
        except (InvalidName, InvalidConfig) as e:
            return form(fields, str(e), 422)
        except OwnerExists:
            message = (
                f"The e-mail address {fields['email']!r} already owns a site "
                "here; please use another address."
            )
            return form(fields, message, 409)
        except Conflict:
            message = f"The site name {name!r} is taken; please choose another."
            return form(fields, message, 409)
        except (RegistryUnavailable, SchemaMissing, ProvisioningFailed):
            return form(fields, "Sign-up is unavailable; please try later.", 503)
        return redirect(first_visit(tenant), code=303)

    def with_owner(password: str) -> Provisioner:
        """The provisioner, plus a last hook writing the owner's account into
        the new tenant's data: if that fails, the tenant is undone too."""
        if data is None:
            return provisioner
        return Provisioner(
            registry,
            on_create=[*provisioner.on_create, partial(add_owner, password=password)],
            on_delete=provisioner.on_delete,
        )

    def add_owner(tenant: Tenant, *, password: str) -> None:
        assert data is not None
        with data.sessionmaker_for(tenant)() as session:
            add_account(session, tenant.owner_email, password)

    def check(fields: dict[str, str], password: str) -> str | None:
        """Why the form cannot make a site, or None (the registry checks again)."""
        if not fields["organisation"]:
            return "Please name your team or organisation."
        if len(fields["organisation"]) > MAX_ORGANISATION:
            return (
                "The team or organisation name is longer than "
                f"{MAX_ORGANISATION} characters."
            )
        value = fields["subdomain"]
        try:
            normalise_label(value)
        except InvalidName:
            return f"The site name {shown(value)} {_NAME_RULE}."
        label = value.lower()
        try:
            normalise_label(label, reserved=registry.reserved)
        except InvalidName:
            return f"The site name {label!r} is reserved; please choose another."
        try:
            normalise_email(fields["email"])
        except InvalidName:
            return (
                f"The e-mail address {shown(fields['email'])} does not look like"
                " name@example.com."
            )
        return password_problem(password)

    def form(fields: dict[str, str], error: str | None, status: int) -> Response:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        page = render_template(
            "signup.html",
            fields=fields,
            error=error,
            csrf_token=token,
            address=site_address("<name>", request.host, base_domain),
            min_password=MIN_PASSWORD,
            max_password=MAX_PASSWORD,
            colour=BLUE,
        )
        response = Response(page, status=status)
        # Double-submit cookie: a cross-site form cannot read it to copy it into
        # the form, and it needs no server-side secret shared between workers.
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict")
        return response

    def first_visit(tenant: Tenant) -> str:
        """The new site's address: its one-time sign-in link when it has an owner."""
        if base_domain is None:
            home = f"/{tenant.slug}/"
        else:
            home = f"{request.scheme}://{tenant.slug}.{base_domain}"
            home += f"{port_suffix(request.host)}/"
        if data is None:
            return home
        token = handover.make_link(secret(), tenant)
        return f"{home}welcome?token={token}"

    def apex() -> str:
        return apex_url(request.scheme, request.host, base_domain)

    def not_found() -> str:
        return render_template("not_found.html", apex=apex(), colour=GREY)

    return app

"""The demo's default app: the signup page on the apex, "no such site" elsewhere.

A valid signup creates the tenant (subdomain and path prefix both its name)
and redirects to ``http://<name>.<base domain>:<port>/``, which the dispatcher
serves on that very request: no restart, no cache to wait for. An e-mail
address that already owns a site is refused (409): typing an address is no
proof of controlling it, so a signup never adds a site to an existing account.

Each client address may send the form :data:`SIGNUP_LIMIT` times in any
:data:`SIGNUP_WINDOW` seconds, in each process (see
:mod:`dispatcher.demo.ratelimit`); more get 429 with ``Retry-After``. The
address is ``REMOTE_ADDR``, never ``X-Forwarded-For``, which any client can
write: behind a proxy, wrap the dispatcher in werkzeug's ``ProxyFix`` with
the number of proxies you trust, and it sets ``REMOTE_ADDR`` from them.
"""

from __future__ import annotations

import math
import secrets

from flask import Flask, Response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from dispatcher.demo.ratelimit import RateLimiter, client_key
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

CSRF_COOKIE = "signup_csrf"
MAX_ORGANISATION = 100
BLUE, GREY = "#3b5bdb", "#495057"
#: Form posts allowed per client address in any SIGNUP_WINDOW seconds.
SIGNUP_LIMIT = 5
SIGNUP_WINDOW = 60.0


def create_signup_app(
    registry: TenantRegistry,
    base_domain: str | None,
    provisioner: Provisioner | None = None,
    *,
    limiter: RateLimiter | None = None,
) -> Flask:
    """The signup site for ``registry``; tenants live under ``base_domain``.

    ``limiter`` counts form posts per client address (default:
    :data:`SIGNUP_LIMIT` in :data:`SIGNUP_WINDOW` seconds, in this process).
    """
    app = Flask(__name__)
    provisioner = provisioner or Provisioner(registry)
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

    @app.route("/", methods=["GET", "POST"])
    def signup() -> Response | BaseResponse | tuple[str, int]:
        if not on_apex():
            page = render_template("not_found.html", apex=apex_url(), colour=GREY)
            return page, 404
        if request.method == "GET":
            return form({}, None, 200)
        fields = {
            name: request.form.get(name, "").strip()
            for name in ("organisation", "subdomain", "email")
        }
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
        error, status = check(fields)
        if error is None:
            # The registry normalises and checks the name (lower-casing it
            # only once it is known to be ASCII).
            name = fields["subdomain"]
            try:
                tenant = provisioner.create(
                    name,
                    owner_email=fields["email"],
                    subdomain=name,
                    path_prefix=name,
                    config={
                        "name": fields["organisation"],
                        "greeting": f"Welcome to {fields['organisation']}!",
                    },
                    # Typing an address proves no control of it: never attach
                    # a new site to someone else's account.
                    allow_existing_owner=False,
                )
            except (InvalidName, InvalidConfig) as e:
                error, status = str(e), 422
            except OwnerExists:
                error = (
                    f"The e-mail address {fields['email']!r} already owns a site "
                    "here; please use another address."
                )
                status = 409
            except Conflict:
                # Only a valid, hence ASCII, name can be taken.
                taken = name.strip().lower()
                error, status = f"The name {taken!r} is taken; choose another.", 409
            except (RegistryUnavailable, SchemaMissing, ProvisioningFailed):
                error, status = "Sign-up is unavailable; please try later.", 503
            else:
                return redirect(tenant_home(tenant.slug), code=303)
        return form(fields, error, status)

    def check(fields: dict[str, str]) -> tuple[str | None, int]:
        if not fields["organisation"]:
            return "Please name your organisation.", 422
        if len(fields["organisation"]) > MAX_ORGANISATION:
            return (
                f"The organisation name is longer than {MAX_ORGANISATION} characters.",
                422,
            )
        return None, 200

    def form(fields: dict[str, str], error: str | None, status: int) -> Response:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        page = render_template(
            "signup.html",
            fields=fields,
            error=error,
            csrf_token=token,
            base_domain=base_domain,
            colour=BLUE,
        )
        response = Response(page, status=status)
        # Double-submit cookie: a cross-site form cannot read it to copy it into
        # the form, and it needs no server-side secret shared between workers.
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict")
        return response

    def port_suffix() -> str:
        host = request.host
        port = host.rpartition(":")[2] if ":" in host.rpartition("]")[2] else ""
        return f":{port}" if port else ""

    def tenant_home(name: str) -> str:
        if base_domain is None:
            return f"/{name}/"
        return f"{request.scheme}://{name}.{base_domain}{port_suffix()}/"

    def apex_url() -> str:
        if base_domain is None:
            return "/"
        return f"{request.scheme}://{base_domain}{port_suffix()}/"

    return app

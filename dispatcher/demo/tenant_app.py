"""The demo tenant app: a page per tenant, greeting and colour from its config."""

from __future__ import annotations

import re

from flask import Flask, render_template

from dispatcher.context import current_tenant
from dispatcher.tenant import Tenant

# The colour goes into a style attribute, where HTML escaping is not enough.
_SAFE_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]{1,20}")
DEFAULT_COLOUR = "#3b5bdb"


def create_app(tenant: Tenant) -> Flask:
    """Build tenant ``tenant``'s app from its registry snapshot."""
    app = Flask(__name__)
    app.config["TENANT_SLUG"] = tenant.slug

    @app.route("/")
    def index() -> str:
        tenant = current_tenant()
        return render_template(
            "tenant.html",
            tenant=tenant,
            greeting=greeting(tenant),
            colour=colour(tenant),
        )

    @app.route("/about")
    def about() -> str:
        tenant = current_tenant()
        return render_template("about.html", tenant=tenant, colour=colour(tenant))

    return app


def greeting(tenant: Tenant) -> str:
    value = tenant.config.get("greeting")
    return value if isinstance(value, str) else f"Welcome to {tenant.slug}!"


def colour(tenant: Tenant) -> str:
    value = tenant.config.get("color")
    if isinstance(value, str) and _SAFE_COLOUR.fullmatch(value):
        return value
    return DEFAULT_COLOUR

"""Helpers for tenant apps: the current tenant, and links that do not trust Host.

Inside a Flask view of a tenant app, :data:`current_tenant` is the tenant the
dispatcher routed the request to, as ``current_app`` is the app::

    from dispatcher import current_tenant

    @app.route("/")
    def index():
        return f"Hello from {current_tenant.slug}"

This module imports neither the dispatcher nor the registry, cache or change
follower: tenant apps use it without loading the machinery that serves them.
"""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from werkzeug.local import LocalProxy

from dispatcher.tenant import Tenant

__all__ = ["ENVIRON_KEY", "current_tenant", "tenant_from_environ", "tenant_url"]

#: The key under which each request's environ carries its :class:`Tenant`.
ENVIRON_KEY = "dispatcher.tenant"


def tenant_from_environ(environ: dict[str, Any]) -> Tenant:
    """The tenant the dispatcher routed this WSGI request to."""
    try:
        tenant: Tenant = environ[ENVIRON_KEY]
    except KeyError:
        raise RuntimeError(
            "this request did not come through a TenantDispatcher"
        ) from None
    return tenant


def _current_tenant() -> Tenant:
    if not has_request_context():
        raise RuntimeError(
            "current_tenant is used outside of a request context: it is the"
            " tenant of the Flask request being handled"
        )
    return tenant_from_environ(request.environ)


#: The tenant of the current Flask request, a proxy like ``current_app``.
#: Outside a request, or for one that no dispatcher routed, using it raises
#: :exc:`RuntimeError`.
current_tenant: Tenant = LocalProxy(_current_tenant)  # type: ignore[assignment]


def tenant_url(
    tenant: Tenant,
    path: str = "/",
    *,
    base_domain: str | None = None,
    scheme: str = "https",
) -> str:
    """An absolute URL on the tenant's canonical host, for e-mails and redirects.

    The host comes from the registry, never from the request's Host header, so a
    spoofed header cannot turn a password-reset link into someone else's site.
    Preference: the primary custom domain, then ``<subdomain>.<base_domain>``,
    then ``<base_domain>/<path prefix>``.
    """
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with '/'")
    if tenant.primary_domain is not None:
        return f"{scheme}://{tenant.primary_domain}{path}"
    if base_domain is not None and tenant.subdomain is not None:
        return f"{scheme}://{tenant.subdomain}.{base_domain}{path}"
    if base_domain is not None and tenant.path_prefix is not None:
        return f"{scheme}://{base_domain}/{tenant.path_prefix}{path}"
    raise ValueError(
        f"tenant {tenant.slug!r} has no domain, and no subdomain or path prefix "
        "to combine with base_domain"
    )

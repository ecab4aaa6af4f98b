"""Helpers for tenant apps: the current tenant, and links that do not trust Host."""

from __future__ import annotations

from typing import Any

from dispatcher.middleware import ENVIRON_KEY
from dispatcher.tenant import Tenant

__all__ = ["current_tenant", "tenant_from_environ", "tenant_url"]


def tenant_from_environ(environ: dict[str, Any]) -> Tenant:
    """The tenant the dispatcher routed this WSGI request to."""
    try:
        tenant: Tenant = environ[ENVIRON_KEY]
    except KeyError:
        raise RuntimeError(
            "this request did not come through a TenantDispatcher"
        ) from None
    return tenant


def current_tenant() -> Tenant:
    """The tenant of the current Flask request (inside a request context)."""
    from flask import request

    return tenant_from_environ(request.environ)


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

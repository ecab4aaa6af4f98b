"""Addresses the demo shows and redirects to, built from the base domain.

The host name always comes from the deployment's base domain, never from the
request's Host header (which any client writes); only the port is the
request's, so a demo on ``localhost:8000`` links to ``acme.localhost:8000``.
"""

from __future__ import annotations

__all__ = ["apex_url", "port_suffix", "site_address"]


def port_suffix(host: str) -> str:
    """``":8000"`` for Host ``localhost:8000`` (or ``[::1]:8000``), else ``""``."""
    after_brackets = host.rpartition("]")[2]
    if ":" not in after_brackets:
        return ""
    port = after_brackets.rpartition(":")[2]
    return f":{port}" if port.isdigit() else ""


def apex_url(scheme: str, host: str, base_domain: str | None) -> str:
    """The signup page: the apex of ``base_domain`` on the request's port."""
    if base_domain is None:
        return "/"
    return f"{scheme}://{base_domain}{port_suffix(host)}/"


def site_address(name: str, host: str, base_domain: str | None) -> str:
    """Where site ``name`` is reached, without the scheme: ``acme.localhost:8000``
    by subdomain, or ``<host>/acme`` by path when there is no base domain."""
    if base_domain is None:
        return f"{host}/{name}"
    return f"{name}.{base_domain}{port_suffix(host)}"

"""``tenantctl serve``'s request handler: werkzeug's, with each line naming
the request's Host and the tenant that answered.

werkzeug's access line says what was asked, not of whom; with every tenant on
one port a developer cannot tell which site answered. Here each line the
handler logs starts with the Host header and the slug of the tenant the
dispatcher routed the request to (``-`` for none)::

    127.0.0.1 - - [...] acme.localhost:5000 tenant=acme "GET / HTTP/1.1" 200 -

The Host is the visitor's text: its control characters (C0, DEL, C1) and
backslashes are escaped as werkzeug escapes the path, so a Host cannot move
the cursor, recolour the terminal or start a line of its own.

At start-up, :func:`addresses` says where the tenants answer: werkzeug's own
"Running on http://127.0.0.1:PORT" names the socket, whose Host is no
tenant's nor the base domain (a 404), so :class:`HideRunningOn` drops that
line from the ``werkzeug`` logger and ``tenantctl serve`` prints these first.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from dispatcher.context import ENVIRON_KEY

__all__ = ["HideRunningOn", "TenantRequestHandler", "addresses", "escape"]


def addresses(base_domain: str | None, host: str, port: int) -> list[str]:
    """What to open in a browser, one line each, the base domain's first.

    The dispatcher routes on the Host header: the base domain reaches the
    default app (and ``/<path prefix>/``), a subdomain of it a tenant. With no
    base domain only custom domains route, so the socket's address is all
    there is to say.
    """
    if base_domain is None:
        return [f"http://{_bracketed(host)}:{port}/ (tenants by their custom domains)"]
    return [
        f"http://{base_domain}:{port}/ (and /<path prefix>/ of a tenant)",
        f"http://<subdomain>.{base_domain}:{port}/ (a tenant by its subdomain)",
    ]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class HideRunningOn(logging.Filter):
    """Drops werkzeug's start-up record, "Running on http://127.0.0.1:PORT"
    (with its development-server warning), whose address answers 404 here.

    Add it to the ``werkzeug`` logger once :func:`addresses` are shown.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return " * Running on " not in record.getMessage()


# What werkzeug's handler escapes in paths (private there): \xNN for C0, DEL
# and C1 controls, and the backslash itself, so an escape cannot be forged.
_CONTROLS = str.maketrans(
    {c: rf"\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]} | {ord("\\"): r"\\"}
)


def escape(text: str) -> str:
    """``text`` safe to write to a terminal on one line."""
    return text.translate(_CONTROLS)


class TenantRequestHandler(WSGIRequestHandler):
    """werkzeug's development request handler; each line it logs names the
    Host and the tenant (pass it to ``run_simple(request_handler=...)``)."""

    def log(self, type: str, message: str, *args: Any) -> None:
        host, tenant = self._host_and_tenant()
        # As arguments, never in the format: a "%" in a Host stays text.
        super().log(type, f"%s tenant=%s {message}", host, tenant, *args)

    def _host_and_tenant(self) -> tuple[str, str]:
        environ = getattr(self, "environ", None)
        if environ is not None:
            host = environ.get("HTTP_HOST")
            tenant = environ.get(ENVIRON_KEY)
            slug = "-" if tenant is None else tenant.slug
        else:
            # Before the request became a WSGI environ (a malformed request
            # line or headers): whatever Host was parsed, if any.
            headers = getattr(self, "headers", None)
            host = None if headers is None else headers.get("Host")
            slug = "-"
        return escape(host) if host else "-", escape(slug)


def check_can_listen(host: str, port: int) -> None:
    """Bind (and let go of) ``host:port`` as the server will, so a port in
    use or a host that does not resolve is said before anything else is.

    :raises socket.gaierror: ``host`` names no address.
    :raises OSError: the address cannot be bound (in use, not this machine's).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    )[0]
    with socket.socket(family, kind, proto) as probe:
        # As werkzeug's server: a port left in TIME_WAIT is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)

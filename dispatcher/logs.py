"""Log lines that say which tenant and which request they are about.

:class:`TenantLogFilter`, attached to a handler, gives every record two
attributes a format string can name: ``tenant`` (the slug, or ``-``) and
``request_id`` (or ``-``). Attach it to the handlers of the process that
serves, and the tenant apps' own lines carry them too::

    import logging

    from dispatcher.logs import TenantLogFilter

    FORMAT = "%(levelname)s [%(tenant)s %(request_id)s] %(name)s: %(message)s"

    handler = logging.StreamHandler()
    handler.addFilter(TenantLogFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)

which writes lines such as::

    ERROR [acme 3f2a...e1] dispatcher.cache: building the app of tenant 'acme' failed
    INFO [acme 3f2a...e1] myapp.views: order 42 paid

or in a ``logging.config.dictConfig`` (gunicorn's ``logconfig_dict``)::

    "filters": {"tenant": {"()": "dispatcher.logs.TenantLogFilter"}},
    "handlers": {"console": {..., "filters": ["tenant"]}},

Where the values come from, first found wins:

1. the record itself: the dispatcher's lines about a tenant pass
   ``extra={"tenant": slug}``, so a line about tenant A logged while a
   request to B is dispatched (A's app evicted to make room) names A;
2. the tenant being built in this context (``create_app``'s own lines);
3. the current request: Flask's request context inside a tenant app, else
   the request the dispatcher is dispatching in this context (a lookup, a
   build, the app's call on a miss). Its tenant is the one the dispatcher
   routed it to, once known.

A request's id is :func:`request_id`: made once per request, when a log line
or the app first asks (a hit that logs nothing makes none), and kept in the
environ under :data:`REQUEST_ID_KEY`. It is the ``X-Request-ID`` header only
where a proxy in front sets it and the deployment says so
(``DISPATCHER_TRUST_REQUEST_ID=1``; see
:func:`dispatcher.settings.trust_request_id`), and only if it is 1 to 128
characters of ``A-Z a-z 0-9 . _ : + / = -``; otherwise 32 random hex digits.
An untrusted or malformed header is ignored, never logged: a visitor cannot
put text of their own in the log.

Importing this module imports neither Flask nor the dispatcher, so a logging
configuration loaded before them (in gunicorn's master, say) stays light.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING

from dispatcher import settings

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["REQUEST_ID_KEY", "TenantLogFilter", "current_environ", "request_id"]

#: The environ key under which a request keeps its id once made.
REQUEST_ID_KEY = "dispatcher.request_id"

#: The request the dispatcher is dispatching in this context (set on its slow
#: path only, reset when it returns): lines logged before the tenant's app
#: runs (a failing build, an outage) carry its request id.
DISPATCHING: ContextVar[WSGIEnvironment | None] = ContextVar(
    "dispatcher_dispatching", default=None
)

#: The slug of the tenant whose app is being built in this context (by the
#: dispatcher's cache, or a maintenance gate for a bypassing request):
#: ``create_app``'s own lines name it, though no request has reached the
#: tenant's app yet.
BUILDING: ContextVar[str | None] = ContextVar("dispatcher_building", default=None)

# Bounded and without spaces, quotes, "%" or control characters: whatever
# the proxy sends lands in log lines verbatim.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def request_id(environ: WSGIEnvironment, *, trust_header: bool | None = None) -> str:
    """This request's id, made on first use and kept in ``environ``.

    :param trust_header: take a valid ``X-Request-ID`` header as the id;
        None: as ``DISPATCHER_TRUST_REQUEST_ID`` says. Only the first call
        of a request decides.
    :raises ValueError: ``DISPATCHER_TRUST_REQUEST_ID`` is neither 1 nor 0.
    """
    found: str | None = environ.get(REQUEST_ID_KEY)
    if found is not None:
        return found
    if trust_header is None:
        trust_header = settings.trust_request_id()
    header = environ.get("HTTP_X_REQUEST_ID") if trust_header else None
    if isinstance(header, str) and _VALID_REQUEST_ID.fullmatch(header):
        made = header
    else:
        made = os.urandom(16).hex()
    kept: str = environ.setdefault(REQUEST_ID_KEY, made)
    return kept


def current_environ() -> WSGIEnvironment | None:
    """The WSGI environ of the request being handled in this context, if any:
    Flask's request context first (the innermost request), then the one the
    dispatcher is dispatching."""
    # Flask is asked only if something loaded it: a process without it has
    # no Flask request to be in.
    if "flask" in sys.modules:
        from flask import has_request_context, request

        if has_request_context():
            environ: WSGIEnvironment = request.environ
            return environ
    return DISPATCHING.get()


class TenantLogFilter(logging.Filter):
    """Gives every record ``tenant`` and ``request_id`` attributes (``-``
    when there is none), keeping those it already has; drops nothing.

    Reads ``DISPATCHER_TRUST_REQUEST_ID`` once, when made: a wrong value
    fails the logging configuration, not a log call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_header = settings.trust_request_id()

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        has_tenant = "tenant" in fields
        has_id = "request_id" in fields
        if has_tenant and has_id:
            return True
        environ = current_environ()
        if not has_tenant:
            building = BUILDING.get()
            if building is not None:
                record.tenant = building
            else:
                record.tenant = "-" if environ is None else _slug(environ)
        if not has_id:
            record.request_id = (
                "-"
                if environ is None
                else request_id(environ, trust_header=self.trust_header)
            )
        return True


def _slug(environ: WSGIEnvironment) -> str:
    # Only reached with a request in reach, so Flask (all that is heavy in
    # dispatcher.context) is loaded already.
    from dispatcher.context import ENVIRON_KEY

    tenant = environ.get(ENVIRON_KEY)
    return "-" if tenant is None else str(tenant.slug)

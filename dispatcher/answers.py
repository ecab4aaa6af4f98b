"""The dispatcher's own HTTP answers, apart from the registry's exceptions.

Like werkzeug's HTTP exceptions they are WSGI apps: the dispatcher calls one
to answer a request no tenant app answers. Replace one by passing an app of
your own::

    from dispatcher import TenantDispatcher

    TenantDispatcher(registry, create_app, disabled_app=my_suspended_page)

Requests that name their tenant malformedly get werkzeug's ``BadRequest``
(400) naming the rule, and those that cannot be served while the registry is
unreachable or an app is slow to build get ``ServiceUnavailable`` (503) with
``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.exceptions import Forbidden, ServiceUnavailable

from dispatcher.context import ENVIRON_KEY
from dispatcher.tenant import MAINTENANCE_RETRY_AFTER, Tenant

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["TenantDisabled", "TenantInMaintenance"]


class TenantDisabled(Forbidden):
    """The default answer for a disabled tenant: 403."""

    description = "This site is currently unavailable. Please contact its owner."


class TenantInMaintenance:
    """The default answer for a tenant in maintenance: 503 with its
    ``Retry-After`` and a page saying so, with its message (HTML-escaped).

    An app of your own (``maintenance_app=``) finds the tenant, and its
    :class:`~dispatcher.tenant.Maintenance`, under
    :data:`~dispatcher.context.ENVIRON_KEY`; it should answer 503 with
    ``Retry-After`` too, so crawlers and clients come back later.
    """

    #: What the page says before the tenant's message.
    description = "This site is down for maintenance. Please try again later."

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        tenant = environ.get(ENVIRON_KEY)
        window = tenant.maintenance if isinstance(tenant, Tenant) else None
        description = self.description
        retry_after = MAINTENANCE_RETRY_AFTER
        if window is not None:
            retry_after = window.retry_after
            if window.message:
                description = f"{description}\n{window.message}"
        # werkzeug escapes the description and turns the line break into <br>.
        answer = ServiceUnavailable(description, retry_after=retry_after)
        response = answer.get_response(environ)
        response.headers["Cache-Control"] = "no-store"
        return response(environ, start_response)

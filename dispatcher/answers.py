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

from werkzeug.exceptions import Forbidden

__all__ = ["TenantDisabled"]


class TenantDisabled(Forbidden):
    """The default answer for a disabled tenant: 403."""

    description = "This site is currently unavailable. Please contact its owner."

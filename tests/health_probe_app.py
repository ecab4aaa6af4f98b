"""A server's application with the health endpoints beside the tenants.

``gunicorn 'health_probe_app:application'`` (with ``tests/`` on ``PYTHONPATH``,
``DISPATCHER_APP_FACTORY=gunicorn_probe_app:create_app`` and
``DISPATCHER_DEFAULT_APP=health_probe_app:default_app``): the
environment-configured dispatcher, and :class:`~dispatcher.health.HealthApp`
mounted at ``/_health`` as the README advises.
"""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from dispatcher.health import HealthApp
from dispatcher.wsgi import make_application


def default_app(registry: Any, base_domain: Any, **options: Any) -> NotFound:
    """For requests that name no tenant: a plain 404 (not the demo's signup)."""
    return NotFound()


dispatcher = make_application()
application = DispatcherMiddleware(dispatcher, {"/_health": HealthApp(dispatcher)})

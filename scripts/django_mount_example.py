"""A Flask tenant app and a real Django app in one interpreter, one server.

Run it (``pip install -e '.[test]'`` brings Django), then open
http://acme.localhost:8000/ (Flask, tenant acme) and
http://acme.localhost:8000/legacy/ (Django, mounted for every host)::

    python scripts/django_mount_example.py --port 8000
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from dispatcher import Tenant, TenantDispatcher, TenantRegistry, current_tenant


def make_django_app() -> Any:
    """A one-file Django project: settings, one URL and its view."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="example-only-not-secret",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def legacy_view(request: Any) -> Any:
    from django.http import JsonResponse
    from django.urls import reverse

    return JsonResponse(
        {
            "framework": "django",
            "path": request.path,
            "path_info": request.path_info,
            "self_url": reverse("legacy"),
        }
    )


def _urlpatterns() -> list[Any]:
    from django.urls import path

    return [path("", legacy_view, name="legacy")]


def create_tenant_app(tenant: Tenant) -> Flask:
    app = Flask(__name__)

    @app.route("/")
    def index() -> dict[str, str]:
        return {"framework": "flask", "tenant": current_tenant.slug}

    return app


def make_application(registry: TenantRegistry) -> DispatcherMiddleware:
    """Django under ``/legacy`` on every host; the tenants everywhere else.

    werkzeug's ``DispatcherMiddleware`` picks the mounted app by path before
    the tenant dispatcher sees the request, so no tenant can shadow it.
    """
    tenants = TenantDispatcher(registry, create_tenant_app, base_domain="localhost")
    return DispatcherMiddleware(tenants, {"/legacy": make_django_app()})


def __getattr__(name: str) -> Any:
    # Django's URL resolver imports ROOT_URLCONF (this module) for urlpatterns.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="sqlite:///django-example.sqlite3")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    registry = TenantRegistry(args.database_url)
    registry.migrate()
    if not registry.find_by_subdomain("acme"):
        registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
    run_simple("127.0.0.1", args.port, make_application(registry))


if __name__ == "__main__":
    sys.exit(main())

"""The WSGI apps the issue 12 benchmarks serve, three ways of serving tenants.

- ``docs``: Flask's documented ``SubdomainDispatcher`` (a dict of apps under
  one lock), every tenant's app built as the module loads: the baseline
  "with every app cached".
- ``per_tenant``: :class:`~dispatcher.TenantDispatcher`, an app per tenant,
  ``max_apps`` of them cached.
- ``shared``: :class:`~dispatcher.TenantDispatcher` serving every tenant with
  one app (``shared_app=``) that reads ``current_tenant``.
- ``wsgi``: ``dispatcher.wsgi``'s application, from ``DISPATCHER_*`` variables.

gunicorn loads ``bench_apps:application`` (``PYTHONPATH=scripts``), built from
the environment as a worker imports it::

    BENCH_KIND=docs|per_tenant|shared|wsgi   BENCH_APP=hello|realistic
    BENCH_TENANTS=2000                  tenants t0 ... t<N-1>.example.com
    BENCH_REGISTRY=sqlite:///...        the registry (per_tenant, shared,
                                        and docs with the realistic app)
    BENCH_MAX_APPS=1000                 CachePolicy.max_apps
    BENCH_REPORT_PID=1                  answer with an X-Worker-Pid header
    BENCH_READY_DIR=/tmp/...            a file named by the worker's pid is
                                        made there once its app is built

The docs pattern imports nothing of ``dispatcher`` (but the realistic app's
tenant lookups), so its worker's memory is Flask's and the apps' alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from threading import Lock
from typing import Any

from flask import Flask

App = Callable[[dict[str, Any], Any], Iterable[bytes]]

#: Every benchmark's tenants: subdomain ``t<i>`` of this domain.
DOMAIN = "example.com"


def tenant_host(index: int) -> str:
    return f"t{index}.{DOMAIN}"


class SubdomainDispatcher:
    """Flask's documentation pattern, verbatim but for the create_app call."""

    def __init__(self, domain: str, create_app: Callable[[str], App]) -> None:
        self.domain = domain
        self.create_app = create_app
        self.lock = Lock()
        self.instances: dict[str, App] = {}

    def get_application(self, host: str) -> App:
        host = host.split(":")[0]
        assert host.endswith(self.domain), "Configuration error"
        subdomain = host[: -len(self.domain)].rstrip(".")
        with self.lock:
            app = self.instances.get(subdomain)
            if app is None:
                app = self.create_app(subdomain)
                self.instances[subdomain] = app
            return app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        app = self.get_application(environ["HTTP_HOST"])
        return app(environ, start_response)


def hello_flask(_tenant: object = None) -> Flask:
    app = Flask("hello")

    @app.route("/")
    def index() -> str:
        return "Hello, World!"

    return app


def shared_hello() -> Flask:
    """The hello app shared by every tenant: it names the request's tenant,
    as a shared app must find its tenant in the request."""
    from dispatcher.context import current_tenant

    app = Flask("hello")

    @app.route("/")
    def index() -> str:
        return f"Hello, {current_tenant.slug}!"

    return app


def tenant_factory(kind: str) -> Callable[[Any], Flask]:
    """``create_app(tenant)`` of the ``hello`` or ``realistic`` app."""
    if kind == "hello":
        return hello_flask
    if kind == "realistic":
        from realistic_app import create_app

        return create_app
    raise ValueError(f"BENCH_APP={kind!r} must be hello or realistic")


def docs_pattern(tenants: int, app: str, registry_url: str | None) -> App:
    """The docs pattern with every tenant's app built now."""
    if app == "hello":
        build: Callable[[str], App] = hello_flask
    else:
        from dispatcher import TenantRegistry

        # The realistic app is built from the tenant's record, as ours is.
        registry = TenantRegistry(_required(registry_url, "BENCH_REGISTRY"))
        create_app = tenant_factory(app)

        def build(subdomain: str) -> App:
            return create_app(registry.find_by_subdomain(subdomain))

    dispatcher = SubdomainDispatcher(DOMAIN, build)
    for index in range(tenants):
        dispatcher.get_application(tenant_host(index))
    return dispatcher


def per_tenant(registry_url: str, max_apps: int, app: str) -> App:
    """The dispatcher with an app per tenant, ``max_apps`` cached."""
    from dispatcher import CachePolicy, TenantDispatcher, TenantRegistry

    return TenantDispatcher(
        TenantRegistry(registry_url),
        tenant_factory(app),
        base_domain=DOMAIN,
        policy=CachePolicy(max_apps=max_apps, poll_interval=None),
    )


def supports_shared_app() -> bool:
    import inspect

    from dispatcher import TenantDispatcher

    return "shared_app" in inspect.signature(TenantDispatcher).parameters


def shared(registry_url: str, max_apps: int) -> App:
    """The dispatcher serving every tenant with one hello app."""
    from dispatcher import CachePolicy, TenantDispatcher, TenantRegistry

    shared_app: Any = {"shared_app": shared_hello()}  # not in older versions
    return TenantDispatcher(
        TenantRegistry(registry_url),
        base_domain=DOMAIN,
        policy=CachePolicy(max_apps=max_apps, poll_interval=None),
        **shared_app,
    )


def not_found(_registry: Any, _base_domain: Any) -> App:
    """``DISPATCHER_DEFAULT_APP`` for ``dispatcher.wsgi`` without the demo."""
    from werkzeug.exceptions import NotFound

    return NotFound()


def report_pid(app: App) -> App:
    """``app``, answering with the serving process's id in ``X-Worker-Pid``."""
    header = ("X-Worker-Pid", str(os.getpid()))

    def wrapped(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            return start_response(status, [*headers, header], exc_info)

        return app(environ, start)

    return wrapped


def from_environ(environ: Mapping[str, str]) -> App:
    """The app the ``BENCH_*`` variables describe."""
    kind = environ.get("BENCH_KIND", "docs")
    tenants = int(environ.get("BENCH_TENANTS", "2000"))
    app_kind = environ.get("BENCH_APP", "hello")
    registry = environ.get("BENCH_REGISTRY")
    max_apps = int(environ.get("BENCH_MAX_APPS", "1000"))
    if kind == "docs":
        app = docs_pattern(tenants, app_kind, registry)
    elif kind == "per_tenant":
        app = per_tenant(_required(registry, "BENCH_REGISTRY"), max_apps, app_kind)
    elif kind == "shared":
        app = shared(_required(registry, "BENCH_REGISTRY"), max_apps)
        # Its steady state, as the docs pattern's is every app built: each
        # tenant asked once (a record each), so no cold lookup is timed.
        _ask_each(app, tenants)
    elif kind == "wsgi":  # as users deploy it: DISPATCHER_* variables
        from dispatcher.wsgi import make_application

        app = make_application(environ)
    else:
        raise ValueError(
            f"BENCH_KIND={kind!r} must be docs, per_tenant, shared or wsgi"
        )
    if environ.get("BENCH_REPORT_PID") == "1":
        app = report_pid(app)
    return app


def _ask_each(app: App, tenants: int) -> None:
    """One request per tenant through ``app``, answers discarded."""
    from werkzeug.test import EnvironBuilder

    for index in range(tenants):
        environ = EnvironBuilder(base_url=f"http://{tenant_host(index)}/").get_environ()
        body = app(environ, lambda status, headers, exc_info=None: None)
        getattr(body, "close", lambda: None)()


def _required(value: str | None, name: str) -> str:
    if not value:
        raise ValueError(f"{name} must be set")
    return value


def __getattr__(name: str) -> Any:
    # Built as gunicorn's worker imports it, not when bench.py imports this.
    if name == "application":
        application = from_environ(os.environ)
        globals()["application"] = application
        ready = os.environ.get("BENCH_READY_DIR")
        if ready:  # every app built: the server may time this worker now
            with open(os.path.join(ready, str(os.getpid())), "w"):
                pass
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The environment-configured ``application`` for WSGI servers.

``gunicorn 'dispatcher.wsgi:application'`` or ``tenantctl serve``. Settings:

==============================  ==============================================
``DISPATCHER_DATABASE_URL``     registry database (default: SQLite file
                                ``dispatcher.sqlite3`` in the working directory)
``DISPATCHER_APP_FACTORY``      ``module:function`` building a tenant's app
                                (default: the demo, ``dispatcher.demo:create_app``)
``DISPATCHER_SHARED_APP``       ``module:attribute`` naming one WSGI app that
                                serves every tenant (``current_tenant`` says
                                which); with ``DISPATCHER_APP_FACTORY`` too, the
                                factory returns it for the tenants that share it
                                (default none: an app per tenant)
``DISPATCHER_DEFAULT_APP``      ``module:function(registry, base_domain)``
                                returning the app for requests that name no
                                tenant (default: the demo's signup site); with
                                tenant data it is also passed ``provisioner=``,
                                a :class:`~dispatcher.provisioning.Provisioner`
                                that creates a new tenant's data
``DISPATCHER_TENANT_DATA``      ``module:attribute`` naming the deployment's
                                :class:`~dispatcher.data.TenantData`: a signup
                                creates the tenant's data, ``tenantctl remove``
                                archives it, an evicted app's SQLite engine is
                                disposed (default: with the demo's app, the
                                demo's notes beside the registry, a schema per
                                tenant or files in ``dispatcher-tenants/``;
                                else none; set empty: none)
``DISPATCHER_BASE_DOMAIN``      subdomain routing base (default ``localhost``;
                                empty: no subdomain routing)
``DISPATCHER_PATH_ROUTING``     ``1``/``0``: route ``/<prefix>/`` (default 1)
``DISPATCHER_PATH_ROUTING_HOSTS`` comma-separated hosts, besides the base
                                domain and its ``www.``, on which ``/<prefix>/``
                                names a tenant (default none)
``DISPATCHER_TENANT_HEADER``    a request header naming the tenant's slug, set by a
                                trusted gateway (``X-Tenant``): asked before the
                                host and path (default none; see
                                :class:`~dispatcher.routes.HeaderResolver`)
``DISPATCHER_<SETTING>``        each setting of :class:`~dispatcher.policy.CachePolicy`
                                by its upper-cased name: ``DISPATCHER_MAX_APPS``
                                (default 1000), ``_MAX_TENANTS`` (10000),
                                ``_APP_TTL`` (3600 s),
                                ``_NEGATIVE_SIZE`` (10000), ``_NEGATIVE_TTL``
                                (5 s), ``_BUILD_TIMEOUT`` (30 s), ``_MAX_WAITERS``
                                (2; keep it below a worker's threads),
                                ``_FAILURE_BACKOFF`` (5 s), ``_STALE_IF_ERROR``
                                (as ``_APP_TTL``), ``_POLL_INTERVAL`` (1 s; 0: do
                                not follow other processes)
``DISPATCHER_DB_TIMEOUT``        seconds a registry read may wait for a lock, a
                                connection or the server before 503 (default 5)
``DISPATCHER_FEED_MAX_AGE``     changes older than this (``7d``, ``12h``) are
                                pruned from the change feed (default 7d)
``DISPATCHER_FEED_MAX_CHANGES`` the feed keeps at most this many changes
                                (default 100000; see :mod:`dispatcher.retention`)
``DISPATCHER_SECRET_KEY``       the deployment secret tenants' session keys are
                                derived from (at least 32 bytes; the demo makes
                                ``dispatcher-secret.key`` when it is unset)
``DISPATCHER_MIGRATE``          ``1``/``0``: upgrade the schema once when the
                                server starts (default 1; see below)
``DISPATCHER_GC``               ``managed``/``off``: freeze the heap after each
                                build and cut evicted apps' cycles (default
                                managed; see :mod:`dispatcher.collector`)
``DISPATCHER_METRICS``          ``1``/``0``: export Prometheus metrics (default
                                0; needs ``pip install
                                'flask-tenant-dispatcher[metrics]'``; see
                                :mod:`dispatcher.metrics`); with the tenant
                                data, its pools too
``DISPATCHER_METRICS_INTERVAL`` seconds between two copies of a process's
                                counts into its metrics (default 1)
``DISPATCHER_METRICS_PATH``     a path (``/-/metrics``) on which
                                ``application`` serves the metrics beside the
                                tenants, for a single-process server
                                (``tenantctl serve``): ANYONE who reaches the
                                port reaches it, so only behind a proxy that
                                keeps visitors out of it (default none)
``DISPATCHER_HEALTH_PATH``      a path (``/_health``) under which ``application``
                                answers ``/live`` and ``/ready`` for probes
                                (:class:`~dispatcher.health.HealthApp`), beside
                                the tenants (default none)
``DISPATCHER_METRICS_ADDRESS``  ``host:port`` where gunicorn's master serves
                                every worker's metrics (on any path; nothing
                                but the metrics)
                                (default ``127.0.0.1:9464``; see
                                :mod:`dispatcher.gunicorn_conf`)
``PROMETHEUS_MULTIPROC_DIR``    ``prometheus_client``'s directory of each
                                worker's metric files, for a server of several
                                processes (``dispatcher.gunicorn_conf`` makes a
                                fresh one when it is unset)
==============================  ==============================================

Building the application opens no database connection, so a worker boots (and
a crashed or recycled one comes back) while the database is down; cold tenants
get 503 until it is back. Migrating is the server start's job, not a worker's:
:func:`migrate_at_start` runs once in gunicorn's master (``gunicorn -c
python:dispatcher.gunicorn_conf ...``) and in ``tenantctl serve``; deploys run
``tenantctl db upgrade``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from dispatcher import collector, settings
from dispatcher.database import DEFAULT_TIMEOUT
from dispatcher.exceptions import RegistryUnavailable
from dispatcher.middleware import TenantDispatcher
from dispatcher.policy import CachePolicy
from dispatcher.provisioning import Provisioner
from dispatcher.registry import TenantRegistry
from dispatcher.routes import HeaderResolver, standard_resolvers
from dispatcher.sessions import MIN_SECRET_BYTES

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from dispatcher.data import TenantData

__all__ = ["make_application", "make_server_app", "migrate_at_start"]

log = logging.getLogger(__name__)

T = TypeVar("T", int, float)

DEFAULT_APP_FACTORY = settings.DEFAULT_APP_FACTORY
DEFAULT_DEFAULT_APP = "dispatcher.demo.signup:create_signup_app"


def make_application(environ: Mapping[str, str] = os.environ) -> TenantDispatcher:
    """Build the dispatcher the ``DISPATCHER_*`` variables describe.

    Every setting is checked, and no database connection is opened: a worker
    must boot whether or not the database is up. With tenant data
    (``DISPATCHER_TENANT_DATA``, or the demo's), the signup app's provisioner
    creates each new tenant's data, and the demo's app keeps its notes there.
    """
    create_app: Callable[..., Any] | None = _load(
        environ, "DISPATCHER_APP_FACTORY", DEFAULT_APP_FACTORY
    )
    shared_app = None
    if environ.get("DISPATCHER_SHARED_APP", "").strip():
        shared_app = _load(environ, "DISPATCHER_SHARED_APP", "")
        _check_wsgi_app(environ, "DISPATCHER_SHARED_APP", shared_app)
        if not environ.get("DISPATCHER_APP_FACTORY", "").strip():
            create_app = None  # every tenant on the shared app, not the demo's
    default_name = environ.get("DISPATCHER_DEFAULT_APP") or DEFAULT_DEFAULT_APP
    default_factory = _load(environ, "DISPATCHER_DEFAULT_APP", DEFAULT_DEFAULT_APP)
    # The dispatcher checks it; the registry and the signup app need the same.
    base_domain = settings.base_domain(environ)
    policy = CachePolicy.from_environ(environ)
    # Read by migrate_at_start; a typo should stop the server here too.
    settings.flag(environ, "DISPATCHER_MIGRATE", True)
    # Read by the collector at the first build: a typo there would fail every
    # tenant's build (500s) instead of this one error at boot.
    collector.managed_from(environ)
    # Read below, after the dispatcher is built: a typo should stop the boot first.
    metrics = settings.metrics_enabled(environ)
    interval = settings.metrics_interval(environ)
    settings.metrics_path(environ)
    # Read by tenant apps as they are built: a weak one fails the boot, not them.
    secret = environ.get("DISPATCHER_SECRET_KEY")
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"DISPATCHER_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes, "
            f"not {len(secret.encode())}"
        )
    routing: dict[str, Any] = {
        "base_domain": base_domain,
        "path_routing": settings.flag(environ, "DISPATCHER_PATH_ROUTING", True),
        "path_routing_hosts": _list(environ, "DISPATCHER_PATH_ROUTING_HOSTS"),
    }
    header = environ.get("DISPATCHER_TENANT_HEADER", "").strip()
    options: dict[str, Any] = {"policy": policy, **routing}
    if header:
        # The header's resolver first, then the standard ones: a request
        # without the header is routed by host and path as usual.
        try:
            options = {
                "policy": policy,
                "resolvers": [HeaderResolver(header), *standard_resolvers(**routing)],
            }
        except ValueError as e:
            raise ValueError(f"{_variable_in(str(e))}: {e}") from e
    # No connection yet: engines connect on first use.
    timeout = _number(environ, "DISPATCHER_DB_TIMEOUT", DEFAULT_TIMEOUT, float)
    # Its errors name their variable already.
    retention = settings.feed_retention(environ)
    try:
        registry = TenantRegistry(
            settings.database_url(environ),
            base_domain=base_domain,
            timeout=timeout,
            retention=retention,
        )
    except ValueError as e:
        raise ValueError(f"{_variable_in(str(e))}: {e}") from e
    try:
        # After the registry: a bad URL is its error, named as such.
        data = settings.tenant_data(environ)
        if create_app is not None and settings.serves_the_demo(environ):
            # The demo's app keeps its board in the deployment's tenant data
            # and writes its owner's settings through the registry; the
            # dispatcher's own answers are styled like it.
            from dispatcher.demo.answers import dispatcher_answers

            create_app = partial(create_app, data=data, registry=registry)
            options.update(dispatcher_answers(base_domain))
        default_app: WSGIApplication = _default_app(
            default_factory, default_name, registry, base_domain, data
        )
        try:
            dispatcher = TenantDispatcher(
                registry,
                create_app,
                shared_app=shared_app,
                default_app=default_app,
                **options,
            )
        except ValueError as e:
            raise ValueError(f"{_variable_in(str(e))}: {e}") from e
        if metrics:
            # Imported only now: prometheus_client is an optional extra.
            from dispatcher.metrics import instrument

            instrument(dispatcher, data=data, interval=interval)
    except BaseException:
        registry.close()
        raise
    return dispatcher


def make_server_app(environ: Mapping[str, str] = os.environ) -> WSGIApplication:
    """The application a server runs: :func:`make_application`'s dispatcher,
    with the health checks mounted at ``DISPATCHER_HEALTH_PATH`` and the
    metrics at ``DISPATCHER_METRICS_PATH``, each when set.

    The metrics path is for a single-process server (``tenantctl serve``);
    gunicorn's master serves every worker's metrics on a port of its own.
    """
    health = settings.health_path(environ)
    metrics = settings.metrics_path(environ)
    dispatcher = make_application(environ)
    mounts: dict[str, WSGIApplication] = {}
    if health is not None:
        from dispatcher.health import HealthApp

        mounts[health] = HealthApp(dispatcher)
    if metrics is not None:
        from dispatcher.metrics import DispatcherMetrics, metrics_app

        observer = dispatcher.observer
        assert isinstance(observer, DispatcherMetrics)  # metrics_path needs metrics
        mounts[metrics] = metrics_app(observer)
    if not mounts:
        return dispatcher
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    return DispatcherMiddleware(dispatcher, mounts)


def _default_app(
    factory: Callable[..., Any],
    name: str,
    registry: TenantRegistry,
    base_domain: str | None,
    data: TenantData | None,
) -> Any:
    """The default app; with tenant data, given the provisioner that creates it."""
    if data is None:
        return factory(registry, base_domain)
    # create leaves nothing behind when it fails; no archive as its undo, which
    # after a name clash would move the clashing data aside.
    provisioner = Provisioner(registry, on_create=[data.create])
    if name == DEFAULT_DEFAULT_APP:
        # The demo's signup writes the owner's account into the new data.
        return factory(registry, base_domain, provisioner=provisioner, data=data)
    try:
        inspect.signature(factory).bind(registry, base_domain, provisioner=provisioner)
    except TypeError:
        raise ValueError(
            f"DISPATCHER_DEFAULT_APP={name!r} must accept provisioner= (the"
            " Provisioner that creates each new tenant's data) while"
            " DISPATCHER_TENANT_DATA names tenant data"
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin, say): let the call decide
    return factory(registry, base_domain, provisioner=provisioner)


def migrate_at_start(environ: Mapping[str, str] = os.environ) -> bool:
    """Upgrade the schema once as a server starts, unless ``DISPATCHER_MIGRATE=0``.

    For the process that starts the server (gunicorn's master, ``tenantctl
    serve``), never for each worker. An unreachable database is logged, not
    raised: the server starts anyway, answers 503 for tenants it cannot look
    up, and serves them as soon as the database is back (an empty database then
    needs ``tenantctl db upgrade``). Returns whether the schema was upgraded.
    """
    if not settings.flag(environ, "DISPATCHER_MIGRATE", True):
        return False
    timeout = _number(environ, "DISPATCHER_DB_TIMEOUT", DEFAULT_TIMEOUT, float)
    with TenantRegistry(settings.database_url(environ), timeout=timeout) as registry:
        try:
            registry.migrate()
        except RegistryUnavailable as e:
            log.warning(
                "not migrating the schema at start: %s; the server starts anyway "
                "(run 'tenantctl db upgrade' once the database is back)",
                e,
            )
            return False
    return True


_VARIABLES = {
    "base_domain": "DISPATCHER_BASE_DOMAIN",
    "path_routing": "DISPATCHER_PATH_ROUTING",
    "path_routing_hosts": "DISPATCHER_PATH_ROUTING_HOSTS",
    "timeout": "DISPATCHER_DB_TIMEOUT",
    "header": "DISPATCHER_TENANT_HEADER",
}


def _variable_in(message: str) -> str:
    """The variable behind the dispatcher argument a message starts with."""
    return _VARIABLES.get(message.split(" ", 1)[0], "DISPATCHER_* settings")


def _load(environ: Mapping[str, str], name: str, default: str) -> Callable[..., Any]:
    target = environ.get(name, "").strip() or default
    loaded = settings.import_setting(name, target)
    if not callable(loaded):
        raise ValueError(f"{name}={target!r} is not callable")
    return loaded


def _check_wsgi_app(environ: Mapping[str, str], name: str, app: Any) -> None:
    """Refuse a function that cannot be called as ``app(environ, start_response)``
    (a ``create_app(tenant)`` named by mistake would answer 500 to everyone)."""
    if not inspect.isfunction(app):
        return  # an object with __call__, such as a Flask app
    try:
        inspect.signature(app).bind(environ, None)
    except TypeError:
        raise ValueError(
            f"{name}={environ[name].strip()!r} is not a WSGI app: it cannot be"
            " called as app(environ, start_response)"
        ) from None


def _list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(
        item.strip() for item in environ.get(name, "").split(",") if item.strip()
    )


def _number(environ: Mapping[str, str], name: str, default: T, kind: type[T]) -> T:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} must be a number") from None


def __getattr__(name: str) -> Any:
    # Built on first access, not at import: importing this module (say, for
    # make_application) must not open a database.
    if name == "application":
        try:
            application = make_server_app()
        except ValueError as e:
            # A bad DISPATCHER_* value, named: one line for whoever starts
            # the server, not a traceback through its loader.
            raise SystemExit(f"Error: {e}") from None
        globals()["application"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

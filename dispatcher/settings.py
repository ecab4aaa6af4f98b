"""Settings read from the environment, shared by the CLI, the migrations and servers."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.data import TenantData
    from dispatcher.retention import FeedRetention

DATABASE_URL_VARIABLE = "DISPATCHER_DATABASE_URL"
BASE_DOMAIN_VARIABLE = "DISPATCHER_BASE_DOMAIN"
DEFAULT_BASE_DOMAIN = "localhost"
# An embedded SQLite file in the working directory, so a fresh clone works as is.
DEFAULT_DATABASE_URL = "sqlite:///dispatcher.sqlite3"


def database_url(environ: Mapping[str, str] = os.environ) -> str:
    """The registry's URL: ``DISPATCHER_DATABASE_URL``, else the SQLite default."""
    return environ.get(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL


def base_domain(environ: Mapping[str, str] = os.environ) -> str | None:
    """``DISPATCHER_BASE_DOMAIN`` lower-cased without its final dot (default
    ``localhost``); None when set empty: no subdomain routing.

    Checked where it is used (the dispatcher and the registry name the rule).
    """
    return parse_base_domain(environ.get(BASE_DOMAIN_VARIABLE, DEFAULT_BASE_DOMAIN))


def parse_base_domain(value: str) -> str | None:
    """A base domain as the settings spell it: trimmed, lower-case, no final dot."""
    return value.strip().lower().rstrip(".") or None


TENANT_DATA_VARIABLE = "DISPATCHER_TENANT_DATA"
APP_FACTORY_VARIABLE = "DISPATCHER_APP_FACTORY"
#: The demo's tenant app, served when ``DISPATCHER_APP_FACTORY`` is unset.
DEFAULT_APP_FACTORY = "dispatcher.demo:create_app"


def serves_the_demo(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``DISPATCHER_APP_FACTORY`` names the demo's app (unset: it does,
    unless ``DISPATCHER_SHARED_APP`` serves every tenant instead)."""
    factory = environ.get(APP_FACTORY_VARIABLE, "").strip()
    if not factory and environ.get("DISPATCHER_SHARED_APP", "").strip():
        return False
    return (factory or DEFAULT_APP_FACTORY) == DEFAULT_APP_FACTORY


def tenant_data(environ: Mapping[str, str] = os.environ) -> TenantData | None:
    """The deployment's :class:`~dispatcher.data.TenantData`, named by
    ``DISPATCHER_TENANT_DATA=module:attribute``.

    Unset, it defaults to the demo's notes (:mod:`dispatcher.demo.data`, beside
    the registry at ``DISPATCHER_DATABASE_URL``) while the demo's app is served,
    and to None otherwise; set empty (or blank), it is None: tenants have no
    data of their own. A new demo TenantData per call; none opens a connection.

    :raises ValueError: the name cannot be imported or is not a TenantData, or
        the demo's data cannot live beside the registry (an in-memory SQLite).
    """
    target = environ.get(TENANT_DATA_VARIABLE)
    if target is None:
        if not serves_the_demo(environ):
            return None
        from dispatcher.demo.data import make_tenant_data

        url = database_url(environ)
        try:
            return make_tenant_data(url)
        except ValueError as e:
            raise ValueError(
                f"{TENANT_DATA_VARIABLE} is unset, so the demo keeps its tenants'"
                f" data beside the registry, but {e}; set {TENANT_DATA_VARIABLE}"
                " (empty: no tenant data)"
            ) from e
    target = target.strip()
    if not target:
        return None
    from dispatcher.data import TenantData

    loaded = import_setting(TENANT_DATA_VARIABLE, target)
    if not isinstance(loaded, TenantData):
        raise ValueError(
            f"{TENANT_DATA_VARIABLE}={target!r} is a {type(loaded).__name__},"
            " not a dispatcher.data.TenantData"
        )
    return loaded


def import_setting(variable: str, target: str) -> object:
    """What ``variable=target`` (``module:attribute``) names.

    :raises ValueError: naming the variable, when it cannot be imported or
        its module's own code fails.
    """
    from werkzeug.utils import import_string

    try:
        return import_string(target)
    except ImportError as e:
        # werkzeug's ImportStringError explains over a dozen lines; the error
        # it wraps ("No module named 'x'") says it in one.
        cause = getattr(e, "exception", None) or e
        raise ValueError(f"{variable}={target!r} cannot be imported: {cause}") from e
    except Exception as e:
        # The module's own code failed (a TenantData refusing its arguments,
        # say): still a setting to fix, named as such; the cause is chained.
        raise ValueError(
            f"{variable}={target!r} failed to load: {type(e).__name__}: {e}"
        ) from e


FEED_MAX_AGE_VARIABLE = "DISPATCHER_FEED_MAX_AGE"
FEED_MAX_CHANGES_VARIABLE = "DISPATCHER_FEED_MAX_CHANGES"


def feed_retention(environ: Mapping[str, str] = os.environ) -> FeedRetention:
    """How much of the change feed to keep: ``DISPATCHER_FEED_MAX_AGE`` (a
    duration such as ``7d`` or ``12h``) and ``DISPATCHER_FEED_MAX_CHANGES``;
    unset or empty, the defaults of :class:`~dispatcher.retention.FeedRetention`.

    :raises ValueError: naming the variable whose value breaks its rule.
    """
    from dispatcher.retention import FeedRetention, parse_duration

    retention = FeedRetention()
    max_age = environ.get(FEED_MAX_AGE_VARIABLE, "").strip()
    if max_age:
        try:
            retention = replace(retention, max_age=parse_duration(max_age))
        except ValueError as e:
            raise ValueError(f"{FEED_MAX_AGE_VARIABLE}: {e}") from e
    max_changes = environ.get(FEED_MAX_CHANGES_VARIABLE, "").strip()
    if max_changes:
        if not (max_changes.isascii() and max_changes.isdigit() and int(max_changes)):
            raise ValueError(
                f"{FEED_MAX_CHANGES_VARIABLE}={max_changes!r} must be a whole"
                " number of at least 1"
            )
        try:
            retention = replace(retention, max_changes=int(max_changes))
        except ValueError as e:
            raise ValueError(f"{FEED_MAX_CHANGES_VARIABLE}: {e}") from e
    return retention


#: Where ``tenantctl serve`` listens unless told (the README's address).
DEVELOPMENT_PORT = 8000

TRUST_REQUEST_ID_VARIABLE = "DISPATCHER_TRUST_REQUEST_ID"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def trust_request_id(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether requests' ``X-Request-ID`` header is their id in the logs
    (:mod:`dispatcher.logs`): ``DISPATCHER_TRUST_REQUEST_ID=1`` only where a
    proxy in front sets that header on every request, replacing the
    visitor's. Unset, empty or 0: every request gets an id of its own.

    :raises ValueError: any other value.
    """
    return flag(
        environ,
        TRUST_REQUEST_ID_VARIABLE,
        False,
        rule="must be 1 (the proxy in front sets X-Request-ID) or 0",
    )


def flag(
    environ: Mapping[str, str],
    name: str,
    default: bool,
    *,
    rule: str = "must be 1 or 0",
) -> bool:
    """The yes/no setting ``name``: 1/true/yes/on or 0/false/no/off, any case;
    unset or blank: ``default``.

    :raises ValueError: naming the variable, its value and ``rule``.
    """
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} {rule}")


METRICS_VARIABLE = "DISPATCHER_METRICS"
METRICS_INTERVAL_VARIABLE = "DISPATCHER_METRICS_INTERVAL"
METRICS_ADDRESS_VARIABLE = "DISPATCHER_METRICS_ADDRESS"
#: prometheus_client's own: where each process of a server writes its metrics.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
HEALTH_PATH_VARIABLE = "DISPATCHER_HEALTH_PATH"
METRICS_PATH_VARIABLE = "DISPATCHER_METRICS_PATH"
#: Where gunicorn's master serves the metrics: loopback, Prometheus's
#: customary port for an exporter's own (an operator opens it on purpose).
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9464"
# A path werkzeug's DispatcherMiddleware mounts: segments of URL-safe characters.
_MOUNT_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def metrics_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """``DISPATCHER_METRICS``: ``1`` exports Prometheus metrics (default 0).

    :raises ValueError: naming the variable, for anything but 1/0 (and
        true/false, yes/no, on/off).
    """
    return flag(environ, METRICS_VARIABLE, False)


def metrics_interval(environ: Mapping[str, str] = os.environ) -> float:
    """``DISPATCHER_METRICS_INTERVAL``: seconds between two copies of a
    process's counts into its metrics (default 1).

    :raises ValueError: naming the variable, unless a number > 0.
    """
    value = environ.get(METRICS_INTERVAL_VARIABLE, "").strip()
    if not value:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(
            f"{METRICS_INTERVAL_VARIABLE}={value!r} must be a number of seconds > 0"
        )
    return seconds


def metrics_address(environ: Mapping[str, str] = os.environ) -> tuple[str, int]:
    """``DISPATCHER_METRICS_ADDRESS``: ``host:port`` (``[::1]:port`` for IPv6)
    where gunicorn's master serves the metrics (default ``127.0.0.1:9464``).

    :raises ValueError: naming the variable, without a host and a port 1-65535.
    """
    value = environ.get(METRICS_ADDRESS_VARIABLE, "").strip() or DEFAULT_METRICS_ADDRESS
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(
            f"{METRICS_ADDRESS_VARIABLE}={value!r} must be host:port"
            " (such as 127.0.0.1:9464), the port 1-65535"
        )
    return host, int(port)


def metrics_path(environ: Mapping[str, str] = os.environ) -> str | None:
    """``DISPATCHER_METRICS_PATH``: the path (``/-/metrics``, say) the
    application serves its metrics on, beside the tenants; None when unset.

    :raises ValueError: naming the variable, for a path that is not
        ``/segment[/segment...]``, or one set without ``DISPATCHER_METRICS=1``.
    """
    value = _mount_path(environ, METRICS_PATH_VARIABLE, "/-/metrics")
    if value is not None and not metrics_enabled(environ):
        raise ValueError(
            f"{METRICS_PATH_VARIABLE}={value!r} needs {METRICS_VARIABLE}=1"
        )
    return value


def health_path(environ: Mapping[str, str] = os.environ) -> str | None:
    """``DISPATCHER_HEALTH_PATH``: the path (``/_health``, say) the application
    serves ``/live`` and ``/ready`` under (:class:`dispatcher.health.HealthApp`),
    beside the tenants; None when unset.

    :raises ValueError: naming the variable, for a path that is not
        ``/segment[/segment...]``.
    """
    return _mount_path(environ, HEALTH_PATH_VARIABLE, "/_health")


def _mount_path(environ: Mapping[str, str], name: str, example: str) -> str | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not _MOUNT_PATH.fullmatch(value):
        raise ValueError(
            f"{name}={value!r} must be a path such as {example}:"
            " a slash, then segments of letters, digits and . _ ~ -"
        )
    return value

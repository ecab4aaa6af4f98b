"""A deployment's own tenant data, for ``DISPATCHER_TENANT_DATA`` in tests.

``DISPATCHER_TENANT_DATA=tenant_data_probe:data`` (with ``tests/`` on the
path) is the demo's models in ``$PROBE_TENANT_DIRECTORY`` (SQLite files), so a
test can tell them from the default beside the registry;
``tenant_data_probe:servers`` is two PostgreSQL data servers, ``main`` and
``eu``, at ``$PROBE_SERVER_URL`` (one database standing for both, which also
holds the registry), made once: the test closes it with :func:`forget_servers`.
``landing`` is a default app that takes no provisioner.
"""

from __future__ import annotations

import os
from typing import Any

from werkzeug.wrappers import Response

from dispatcher.data import TenantData
from dispatcher.demo.data import Base
from dispatcher.registry import TenantRegistry

DIRECTORY_VARIABLE = "PROBE_TENANT_DIRECTORY"
SERVER_URL_VARIABLE = "PROBE_SERVER_URL"


def landing(registry: Any, base_domain: str | None) -> Response:
    return Response("a landing page")


def forget_servers() -> None:
    """Close the ``servers`` made by a test, if any, and its registry."""
    servers = globals().pop("servers", None)
    if servers is not None:
        servers.dispose()
        assert servers.registry is not None
        servers.registry.close()


def __getattr__(name: str) -> Any:
    # Read when named, not at import: each test has its own directory.
    if name == "data":
        directory = os.environ[DIRECTORY_VARIABLE]
        return TenantData("sqlite://", metadata=Base.metadata, directory=directory)
    if name == "servers":
        url = os.environ[SERVER_URL_VARIABLE]
        # Several servers: the registry records which one holds each tenant.
        servers = TenantData(
            {"main": url, "eu": url},
            metadata=Base.metadata,
            registry=TenantRegistry(url),
        )
        globals()["servers"] = servers
        return servers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

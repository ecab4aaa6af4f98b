"""A deployment's own tenant data, for ``DISPATCHER_TENANT_DATA`` in tests.

``DISPATCHER_TENANT_DATA=tenant_data_probe:data`` (with ``tests/`` on the
path) is the demo's models in ``$PROBE_TENANT_DIRECTORY`` (SQLite files), so a
test can tell them from the default beside the registry. ``landing`` is a
default app that takes no provisioner.
"""

from __future__ import annotations

import os
from typing import Any

from werkzeug.wrappers import Response

from dispatcher.data import TenantData
from dispatcher.demo.data import Base

DIRECTORY_VARIABLE = "PROBE_TENANT_DIRECTORY"


def landing(registry: Any, base_domain: str | None) -> Response:
    return Response("a landing page")


def __getattr__(name: str) -> Any:
    # Read when named, not at import: each test has its own directory.
    if name == "data":
        directory = os.environ[DIRECTORY_VARIABLE]
        return TenantData("sqlite://", metadata=Base.metadata, directory=directory)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Settings read from the environment, shared by the CLI, the migrations and servers."""

from __future__ import annotations

import os
from collections.abc import Mapping

DATABASE_URL_VARIABLE = "DISPATCHER_DATABASE_URL"
# An embedded SQLite file in the working directory, so a fresh clone works as is.
DEFAULT_DATABASE_URL = "sqlite:///dispatcher.sqlite3"


def database_url(environ: Mapping[str, str] = os.environ) -> str:
    """The registry's URL: ``DISPATCHER_DATABASE_URL``, else the SQLite default."""
    return environ.get(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL

"""The PostgreSQL servers tenant data lives on: one bounded pool each.

Used by :class:`dispatcher.data.TenantData`; usage::

    servers = Servers({"main": main_url, "eu": eu_url}, pool_size=5, ...)
    servers.engine("eu")                      # created on first use, then shared
    servers.least_used({"main": 40, "eu": 12})   # -> "eu"

A name is how the registry records a tenant's server (``tenants.data_server``),
so it follows the registry's rule for it and never changes meaning: renaming a
server in the configuration strands its tenants with a clear error rather
than sending them to another server.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.engine import URL

from dispatcher.database import postgres_connect_args
from dispatcher.exceptions import TenantDataError
from dispatcher.rules import check_data_server

__all__ = ["DEFAULT_SERVER", "Servers"]

#: The name of the one server a single URL configures.
DEFAULT_SERVER = "default"

#: A server that vanishes without closing its sockets (a host gone, a network
#: cut) is noticed in about a minute, not after the kernel's 15 minutes of
#: retransmissions: a request then gets 503 instead of holding a worker.
_KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds
}


class Servers:
    """Named PostgreSQL URLs and their engines, each created once and shared."""

    def __init__(
        self,
        urls: Mapping[str, str | URL],
        *,
        pool_size: int,
        max_overflow: int,
        pool_timeout: float,
        connect_timeout: float,
    ) -> None:
        if not urls:
            raise ValueError("no data server is configured; name at least one")
        self.urls: dict[str, URL] = {}
        for name, url in urls.items():
            # The registry's rule: the name is stored in tenants.data_server.
            check_data_server(name)
            parsed = make_url(url)
            if parsed.get_backend_name() != "postgresql":
                raise ValueError(
                    f"data server {name!r} has URL {parsed.render_as_string()!r};"
                    " several data servers must all be 'postgresql'"
                )
            self.urls[name] = parsed
        self.options: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout,
            # A dead connection costs one round trip, not a tenant's request.
            "pool_pre_ping": True,
        }
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._engines: dict[str, Engine] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """The configured servers, in the configuration's order."""
        return tuple(self.urls)

    @property
    def default(self) -> str:
        """The first server: where tenants with no recorded server live."""
        return next(iter(self.urls))

    def check(self, name: str, slug: str | None = None) -> str:
        """``name`` if it is configured; else :class:`TenantDataError` naming it."""
        if name in self.urls:
            return name
        whose = f" of tenant {slug!r}" if slug is not None else ""
        raise TenantDataError(
            f"data server {name!r}{whose} is not configured;"
            f" the configured servers are {', '.join(map(repr, self.urls))}"
        )

    def engine(self, name: str) -> Engine:
        """The server's one shared engine, created on first use."""
        with self._lock:
            engine = self._engines.get(name)
            if engine is None:
                url = self.urls[name]
                connect_args = {
                    **_KEEPALIVES,
                    **postgres_connect_args(url, self.connect_timeout),
                }
                for option in _KEEPALIVES:
                    if option in url.query:
                        del connect_args[option]  # the URL's own setting wins
                engine = self._engines[name] = create_engine(
                    url, connect_args=connect_args, **self.options
                )
            return engine

    def least_used(self, counts: Mapping[str | None, int]) -> str:
        """The configured server with the fewest tenants; ties go to the first.

        ``counts`` is tenants per recorded server (None: no server recorded,
        which means the default one).
        """
        load = {name: counts.get(name, 0) for name in self.urls}
        load[self.default] += counts.get(None, 0)
        return min(self.urls, key=lambda name: load[name])

    def forked(self) -> None:
        """In a forked child: a new lock, none of the parent's pooled connections."""
        self._lock = threading.Lock()
        for engine in self._engines.values():
            # close=False: the parent still owns those sockets.
            engine.dispose(close=False)

    def dispose(self) -> None:
        """Close every pool (process shutdown); engines are re-created on use."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.dispose()

"""A real PgBouncer for a test: its own config, a free loopback port, always stopped.

Usage::

    with running_pgbouncer(database_url, pool_size=1) as bouncer:
        engine = create_engine(bouncer.url, connect_args=NO_PREPARE)
        ...

``database_url`` is a PostgreSQL URL as ``conftest.py`` gives it. PgBouncer
pools one database, ``bouncer.url``'s, and forwards it to that URL's server
and database. It runs in transaction mode by default: a server connection
serves a client for one transaction, then any other client.

The ``options`` startup parameter (``-csearch_path=...``, how each test gets
its own schema) is one PgBouncer 1.18 refuses from clients, and ignoring it
would lose the schema. Its ``-c name=value`` settings become the database
entry's ``connect_query`` instead: every server connection runs them once,
when it is opened, before any client uses it, so the pooled database behaves
as the direct URL does. Nothing resets them afterwards (in transaction mode
PgBouncer runs no ``server_reset_query``), which is also why a plain ``SET``
by one client stays on the server connection for the next: see
``test_pgbouncer.py``.

PgBouncer refuses to run as root. As root it runs as ``postgres`` (or
``nobody``) through ``setpriv``, which execs it: the pid is PgBouncer's own.
Its files live in a temporary directory that user owns, not in ``tmp_path``,
which only root may enter. It gets ``START_TIMEOUT`` seconds to accept
connections (else the test fails with its log) and, at the end, SIGTERM (an
immediate shutdown) then SIGKILL after ``STOP_TIMEOUT``.

Imported by the tests as ``from pgbouncer import ...``, like ``servers``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import free_port, stop, wait_until_ready
from sqlalchemy import URL, make_url

PGBOUNCER = Path("/usr/sbin/pgbouncer")  # Debian's pgbouncer package
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
UNPRIVILEGED_USERS = ("postgres", "nobody")
START_TIMEOUT = 10.0  # seconds until PgBouncer must accept a connection

#: ``create_engine(url, connect_args=NO_PREPARE)``: PgBouncer 1.18 in
#: transaction mode does not carry prepared statements from one transaction
#: to the next (they live on a server connection another client may get), and
#: psycopg 3 prepares a query it has run five times unless told not to.
NO_PREPARE: dict[str, Any] = {"prepare_threshold": None}

# What a setting's name and value may be in the generated connect_query: the
# ini syntax has no escaping we want to depend on.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.,$ ]*\Z")


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: its port, its process, its files."""

    port: int
    url: str
    process: subprocess.Popen[bytes]
    directory: Path

    def log(self) -> str:
        """What PgBouncer logged so far."""
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def require_pgbouncer() -> None:
    """Skip the test unless Debian's PgBouncer is installed."""
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.skip(
            f"PgBouncer is not installed: no {PGBOUNCER} "
            "(Debian's pgbouncer package; .ci/run installs it)"
        )


@contextmanager
def running_pgbouncer(
    database_url: str,
    *,
    pool_size: int = 5,
    pool_mode: str = "transaction",
    start_timeout: float = START_TIMEOUT,
) -> Iterator[PgBouncer]:
    """PgBouncer in front of ``database_url``'s database for the ``with`` block.

    :param pool_size: server connections PgBouncer opens at most; with 1 every
        client shares one, so what one leaves on it the next one finds.
    """
    require_pgbouncer()
    target = make_url(database_url)
    if target.get_backend_name() != "postgresql":
        raise ValueError(f"PgBouncer pools PostgreSQL, not {target.drivername}")
    user = None if os.geteuid() != 0 else _unprivileged_user()
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    try:
        if user is not None:
            os.chown(directory, user.pw_uid, user.pw_gid)
        port = free_port()
        config = directory / "pgbouncer.ini"
        config.write_text(
            _config(target, directory, port, pool_size=pool_size, pool_mode=pool_mode)
        )
        (directory / "users.txt").write_text(
            f'"{target.username or ""}" "{target.password or ""}"\n'
        )
        command = [str(PGBOUNCER), str(config)]
        if user is not None:
            command = [
                SETPRIV,
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--init-groups",
                "--",
                *command,
            ]
        url = target.set(
            host="127.0.0.1",
            port=port,
            query={k: v for k, v in target.query.items() if k != "options"},
        )
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # it logs to pgbouncer.log
            start_new_session=True,
        )
        bouncer = PgBouncer(
            port, url.render_as_string(hide_password=False), process, directory
        )
        try:
            wait_until_ready(
                process,
                lambda left: socket.create_connection(
                    ("127.0.0.1", port), timeout=min(1.0, left)
                ).close(),
                f"PgBouncer on 127.0.0.1:{port}",
                bouncer.log,
                start_timeout,
            )
            yield bouncer
        finally:
            stop(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip(
        "PgBouncer refuses to run as root, and there is no user to run it as "
        f"(tried {', '.join(UNPRIVILEGED_USERS)})"
    )


def _config(
    target: URL, directory: Path, port: int, *, pool_size: int, pool_mode: str
) -> str:
    entry = [
        f"host={target.host or '127.0.0.1'}",
        f"port={target.port or 5432}",
        f"dbname={target.database}",
    ]
    settings = _settings(target.query.get("options"))
    if settings:
        query = "; ".join(f"SET {name} TO {value}" for name, value in settings)
        entry.append(f"connect_query='{query}'")
    return "\n".join(
        [
            "[databases]",
            f"{target.database} = {' '.join(entry)}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            # No Unix socket: it would be /tmp/.s.PGSQL.<port>, shared by all.
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {directory / 'users.txt'}",
            f"pool_mode = {pool_mode}",
            f"default_pool_size = {pool_size}",
            "max_client_conn = 200",
            f"logfile = {directory / 'pgbouncer.log'}",
            f"pidfile = {directory / 'pgbouncer.pid'}",
            "",
        ]
    )


def _settings(options: Any) -> list[tuple[str, str]]:
    """``-cname=value`` options as (name, value) pairs; anything else is refused."""
    if options is None:
        return []
    if not isinstance(options, str):
        raise ValueError(f"one options parameter expected, not {options!r}")
    words = options.split()
    settings = []
    while words:
        word = words.pop(0)
        if word == "-c" and words:
            word = "-c" + words.pop(0)
        name, equals, value = word.removeprefix("-c").partition("=")
        if not (word.startswith("-c") and equals):
            raise ValueError(f"options {options!r}: only -c name=value is supported")
        if not (_PLAIN.match(name) and _PLAIN.match(value)):
            raise ValueError(f"options {options!r}: {word!r} is not a plain setting")
        settings.append((name, value))
    return settings

"""A gunicorn configuration module: migrate once in the master, never in a worker.

    gunicorn -c python:dispatcher.gunicorn_conf -w 4 'dispatcher.wsgi:application'

Workers build the application without touching the database (see
:mod:`dispatcher.wsgi`), so a worker that crashes or is recycled
(``--max-requests``) comes back even while the database is down. The schema is
upgraded here, once, before the first worker forks, and an outage at that
moment is logged, not fatal: the master starts and keeps running. It is
upgraded in a child process of the master: every worker is a fork of the
master, so what the master imports (Alembic, Mako, the ORM) would weigh in
every worker's memory.

Before each fork, everything the master imported (and, with
``--preload``, the application it built) is frozen out of the cyclic
collector (``gc.freeze()``, as the :mod:`gc` documentation advises for
forking servers): a worker's full collections never traverse it, and never
write to its pages, which stay shared with the master. ``DISPATCHER_GC=off``
turns this off with the rest of :mod:`dispatcher.collector`.

Metrics (``DISPATCHER_METRICS=1``, see :mod:`dispatcher.metrics`): each worker
writes its metrics to files in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary
directory when unset, removed at exit), emptied of the last run's metric files
(``prometheus_client``'s own, nothing else) before any worker starts; a worker
copies its last counts as it exits (``worker_exit``); ``child_exit`` drops a
dead worker's live gauges; and the master serves the sum of every worker's
metrics at ``DISPATCHER_METRICS_ADDRESS`` (default ``127.0.0.1:9464``): a port
of its own, which tenants' visitors never reach through the server's
``--bind``, and which no worker holds open (``post_fork``).

Extend it in your own configuration file with
``from dispatcher.gunicorn_conf import on_starting, pre_fork, post_fork,
when_ready, worker_exit, child_exit, on_exit`` (``examples/gunicorn.conf.py``
is one to copy).
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from dispatcher import collector, settings
from dispatcher.settings import MULTIPROC_DIR_VARIABLE as MULTIPROC_DIR
from dispatcher.wsgi import make_server_app, migrate_at_start

__all__ = [
    "child_exit",
    "on_exit",
    "on_starting",
    "post_fork",
    "pre_fork",
    "when_ready",
    "worker_exit",
]


#: The names of prometheus_client's files in the directory
#: (``values.MultiProcessValue``: ``<type>_<pid>.db``, a gauge's type with
#: its mode, ``gauge_livesum_<pid>.db``); any other file there is not ours.
_METRIC_FILE = re.compile(r"(?:counter|histogram|summary|gauge_[a-z]+)_[0-9]+\.db")

#: The master's metrics server (``when_ready``), whose socket each worker
#: closes as it starts (``post_fork``).
_metrics_server: Any = None


def _metrics_on() -> bool:
    try:
        return settings.metrics_enabled()
    except ValueError as e:
        raise SystemExit(str(e)) from None


def _made_directory() -> str | None:
    """A fresh directory for the workers' metric files, if metrics are on and
    none is named; None otherwise.

    Here, as gunicorn reads this file: before ``--preload`` builds the
    application, since ``prometheus_client`` chooses its multiprocess mode
    from the variable when first imported, and before any worker forks.
    """
    try:
        if not settings.metrics_enabled() or os.environ.get(MULTIPROC_DIR):
            return None
    except ValueError:
        return None  # on_starting stops the server with the message
    directory = tempfile.mkdtemp(prefix="dispatcher-metrics-")
    os.environ[MULTIPROC_DIR] = directory
    return directory


_MADE_DIRECTORY = _made_directory()


def on_starting(server: Any) -> None:
    """gunicorn's hook, called in the master before the workers start."""
    if _metrics_on():
        _empty_metrics_directory()
    # A bad setting comes back through the pipe as one line.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child checks, migrates and exits, taking Alembic with it
        os.close(read)
        code = 1
        try:
            # Every worker would fail to build it, each with a traceback.
            make_server_app()
            migrate_at_start()
            code = 0
        except ValueError as e:  # a DISPATCHER_* value, named with its rule
            os.write(write, str(e).encode())
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        refused = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if refused:
        raise SystemExit(f"Error: {refused}")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("migrating the registry's schema at start failed (above)")


def pre_fork(server: Any, worker: Any) -> None:
    """gunicorn's hook, called in the master just before each worker forks."""
    if collector.managed():
        gc.freeze()


def _empty_metrics_directory() -> None:
    """Create the metrics directory, or empty it of a past run's files (its
    workers' counts would be summed with this run's)."""
    directory = os.environ.get(MULTIPROC_DIR, "")
    if not directory:
        raise SystemExit(
            f"DISPATCHER_METRICS=1 needs {MULTIPROC_DIR} under gunicorn:"
            " a directory for each worker's metric files"
        )
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        # prometheus_client's files only: the directory may hold others (an
        # operator's SQLite database, say).
        for path in Path(directory).iterdir():
            if _METRIC_FILE.fullmatch(path.name) and path.is_file():
                path.unlink()
    except OSError as e:
        raise SystemExit(f"{MULTIPROC_DIR}={directory!r}: {e}") from None


def when_ready(server: Any) -> None:
    """gunicorn's hook, called in the master once it listens: serve the
    workers' metrics on their own address.

    ``prometheus_client``'s server answers every path there (``/metrics``
    included) with the metrics; it serves nothing else.
    """
    global _metrics_server
    if not _metrics_on():
        return
    try:
        host, port = settings.metrics_address()
    except ValueError as e:
        raise SystemExit(str(e)) from None
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        _metrics_server, _ = start_http_server(port, host, registry=registry)
    except OSError as e:
        raise SystemExit(
            f"{settings.METRICS_ADDRESS_VARIABLE}={host}:{port}: cannot serve"
            f" the metrics there: {e}"
        ) from None
    server.log.info("Serving metrics at http://%s:%s/metrics", host, port)


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn's hook, called in each worker just after it forks: close the
    master's metrics socket, which the fork copied.

    Else every worker holds the port open too: a master killed with SIGKILL
    would leave its workers holding it, and no new master could bind it.
    Only the socket is closed: the thread serving it is the master's.
    """
    if _metrics_server is not None:
        _metrics_server.socket.close()


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's hook, called in a worker as it exits (``--max-requests``,
    a graceful stop or restart): copy what it counted since its last copy
    into its metric files (:func:`dispatcher.metrics.sync_all`)."""
    # Imported by the worker's application if it has metrics; never made here.
    metrics = sys.modules.get("dispatcher.metrics")
    if metrics is not None:
        metrics.sync_all()


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's hook, called in the master when a worker has exited: its
    live gauges (apps held, the feed's generation, ...) leave the sums."""
    if _metrics_on():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """gunicorn's hook, called in the master as it exits: the metrics
    directory this module made goes with it."""
    if _MADE_DIRECTORY is not None:
        shutil.rmtree(_MADE_DIRECTORY, ignore_errors=True)

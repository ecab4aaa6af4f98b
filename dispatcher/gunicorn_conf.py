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

Extend it in your own configuration file with
``from dispatcher.gunicorn_conf import on_starting, pre_fork``.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from typing import Any

from dispatcher import collector
from dispatcher.wsgi import migrate_at_start

__all__ = ["on_starting", "pre_fork"]


def on_starting(server: Any) -> None:
    """gunicorn's hook, called in the master before the workers start."""
    pid = os.fork()
    if pid == 0:  # the child migrates and exits, taking Alembic with it
        code = 1
        try:
            migrate_at_start()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("migrating the registry's schema at start failed (above)")


def pre_fork(server: Any, worker: Any) -> None:
    """gunicorn's hook, called in the master just before each worker forks."""
    if collector.managed():
        gc.freeze()

"""A gunicorn configuration module: migrate once in the master, never in a worker.

    gunicorn -c python:dispatcher.gunicorn_conf -w 4 'dispatcher.wsgi:application'

Workers build the application without touching the database (see
:mod:`dispatcher.wsgi`), so a worker that crashes or is recycled
(``--max-requests``) comes back even while the database is down. The schema is
upgraded here, once, before the first worker forks, and an outage at that
moment is logged, not fatal: the master starts and keeps running.

Extend it in your own configuration file with
``from dispatcher.gunicorn_conf import on_starting``.
"""

from __future__ import annotations

from typing import Any

from dispatcher.wsgi import migrate_at_start

__all__ = ["on_starting"]


def on_starting(server: Any) -> None:
    """gunicorn's hook, called in the master before the workers start."""
    migrate_at_start()

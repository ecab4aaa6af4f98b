"""Flask glue for tenant data: Flask-SQLAlchemy on a tenant's engine, and 503s.

Used by :meth:`dispatcher.data.TenantData.init_app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["answer_unavailable", "bind_flask_sqlalchemy"]


def bind_flask_sqlalchemy(db: Any, app: Flask, engine: Engine) -> None:
    """Make ``db.session`` and ``db.engine`` in ``app`` use ``engine``."""
    raise NotImplementedError


def answer_unavailable(app: Flask, retry_after: int) -> None:
    """Answer 503 with ``Retry-After`` when the tenant's data server is unreachable."""

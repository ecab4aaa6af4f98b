"""A tenant's app outside a request: scripts, commands and background jobs."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from dispatcher.middleware import TenantDispatcher

__all__ = ["app_for"]


def app_for(
    dispatcher: TenantDispatcher, slug: str
) -> AbstractContextManager[WSGIApplication]:
    raise NotImplementedError

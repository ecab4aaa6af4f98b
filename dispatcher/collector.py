"""Keep the cyclic garbage collector's pauses short while apps are cached.

The dispatcher calls :func:`built` after ``create_app`` returns a tenant's own
app and :func:`released` after that app's teardown (shared apps never reach
either).
"""

from __future__ import annotations

from typing import Any

__all__ = ["built", "released"]


def built(app: Any) -> None:
    """A tenant's own app was just built (outside every lock)."""


def released(app: Any) -> None:
    """A tenant's own app was torn down: nothing of the dispatcher holds it."""

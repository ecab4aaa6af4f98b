"""Small helpers shared by test modules."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from dispatcher import CachePolicy


def with_policy(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the :class:`CachePolicy` settings among them gathered
    into one ``policy=``, so test helpers can take them as keywords."""
    settings = {name: options.pop(name) for name in _POLICY_FIELDS if name in options}
    if settings:
        options["policy"] = CachePolicy(**settings)
    return options


_POLICY_FIELDS = tuple(field.name for field in fields(CachePolicy))

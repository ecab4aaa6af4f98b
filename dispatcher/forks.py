"""Run an object's ``after fork`` method in a forked child, registered once per process.

``os.register_at_fork`` has no way to unregister, so registering a hook per
instance grows a list forever (one entry per registry or dispatcher ever made)
and keeps calling hooks for dead objects. Instead this module registers one
hook at import and keeps the live objects in a weak set::

    forks.on_fork_in_child(self, TenantRegistry._forked)

The hook runs in the child only, before any other thread exists there, so the
method can replace every lock and event the parent may have held at the fork.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["on_fork_in_child"]

log = logging.getLogger(__name__)

# Object -> the unbound method to call on it in a child. Weak keys: registering
# never keeps an object alive.
_hooks: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def on_fork_in_child(owner: object, method: Callable[[Any], None]) -> None:
    """Call ``method(owner)`` in every child forked while ``owner`` is alive."""
    with _lock:
        _hooks[owner] = method


def _after_fork_in_child() -> None:
    global _lock
    # The parent's lock may have been held by another thread at the fork.
    _lock = threading.Lock()
    for owner, method in list(_hooks.items()):
        try:
            method(owner)
        except Exception:
            log.exception("resetting %r after fork failed", owner)


os.register_at_fork(after_in_child=_after_fork_in_child)

"""Break a torn-down Flask app's reference cycles, so reference counting frees it.

A Flask app is full of reference cycles: its URL map and its rules point at
each other (and each rule at its own compiled builder), each compiled Jinja
template's functions live in a namespace that holds them, the Jinja
environment and its loader point back at the app, and a view defined inside
``create_app`` that uses ``app`` closes over it. Once evicted, such an app is
garbage only the cyclic collector frees, and a long-cached app sits in its
oldest generation: a full collection, which traverses every object of the
process, is the only one that finds it.

:func:`break_cycles` cuts those cycles in what the app owns alone: its URL
map (bound to one app: werkzeug refuses to bind a rule to a second map), its
Jinja environment and the templates it compiled (only if the environment's
``app`` is this app), and the app's own attributes. It clears containers; it
never changes an object another app may share: blueprints (usually defined
once at module level), the ``db`` extension, loggers (``logging.getLogger(
app.name)`` is shared by every app of that name), config values, modules.
Cycles an app makes elsewhere (a blueprint made per app, an engine of its own)
are left to the collector: :mod:`dispatcher.collector` counts what survives.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["break_cycles", "is_torn_down"]


def break_cycles(app: Any) -> bool:
    """Cut the cycles of a Flask ``app`` that will never serve again.

    Returns False (touching nothing) if ``app`` is not a Flask app. After
    this the app cannot serve: call it only once nothing will use the app.
    """
    flask = sys.modules.get("flask")
    if flask is None or not isinstance(app, flask.Flask):
        return False
    state = vars(app)
    _break_url_map(state.get("url_map"))
    # A cached_property: present only if something rendered a template.
    environment = state.get("jinja_env")
    if environment is not None and getattr(environment, "app", None) is app:
        _break_jinja(environment)
    state.clear()
    return True


def is_torn_down(app: Any) -> bool:
    """Whether ``app`` is a Flask app whose cycles :func:`break_cycles` cut."""
    flask = sys.modules.get("flask")
    return flask is not None and isinstance(app, flask.Flask) and not vars(app)


def _break_url_map(url_map: Any) -> None:
    if url_map is None:
        return
    rules = getattr(url_map, "_rules", ())
    for rule in rules:
        # Each rule holds its map and builders bound to itself.
        if getattr(rule, "map", None) is url_map:
            vars(rule).clear()
    matcher = getattr(url_map, "_matcher", None)
    if matcher is not None:
        vars(matcher).clear()
    vars(url_map).clear()


def _break_jinja(environment: Any) -> None:
    cache = getattr(environment, "cache", None)
    for template in list(cache.values()) if cache is not None else ():
        render = getattr(template, "root_render_func", None)
        namespace = getattr(render, "__globals__", None)
        # The namespace the template's code was run in, its own alone.
        if isinstance(namespace, dict) and namespace.get("environment") is (
            environment
        ):
            namespace.clear()
        vars(template).clear()
    if cache is not None:
        cache.clear()
    # A copy each environment makes of Jinja's defaults, plus Flask's
    # ``url_for`` bound to the app: templates that were never cached
    # (``render_template_string``) keep it, and through it the app.
    namespace = getattr(environment, "globals", None)
    if isinstance(namespace, dict):
        namespace.clear()
    vars(environment).clear()

"""Flask glue for tenant data: Flask-SQLAlchemy on a tenant's engine, and 503s.

Used by :meth:`dispatcher.data.TenantData.init_app`::

    db = SQLAlchemy(model_class=Base)
    data = TenantData(url, metadata=db.metadata)

    def create_app(tenant):
        app = Flask(__name__)
        data.init_app(app, tenant, db=db)  # db.session here: this tenant's data
        ...

One ``db`` serves every tenant app, as Flask-SQLAlchemy is meant to be used
with many apps: ``db.session`` is scoped to the current app context and picks
its engine from the current app. :func:`bind_flask_sqlalchemy` makes that
engine the tenant's view on the shared pool, so no app has an engine (or a
pool) of its own. A ``db.session`` object belongs to the app context it was
made in: carried into another tenant's app context, it would use that app's
engine.

:func:`answer_unavailable` answers 503 with ``Retry-After`` when a request's
tenant data cannot be reached (:func:`is_unreachable` decides which errors
mean that). Every other database error stays the app's: its own handlers see
it, or it is a 500.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from functools import partial
from importlib.metadata import version
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from flask import appcontext_pushed, current_app, request
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import ServiceUnavailable

from dispatcher.context import ENVIRON_KEY
from dispatcher.tenant import Tenant

if TYPE_CHECKING:
    from flask import Flask, Response
    from flask.typing import ResponseReturnValue

__all__ = ["answer_unavailable", "bind_flask_sqlalchemy", "is_unreachable"]

log = logging.getLogger(__name__)

#: App settings that would configure an engine of the app's own.
_ENGINE_SETTINGS = (
    "SQLALCHEMY_DATABASE_URI",
    "SQLALCHEMY_BINDS",
    "SQLALCHEMY_ENGINE_OPTIONS",
    "SQLALCHEMY_RECORD_QUERIES",
    "SQLALCHEMY_TRACK_MODIFICATIONS",
)

#: SQLSTATEs of a server that is going, gone or full: admin_shutdown,
#: crash_shutdown, cannot_connect_now, too_many_connections. Class 08
#: (connection exception) counts too.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03", "53300"})
#: A tenant's SQLite file that cannot be opened or read (a missing file,
#: an unmounted or failing disk).
_SQLITE_UNREACHABLE = frozenset({sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR})

_DESCRIPTION = "This site's data is unavailable for a moment. Please try again later."


def bind_flask_sqlalchemy(db: Any, app: Flask, engine: Engine) -> None:
    """Make ``db.session`` and ``db.engine`` in ``app`` use ``engine``.

    Instead of ``db.init_app(app)``, which would create an engine (a pool)
    for the app from its config: the app must set no ``SQLALCHEMY_*`` engine
    setting, and models with a ``__bind_key__`` are refused (a tenant has
    one engine). ``db.session`` is removed at each app context's teardown.

    :raises TypeError: ``db`` is not a ``flask_sqlalchemy.SQLAlchemy``.
    """
    extension = _flask_sqlalchemy_class()
    if extension is None or not isinstance(db, extension):
        missing = "" if extension else " (Flask-SQLAlchemy is not installed)"
        raise TypeError(
            f"db must be a flask_sqlalchemy.SQLAlchemy, not {type(db).__name__}"
            + missing
        )
    if "sqlalchemy" in app.extensions:
        raise RuntimeError(
            f"app {app.name!r} already has a Flask-SQLAlchemy extension; pass db="
            " to data.init_app instead of calling db.init_app(app), which gives"
            " the app an engine and a pool of its own"
        )
    for setting in _ENGINE_SETTINGS:
        if app.config.get(setting):
            raise ValueError(
                f"app {app.name!r} sets {setting}; a tenant app's db.engine is its"
                " tenant's engine from TenantData, so remove the setting"
            )
    bind_keys = sorted(key for key in db.metadatas if key is not None)
    if bind_keys:
        raise ValueError(
            f"db has models with __bind_key__ {bind_keys!r}; a tenant app has one"
            " engine, its tenant's, so define tenant models without a bind key"
        )
    _set_app_engines(db, app, {None: engine})
    app.extensions["sqlalchemy"] = db
    app.teardown_appcontext(partial(_remove_session, db))
    # db.session is shared by every tenant app and keyed by the context's id():
    # a session a dead context left (a teardown that raised before ours) must
    # not reach a new context at the same address, maybe another tenant's.
    appcontext_pushed.connect(partial(_remove_stale_session, db), app, weak=False)


def _remove_session(db: Any, _error: BaseException | None) -> None:
    db.session.remove()


def _remove_stale_session(db: Any, _app: Flask, **_extra: Any) -> None:
    db.session.remove()


def _set_app_engines(db: Any, app: Flask, engines: dict[str | None, Engine]) -> None:
    """Give ``app`` its engines in ``db`` without creating any.

    Flask-SQLAlchemy has no public way to hand an app an existing engine:
    ``init_app`` always creates them from the app's config. Since 3.0 it keeps
    each app's engines in ``db._app_engines`` (a ``WeakKeyDictionary``: app ->
    {bind key: engine}), which ``db.engines``, ``db.engine`` and its session's
    ``get_bind`` read. This is the one place that touches it, and
    ``tests/test_data_flask.py`` fails if Flask-SQLAlchemy moves it. Weak keys:
    an evicted tenant app is freed with its entry.
    """
    app_engines = getattr(db, "_app_engines", None)
    if not isinstance(app_engines, WeakKeyDictionary):
        raise RuntimeError(
            f"Flask-SQLAlchemy {version('flask-sqlalchemy')} keeps no engines in"
            " db._app_engines, as 3.0 to 3.1 do; dispatcher cannot give a tenant"
            " app its tenant's engine: install flask-sqlalchemy<3.2"
        )
    app_engines[app] = engines


def _flask_sqlalchemy_class() -> type[Any] | None:
    try:
        from flask_sqlalchemy import SQLAlchemy
    except ImportError:
        return None
    return SQLAlchemy


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the data server (or SQLite file) cannot be reached.

    True for a pool that gave no connection in time, a connection the error
    invalidated, and a driver ``OperationalError`` that is the client's own
    (refused, reset, closed: no SQLSTATE), a connection exception (class 08),
    a server shutting down or full, or an unopenable SQLite file. False for
    everything the server answered about the statement (constraint, syntax,
    deadlock, serialization, statement timeout).
    """
    if isinstance(error, sa_exc.TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return isinstance(error, sa_exc.OperationalError) and _driver_unreachable(
            error.orig
        )
    return isinstance(error, _driver_operational_errors()) and _driver_unreachable(
        error
    )


def _driver_unreachable(error: BaseException | None) -> bool:
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        # The primary result code is the low byte of an extended one.
        return code is not None and code & 0xFF in _SQLITE_UNREACHABLE
    # psycopg calls it sqlstate, psycopg2 pgcode; None: not the server's answer.
    for attribute in ("sqlstate", "pgcode"):
        if hasattr(error, attribute):
            code = getattr(error, attribute)
            break
    else:
        return False
    return code is None or code.startswith("08") or code in _SERVER_GONE


def _driver_operational_errors() -> tuple[type[Exception], ...]:
    """The loaded drivers' own ``OperationalError`` classes.

    Only drivers already imported: one that is not cannot have raised yet,
    and ``init_app`` makes the tenant's engine (importing its driver) before
    it binds the app; through SQLAlchemy, drivers' errors arrive as
    ``DBAPIError``, always handled. Importing psycopg for SQLite data cost each
    app 0.1-0.2 s.
    """
    found: list[type[Exception]] = [sqlite3.OperationalError]
    for driver in ("psycopg", "psycopg2"):
        module = sys.modules.get(driver)
        if module is not None:
            found.append(module.OperationalError)
    return tuple(found)


def answer_unavailable(app: Flask, retry_after: int) -> None:
    """Answer 503 with ``Retry-After`` when the tenant's data server is unreachable.

    The app's own 503 handler, if any, makes the page; the error's text (it
    may name the server) never reaches the client, and is logged once per
    request with the tenant's slug. Errors that :func:`is_unreachable` does
    not claim go to the handler the app registered for them, as if this one
    were not there, or are a 500.
    """

    # A partial, not a closure: a handler closing over the app (and over
    # itself, to skip itself) would keep an evicted app alive in a cycle.
    unavailable = partial(_answer_unavailable, retry_after)
    for kind in (sa_exc.DBAPIError, sa_exc.TimeoutError, *_driver_operational_errors()):
        app.register_error_handler(kind, unavailable)


def _answer_unavailable(retry_after: int, error: Exception) -> ResponseReturnValue:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if not is_unreachable(error):
        return _defer(app, error)
    log.warning(
        "tenant %s: its data is unreachable, answered 503: %s",
        _slug(app),
        _summary(error),
    )
    answer = ServiceUnavailable(description=_DESCRIPTION, retry_after=retry_after)
    response: Response = app.make_response(app.handle_http_exception(answer))
    response.headers.setdefault("Retry-After", str(retry_after))
    return response


def _is_ours(handler: object) -> bool:
    return isinstance(handler, partial) and handler.func is _answer_unavailable


def _defer(app: Flask, error: Exception) -> ResponseReturnValue:
    """What Flask does with ``error`` without the 503 handler: the app's next
    handler along the error's classes, else a 500.

    Only app-wide handlers: Flask asks a blueprint's before the app's, so none
    of the request's blueprints has one for this error.
    """
    handlers = app.error_handler_spec.get(None, {}).get(None, {})
    for kind in type(error).__mro__:
        handler = handlers.get(kind)
        if handler is not None and not _is_ours(handler):
            return app.ensure_sync(handler)(error)  # type: ignore[no-any-return]
    raise error


def _slug(app: Flask) -> str:
    tenant = request.environ.get(ENVIRON_KEY)
    if not isinstance(tenant, Tenant):
        # An app called directly, not through the dispatcher: its binding's.
        tenant = getattr(app.extensions.get("dispatcher.data"), "tenant", None)
    return repr(tenant.slug) if isinstance(tenant, Tenant) else "(unknown)"


def _summary(error: BaseException) -> str:
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    lines = str(cause).strip().splitlines()
    name = type(cause).__name__
    return f"{name}: {lines[0]}" if lines else name

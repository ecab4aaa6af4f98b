"""break_cycles: a torn-down Flask app is freed by reference counting alone.

Every test runs with the collector disabled and never calls ``gc.collect()``:
an object still alive then is one only the cyclic collector would free.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask, render_template
from jinja2 import DictLoader
from werkzeug.test import Client

from dispatcher.entries import default_teardown
from dispatcher.reclaim import break_cycles
from scripts.realistic_app import create_app, hello_app
from tests.helpers import make_tenant

shared_pages = Blueprint("shared", __name__)


@shared_pages.route("/shared")
def shared_view() -> str:
    return "shared"


@pytest.fixture(autouse=True)
def _no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _serve(app: Any, *paths: str) -> None:
    client = Client(app)
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status)
        response.close()


def _app_with_its_own_cycles(tenant: Any) -> Flask:
    """Cycles of the kinds tenant apps make: a view closing over the app,
    a template rendered (Jinja environment and compiled template)."""
    app = Flask("closures")
    app.jinja_loader = DictLoader({"index.html": "<p>{{ name }}</p>"})

    @app.route("/")
    def index() -> str:
        return render_template("index.html", name=app.name)

    return app


FACTORIES = [
    pytest.param(hello_app, ("/",), id="hello"),
    pytest.param(_app_with_its_own_cycles, ("/",), id="closure and template"),
    pytest.param(create_app, ("/", "/items", "/api/items", "/admin/"), id="realistic"),
]


@pytest.mark.parametrize(("factory", "paths"), FACTORIES)
def test_a_served_app_is_freed_without_the_collector(
    factory: Callable[[Any], Flask], paths: tuple[str, ...]
) -> None:
    tenant = make_tenant("acme")
    app = factory(tenant)
    _serve(app, *paths)
    default_teardown(app, tenant)
    freed = weakref.ref(app)
    url_map = weakref.ref(app.url_map)
    environment = weakref.ref(app.jinja_env)
    assert break_cycles(app)
    del app
    assert freed() is None
    assert url_map() is None
    assert environment() is None


def test_without_breaking_the_app_waits_for_the_collector() -> None:
    # What break_cycles is for: the same app, dropped as is, is not freed.
    app = _app_with_its_own_cycles(make_tenant("acme"))
    _serve(app, "/")
    freed = weakref.ref(app)
    del app
    assert freed() is not None
    gc.collect()
    assert freed() is None


def test_apps_sharing_a_name_a_blueprint_and_a_logger_keep_them() -> None:
    logger = logging.getLogger("hello")  # the logger of every app named "hello"
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        first, second = hello_app(), hello_app()
        for app in (first, second):
            app.register_blueprint(shared_pages)
            _serve(app, "/", "/shared")
        assert first.logger is second.logger is logger
        assert break_cycles(first)
        del first
        _serve(second, "/", "/shared")
        assert logger.handlers == [handler]
        assert shared_pages.deferred_functions  # registrable by the next app
        third = hello_app()
        third.register_blueprint(shared_pages)
        _serve(third, "/shared")
    finally:
        logger.removeHandler(handler)


def test_a_config_value_shared_by_tenants_is_untouched() -> None:
    plans = {"basic": ["notes"]}
    first, second = Flask("a"), Flask("b")
    first.config["PLANS"] = second.config["PLANS"] = plans
    assert break_cycles(first)
    assert plans == {"basic": ["notes"]}
    assert second.config["PLANS"] is plans


def test_an_app_that_is_not_flask_is_left_alone() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    app.marker = "kept"  # type: ignore[attr-defined]
    assert not break_cycles(app)
    assert app.marker == "kept"  # type: ignore[attr-defined]

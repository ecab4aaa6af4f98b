"""A realistic tenant app for benchmarks, beside a hello-world one.

Issue 12 measures the dispatcher with apps like the ones tenants ship, not
only hello world: :func:`create_app` builds a Flask app with three blueprints
(pages, a JSON API, an admin area), 30 routes, Jinja templates on disk
(``scripts/realistic_templates/``: a base layout and pages that extend it) and
Flask-SQLAlchemy bound to an engine of the app's own (``db.init_app(app)``: an
in-memory SQLite database per app unless ``tenant.config`` names another
``SQLALCHEMY_DATABASE_URI``), configured from ``tenant.config``. The engine is
disposed at teardown (``app.extensions["dispatcher.teardown"]``).

    from dispatcher import TenantDispatcher
    from scripts.realistic_app import create_app

    TenantDispatcher(registry, create_app, base_domain="example.com")

``python scripts/realistic_app.py`` prints what one cached copy costs: build
time, objects the cyclic collector tracks, and KiB (tracemalloc), for both
apps, after a first request has rendered a template and run a query.
"""

from __future__ import annotations

import datetime as dt
import gc
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dispatcher.tenant import Tenant, thaw

__all__ = ["Item", "create_app", "db", "hello_app", "measure"]

TEMPLATES = Path(__file__).with_name("realistic_templates")

#: Seeded into each app's database at build, so pages list something.
SEED_ITEMS = 5


class Base(DeclarativeBase):
    pass


#: One extension for every app, as Flask-SQLAlchemy is meant to be used: models
#: are defined once; each app gets its engine from ``db.init_app(app)``.
db = SQLAlchemy(model_class=Base)


class Item(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    body: Mapped[str | None]


def hello_app(tenant: Tenant | None = None) -> Flask:
    """Flask's hello world, the smallest tenant app, for comparison."""
    app = Flask("hello")

    @app.route("/")
    def index() -> str:
        return "Hello, World!"

    return app


def create_app(tenant: Tenant) -> Flask:
    """A tenant's app: 3 blueprints, 30 routes, templates, its own engine."""
    app = Flask(__name__, template_folder=str(TEMPLATES))
    app.config.update(
        SECRET_KEY=f"not-secret-{tenant.slug}",
        SITE_TITLE=tenant.slug.title(),
        GREETING="Hello from your own app.",
        SQLALCHEMY_DATABASE_URI="sqlite://",
        ITEMS_PER_PAGE=20,
    )
    app.config.update(thaw(tenant.config))
    db.init_app(app)
    app.register_blueprint(_pages())
    app.register_blueprint(_api(), url_prefix="/api")
    app.register_blueprint(_admin(), url_prefix="/admin")

    @app.context_processor
    def tenant_context() -> dict[str, Any]:
        return {"tenant_slug": tenant.slug}

    @app.errorhandler(404)
    def not_found(_error: Exception) -> tuple[str, int]:
        return render_template("page.html", heading="Not found", paragraphs=()), 404

    with app.app_context():
        db.create_all()
        db.session.add_all(
            Item(name=f"item {n}", body=f"The item number {n}.")
            for n in range(1, SEED_ITEMS + 1)
        )
        db.session.commit()
        engine = db.engine
    # Bound methods of the engine: they hold no reference back to the app. An
    # engine is a web of cycles only the collector frees; emptying its cache
    # of compiled statements at teardown leaves the smallest part to it.
    app.extensions.setdefault("dispatcher.teardown", []).extend(
        (engine.dispose, engine.clear_compiled_cache)
    )
    return app


def _pages() -> Blueprint:
    pages = Blueprint("main", __name__)

    @pages.route("/")
    def index() -> str:
        latest = db.session.scalars(select(Item).order_by(Item.id.desc()).limit(3))
        return render_template(
            "index.html", greeting=current_app.config["GREETING"], latest=latest
        )

    @pages.route("/items")
    def items() -> str:
        limit = current_app.config["ITEMS_PER_PAGE"]
        rows = db.session.scalars(select(Item).order_by(Item.id).limit(limit))
        return render_template("items.html", items=rows)

    @pages.route("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return render_template("item.html", item=db.get_or_404(Item, item_id))

    @pages.route("/search")
    def search() -> str:
        term = request.args.get("q", "")
        rows = db.session.scalars(select(Item).where(Item.name.contains(term)))
        return render_template("items.html", items=rows)

    @pages.route("/contact", methods=["GET", "POST"])
    def contact() -> Any:
        if request.method == "POST":
            flash("Thanks, we will be in touch.")
            return redirect(url_for("main.index"))
        return _page("Contact", "Write to us.")

    for name, text in _STATIC_PAGES.items():
        pages.add_url_rule(f"/{name}", name, _static_page(name.title(), text))
    return pages


_STATIC_PAGES = {
    "about": "Who we are.",
    "pricing": "What it costs.",
    "features": "What it does.",
    "faq": "What people ask.",
    "terms": "What we agree on.",
}


def _page(heading: str, *paragraphs: str) -> str:
    return render_template("page.html", heading=heading, paragraphs=paragraphs)


def _static_page(heading: str, text: str) -> Callable[[], str]:
    def view() -> str:
        return _page(heading, text)

    return view


def _api() -> Blueprint:
    api = Blueprint("api", __name__)

    @api.route("/status")
    def status() -> Any:
        return jsonify(ok=True)

    @api.route("/items")
    def items() -> Any:
        rows = db.session.scalars(select(Item).order_by(Item.id))
        return jsonify([{"id": row.id, "name": row.name} for row in rows])

    @api.route("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        row = db.get_or_404(Item, item_id)
        return jsonify(id=row.id, name=row.name, body=row.body)

    @api.route("/items", methods=["POST"])
    def add_item() -> Any:
        payload = request.get_json(silent=True) or {}
        name = payload.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 100:
            abort(400, "name must be a string of 1 to 100 characters")
        row = Item(name=name, body=payload.get("body"))
        db.session.add(row)
        db.session.commit()
        return jsonify(id=row.id), 201

    @api.route("/count")
    def count() -> Any:
        return jsonify(count=db.session.scalar(select(func.count(Item.id))))

    @api.route("/config")
    def config() -> Any:
        return jsonify(title=current_app.config["SITE_TITLE"])

    @api.route("/time")
    def now() -> Any:
        return jsonify(now=dt.datetime.now(dt.UTC).isoformat())

    @api.route("/echo", methods=["POST"])
    def echo() -> Any:
        return jsonify(request.get_json(silent=True))

    @api.route("/version")
    def version() -> Any:
        return jsonify(version="1.0")

    @api.route("/health")
    def health() -> Any:
        return jsonify(database=db.session.scalar(select(1)) == 1)

    return api


def _admin() -> Blueprint:
    admin = Blueprint("admin", __name__)

    def section(name: str, rows: Iterable[tuple[str, Any]]) -> str:
        return render_template("admin.html", section=name, rows=list(rows))

    @admin.route("/")
    def dashboard() -> str:
        total = db.session.scalar(select(func.count(Item.id)))
        return section("dashboard", [("items", total)])

    @admin.route("/users")
    def users() -> str:
        return section("users", [("owner", "owner")])

    @admin.route("/users/<int:user_id>")
    def user(user_id: int) -> str:
        return section("user", [("id", user_id)])

    @admin.route("/settings")
    def settings() -> str:
        return section("settings", [("title", current_app.config["SITE_TITLE"])])

    @admin.route("/stats")
    def stats() -> str:
        return section("stats", [("routes", len(current_app.url_map._rules))])

    @admin.route("/logs")
    def logs() -> str:
        return section("logs", [])

    @admin.route("/reports")
    def reports() -> str:
        return section("reports", [("monthly", "ready")])

    @admin.route("/reports/<name>")
    def report(name: str) -> str:
        return section(f"report {name}", [])

    @admin.route("/cache")
    def cache() -> str:
        return section("cache", [("templates", len(current_app.jinja_env.cache or {}))])

    @admin.route("/flags", methods=["GET", "POST"])
    def flags() -> str:
        return section("flags", request.form.items())

    return admin


# -- measuring one cached copy -------------------------------------------------


def warm(app: Flask, paths: Iterable[str] = ("/", "/items", "/api/items")) -> None:
    """Serve ``paths`` once each, as a cached app has (templates compiled)."""
    client = app.test_client()
    for path in paths:
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status}")


def measure(
    factory: Callable[[Tenant], Flask], copies: int = 50, paths: Iterable[str] = ("/",)
) -> dict[str, float]:
    """Build time (ms), tracked objects and KiB per app, over ``copies`` apps."""
    from tests.helpers import make_tenant

    paths = tuple(paths)
    factory(make_tenant("warmup"))  # imports, first compilation of code paths
    gc.collect()
    tracemalloc.start()
    before_kib = tracemalloc.get_traced_memory()[0] / 1024
    before_objects = len(gc.get_objects())
    apps = []
    build = 0.0
    for n in range(copies):
        started = time.perf_counter()
        app = factory(make_tenant(f"m{n}"))
        build += time.perf_counter() - started
        warm(app, paths)
        apps.append(app)
    gc.collect()
    objects = len(gc.get_objects()) - before_objects
    kib = tracemalloc.get_traced_memory()[0] / 1024 - before_kib
    tracemalloc.stop()
    return {
        "build_ms": build / copies * 1000,
        "tracked_objects": objects / copies,
        "kib": kib / copies,
    }


def main() -> None:
    for name, factory, paths in (
        ("hello", hello_app, ("/",)),
        ("realistic", create_app, ("/", "/items", "/api/items")),
    ):
        figures = measure(factory, paths=paths)
        print(
            f"{name}: build {figures['build_ms']:.2f} ms (tracemalloc on),"
            f" {figures['tracked_objects']:.0f} tracked objects,"
            f" {figures['kib']:.0f} KiB per cached copy"
        )
    # Build time without tracemalloc's overhead.
    from tests.helpers import make_tenant

    for name, factory in (("hello", hello_app), ("realistic", create_app)):
        started = time.perf_counter()
        for n in range(100):
            factory(make_tenant(f"b{n}"))
        print(f"{name}: build {(time.perf_counter() - started) * 10:.2f} ms")


if __name__ == "__main__":
    main()

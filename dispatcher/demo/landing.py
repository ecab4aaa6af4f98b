"""The demo's default app: what the apex host and unknown names show."""

from __future__ import annotations

from flask import Flask, render_template


def create_landing_app() -> Flask:
    app = Flask(__name__)

    @app.route("/", defaults={"path": ""})
    @app.route("/<path:path>")
    def landing(path: str) -> tuple[str, int]:
        status = 200 if not path else 404
        return render_template("landing.html", colour="#495057", path=path), status

    return app

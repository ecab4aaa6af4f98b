"""A tenant app for the stream tests under real servers.

``DISPATCHER_APP_FACTORY=streams_probe_app:create_app`` (with ``tests/`` on
``PYTHONPATH``). Routes:

* ``POST /form``: reads ``request.form`` and answers how many fields it had.
* ``GET /file``: ``send_file`` of ``STREAMS_PROBE_FILE`` through a file object
  that counts its ``read()`` calls; a server that uses sendfile never reads it.
* ``GET /reads``: ``{"reads": n}``, the reads of every ``/file`` so far in
  this process (one worker, so every request lands here).
* ``GET /single``: a plain WSGI answer, one chunk in a list, no Content-Length:
  a server may add one only if it can take ``len()`` of the body.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, request, send_file

from dispatcher import Tenant

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

FILE_VARIABLE = "STREAMS_PROBE_FILE"
SINGLE_CHUNK = b"one chunk, no Content-Length"

_reads = [0]


class CountingFile(io.FileIO):
    """A file whose ``read()`` calls are counted (sendfile never calls it)."""

    def read(self, size: int | None = -1, /) -> bytes:
        _reads[0] += 1
        return super().read(size)


def create_app(tenant: Tenant) -> WSGIApplication:
    app = Flask(__name__)

    @app.post("/form")
    def form() -> dict[str, object]:
        return {"fields": len(request.form)}

    @app.get("/file")
    def file() -> object:
        path = os.environ[FILE_VARIABLE]
        return send_file(CountingFile(path), mimetype="application/octet-stream")

    @app.get("/reads")
    def reads() -> dict[str, object]:
        return {"reads": _reads[0]}

    def single_or_flask(
        environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/single":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [SINGLE_CHUNK]
        return app(environ, start_response)

    return single_or_flask

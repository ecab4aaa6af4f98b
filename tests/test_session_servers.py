"""Tenant sessions in real gunicorn workers, seen by a client that keeps cookies.

``gunicorn -w 2 dispatcher.wsgi:application`` with ``session_probe_app`` as the
tenant app (it calls :func:`init_tenant_sessions` with ``DISPATCHER_SECRET_KEY``)
and a :class:`http.cookiejar.CookieJar` that stores and sends cookies by
domain and path as a browser does. Every request is on a fresh connection, so
either worker may take it: a session made in one worker must be honoured by the
other (the key is derived, not random), and never by another tenant.

``*.localhost`` need not resolve on this machine: the client connects to
127.0.0.1 whatever the URL's host, which still decides the Host header and
which cookies the jar sends.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import Cookie, CookieJar
from pathlib import Path
from typing import Any

import pytest
from servers import (
    REQUEST_TIMEOUT,
    TESTS,
    Server,
    free_port,
    gunicorn_command,
    python_path,
    request,
    running,
)

from dispatcher import TenantRegistry

SECRET = "a-deployment-secret-for-the-session-server-tests"
WORKERS = 2
ROUNDS = 6  # requests per check, so that both workers likely answer some


class _LoopbackConnection(http.client.HTTPConnection):
    """Connects to 127.0.0.1, whatever host the URL names."""

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)


class _LoopbackHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_LoopbackConnection, req)


class Browser:
    """A cookie jar and the requests that use it, like one browser profile."""

    def __init__(self) -> None:
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(
            _LoopbackHandler(), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def call(self, url: str, form: dict[str, str] | None = None) -> dict[str, Any]:
        data = None if form is None else urllib.parse.urlencode(form).encode()
        with self.opener.open(url, data=data, timeout=REQUEST_TIMEOUT) as response:
            assert response.status == 200
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def sessions(self) -> list[Cookie]:
        return [cookie for cookie in self.jar if cookie.name == "session"]


@dataclass(frozen=True)
class Routing:
    by_path: bool
    port: int

    def url(self, slug: str, path: str) -> str:
        if self.by_path:
            return f"http://localhost:{self.port}/{slug}{path}"
        return f"http://{slug}.localhost:{self.port}{path}"


@pytest.fixture
def server(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> Iterator[Server]:
    for slug in ("acme", "beta"):
        registry.create_tenant(
            slug, owner_email=f"owner@{slug}.test", subdomain=slug, path_prefix=slug
        )
    port = free_port()
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_BASE_DOMAIN": "localhost",
        "DISPATCHER_APP_FACTORY": "session_probe_app:create_app",
        "DISPATCHER_SECRET_KEY": SECRET,
        "DISPATCHER_POLL_INTERVAL": "0",
        "PYTHONPATH": python_path(TESTS),
    }
    command = gunicorn_command(
        "dispatcher.wsgi:application", port=port, workers=WORKERS
    )
    log_path = tmp_path / "gunicorn.log"
    with running(command, port=port, env=env, log_path=log_path, cwd=tmp_path) as s:
        yield s


def users(browser: Browser, routing: Routing, slug: str) -> tuple[set[Any], set[int]]:
    """Who tenant ``slug`` says is logged in over ROUNDS requests, and which pids."""
    answers = [browser.call(routing.url(slug, "/whoami")) for _ in range(ROUNDS)]
    assert {answer["tenant"] for answer in answers} == {slug}
    return {answer["user"] for answer in answers}, {answer["pid"] for answer in answers}


@pytest.mark.parametrize(
    "by_path",
    [pytest.param(False, id="subdomain"), pytest.param(True, id="path")],
)
def test_sessions_stay_with_their_tenant_in_every_worker(
    server: Server, by_path: bool
) -> None:
    routing = Routing(by_path, server.port)
    browser = Browser()

    browser.call(routing.url("beta", "/login"), {"user": "bob"})
    browser.call(routing.url("acme", "/login"), {"user": "ada"})

    acme_users, acme_pids = users(browser, routing, "acme")
    beta_users, beta_pids = users(browser, routing, "beta")
    assert acme_users == {"ada"}, server.log()
    assert beta_users == {"bob"}, server.log()

    # One cookie per tenant, host-only, on the tenant's path.
    scopes = {(c.domain, c.path, c.domain_specified) for c in browser.sessions()}
    if by_path:
        # http.cookiejar files a dotless host under "<host>.local".
        expected = {
            ("localhost.local", "/acme", False),
            ("localhost.local", "/beta", False),
        }
    else:
        expected = {("acme.localhost", "/", False), ("beta.localhost", "/", False)}
    assert scopes == expected

    browser.call(routing.url("acme", "/logout"), {})
    assert users(browser, routing, "acme")[0] == {None}
    assert users(browser, routing, "beta")[0] == {"bob"}
    # Not a check (the kernel picks the worker), but what the log should show.
    print(f"workers that answered: {sorted(acme_pids | beta_pids)}")


@pytest.mark.parametrize(
    "by_path",
    [pytest.param(False, id="subdomain"), pytest.param(True, id="path")],
)
def test_a_stolen_cookie_of_a_is_refused_by_b(server: Server, by_path: bool) -> None:
    routing = Routing(by_path, server.port)
    victim = Browser()
    victim.call(routing.url("acme", "/login"), {"user": "admin-of-acme"})
    (cookie,) = victim.sessions()

    for slug in ("beta", "acme"):
        # The stolen value, sent by hand (no jar) to each tenant.
        target = urllib.parse.urlsplit(routing.url(slug, "/whoami"))
        for _ in range(ROUNDS):
            response = request(
                server.port,
                target.path,
                host=target.netloc,
                headers={"Cookie": f"session={cookie.value}"},
            )
            assert response.status == 200, response.body
            answer = response.json()
            assert answer["tenant"] == slug
            assert answer["user"] == (None if slug == "beta" else "admin-of-acme")

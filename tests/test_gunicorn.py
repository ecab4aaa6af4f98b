"""``gunicorn -w 4 'dispatcher.wsgi:application'``, with and without ``--preload``.

Real gunicorn processes on a loopback port, configured the way the README says:
``DISPATCHER_*`` variables, the demo signup site as the default app. The tenant
app is ``gunicorn_probe_app.py``: it answers ``{"tenant", "pid", "version"}``,
so a test sees which worker served each request. Every request is sent on a
fresh connection, so any of the four workers may take it.

What has to hold across the fork: no database connection is shared (each
worker's registry drops the pooled connections it inherited; on PostgreSQL a
shared socket garbles concurrent queries), the schema is migrated once even
when four workers start on an empty database at the same moment, a tenant
written by one process (a signup in one worker, ``tenantctl add`` beside the
server) is served by every worker, and no thread is shared either: after a
``--preload`` fork every worker runs a change follower of its own. How fast
each kind of write reaches the workers is ``test_invalidation.py``'s subject.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import Message
from http.cookies import SimpleCookie
from pathlib import Path

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
    tenantctl,
)

WORKERS = 4
PROBE_FACTORY = "gunicorn_probe_app:create_app"
CSRF_COOKIE = "signup_csrf"

# Requests on fresh connections, one after the other, that must all be served;
# then up to HELD_ROUNDS rounds of WORKERS requests held open together (see
# _probe_together) until two workers or more have answered.
REQUESTS = 40
HELD_ROUNDS = 5

NEGATIVE_TTL = 0.5
# The longest a worker that remembered a name as unknown may keep answering 404
# after the signup: the negative TTL and time to spare on a slow machine.
NEGATIVE_BOUND = 3.0
POLL_INTERVAL = 0.05
SETTLE = 0.2

# Follower of the change feed in each worker (DISPATCHER_POLL_INTERVAL), and
# how soon every worker must serve another process's write with it.
FOLLOW_INTERVAL = 0.5
FOLLOW_BOUND = 3.0

BOTH_WAYS = pytest.mark.parametrize(
    "preload",
    [
        pytest.param(False, id="load-in-each-worker"),
        pytest.param(True, id="preload"),
    ],
)


@dataclass(frozen=True)
class Answer:
    """What one request for a tenant's host got back."""

    status: int | None  # None: no HTTP answer at all
    tenant: str | None = None
    pid: int | None = None
    version: int | None = None
    detail: str = ""

    def served(self, slug: str) -> bool:
        return self.status == 200 and self.tenant == slug


@contextmanager
def _gunicorn(
    database_url: str, tmp_path: Path, *, preload: bool, **settings: str
) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_BASE_DOMAIN": "localhost",
        "DISPATCHER_APP_FACTORY": PROBE_FACTORY,
        "PYTHONPATH": python_path(TESTS),
        **settings,
    }
    command = gunicorn_command(
        "dispatcher.wsgi:application", port=port, workers=WORKERS, preload=preload
    )
    log_path = tmp_path / "gunicorn.log"
    with running(command, port=port, env=env, log_path=log_path, cwd=tmp_path) as s:
        yield s


def _probe(port: int, name: str) -> Answer:
    """``GET /`` on ``<name>.localhost``, a fresh connection."""
    try:
        response = request(port, "/", host=f"{name}.localhost:{port}")
    except (OSError, http.client.HTTPException) as e:
        return Answer(None, detail=f"{type(e).__name__}: {e}")
    return _parse(response.status, response.headers, response.body)


def _parse(status: int, headers: Message, body: str) -> Answer:
    if status == 200 and headers.get_content_type() == "application/json":
        data = json.loads(body)
        return Answer(200, data["tenant"], data["pid"], data["version"])
    return Answer(status, detail=body[:300])


def _probe_all(port: int, names: Iterable[str], *, threads: int) -> list[Answer]:
    """Probe each name (repeats allowed), ``threads`` requests at a time."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda name: _probe(port, name), names))


def _probe_together(port: int, name: str, count: int) -> list[Answer]:
    """``count`` requests for ``name``, each likely taken by a different worker.

    Every connection gets its request line, then, SETTLE seconds later, the
    rest of its request. A sync worker that has accepted a connection is stuck
    reading it until then, so the other connections go to other workers.
    """
    request_line = b"GET / HTTP/1.1\r\n"
    rest = f"Host: {name}.localhost:{port}\r\nConnection: close\r\n\r\n".encode()
    with ExitStack() as stack:
        connections = []
        for _ in range(count):
            connection = socket.create_connection(
                ("127.0.0.1", port), timeout=REQUEST_TIMEOUT
            )
            stack.enter_context(connection)
            connection.sendall(request_line)
            connections.append(connection)
        time.sleep(SETTLE)
        for connection in connections:
            connection.sendall(rest)
        return [_answer(connection) for connection in connections]


def _answer(connection: socket.socket) -> Answer:
    response = http.client.HTTPResponse(connection)
    try:
        response.begin()
        return _parse(response.status, response.headers, response.read().decode())
    except (OSError, http.client.HTTPException) as e:
        return Answer(None, detail=f"{type(e).__name__}: {e}")
    finally:
        response.close()


def _served_by_workers(server: Server, slug: str) -> set[int]:
    """Requests on fresh connections: all must be served, by two workers or more.

    REQUESTS one after the other, as a visitor sends them; then, since the
    kernel may hand a whole sequence to the one worker that just finished, a
    round of one request held open per worker, and more such rounds (up to
    HELD_ROUNDS) until two or more workers have answered. Returns their pids.
    """
    answers = [_probe(server.port, slug) for _ in range(REQUESTS)]
    pids = {answer.pid for answer in answers if answer.pid is not None}
    for round_ in range(HELD_ROUNDS):
        if round_ > 0 and len(pids) >= 2:
            break
        held = _probe_together(server.port, slug, WORKERS)
        answers += held
        pids.update(answer.pid for answer in held if answer.pid is not None)
    wrong = [answer for answer in answers if not answer.served(slug)]
    assert not wrong, (
        f"{len(wrong)} of {len(answers)} requests not served: {wrong}\n"
        f"gunicorn's log:\n{server.log()}"
    )
    assert len(pids) >= 2, (
        f"{len(answers)} requests all went to worker {pids}; "
        f"gunicorn's log:\n{server.log()}"
    )
    return pids


def _signup_form(port: int) -> tuple[str, str]:
    """GET the signup page on the apex: the CSRF cookie and the form's token."""
    page = request(port, "/", host=f"localhost:{port}")
    assert page.status == 200, page.body
    cookies = SimpleCookie()
    for header in page.headers.get_all("Set-Cookie", []):
        cookies.load(header)
    assert CSRF_COOKIE in cookies, page.headers
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.body)
    assert token is not None, page.body
    return cookies[CSRF_COOKIE].value, token.group(1)


def _sign_up(port: int, name: str, csrf: tuple[str, str]) -> None:
    """POST the signup form like a browser would; expect the tenant's URL."""
    cookie, token = csrf
    form = {
        "csrf_token": token,
        "organisation": f"{name.title()} Ltd",
        "subdomain": name,
        "email": f"owner@{name}.test",
        "password": "correct horse battery",
    }
    response = request(
        port,
        "/",
        host=f"localhost:{port}",
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"{CSRF_COOKIE}={cookie}",
        },
        body=urllib.parse.urlencode(form),
    )
    assert response.status == 303, response.body
    # The new site (through its one-time sign-in link, with tenant data).
    assert response.headers["Location"].startswith(f"http://{name}.localhost:{port}/")


@BOTH_WAYS
def test_a_signup_is_served_by_the_next_request_whichever_worker_takes_it(
    database_url: str, tmp_path: Path, preload: bool
) -> None:
    # An empty database: four workers (or the master) migrate it as they start.
    with _gunicorn(database_url, tmp_path, preload=preload) as server:
        _sign_up(server.port, "acme", _signup_form(server.port))

        _served_by_workers(server, "acme")


@BOTH_WAYS
def test_workers_that_remembered_the_name_as_unknown_serve_it_after_the_ttl(
    database_url: str, tmp_path: Path, preload: bool
) -> None:
    settings = {"DISPATCHER_NEGATIVE_TTL": str(NEGATIVE_TTL)}
    with _gunicorn(database_url, tmp_path, preload=preload, **settings) as server:
        csrf = _signup_form(server.port)
        # Several connections ask for the name first: the workers that take
        # them remember it as unknown for NEGATIVE_TTL. Only the worker that
        # takes the signup hears of the new tenant at once.
        before = _probe_together(server.port, "acme", WORKERS)
        assert {answer.status for answer in before} == {404}, before
        signed_up_at = time.monotonic()
        _sign_up(server.port, "acme", csrf)

        # Until the TTL has passed the workers that remembered the name may
        # still say 404. Then every worker must serve it: poll (a real server,
        # so real time) with one request held open per worker until all of
        # them are served, within NEGATIVE_BOUND.
        ttl_over_at = signed_up_at + NEGATIVE_TTL
        not_served: list[tuple[float, Answer]] = []
        while True:
            started = time.monotonic()
            waited = started - signed_up_at
            assert waited < NEGATIVE_BOUND, (
                f"not every worker serves the tenant {waited:.2f} s after the "
                f"signup (negative TTL {NEGATIVE_TTL} s): {not_served}"
            )
            if started < ttl_over_at:
                answers = [_probe(server.port, "acme")]
            else:
                answers = _probe_together(server.port, "acme", WORKERS)
            failed = [answer for answer in answers if not answer.served("acme")]
            not_served += [(round(waited, 3), answer) for answer in failed]
            if started >= ttl_over_at and not failed:
                break
            time.sleep(POLL_INTERVAL)
        # The names were remembered before the signup was sent, so they were
        # forgotten by ttl_over_at: a 404 after it, or any other failure, is
        # a bug.
        wrong = [
            (waited, answer)
            for waited, answer in not_served
            if answer.status != 404 or waited >= NEGATIVE_TTL
        ]
        assert not wrong, f"not served, and not a 404 within the TTL: {wrong}"

        _served_by_workers(server, "acme")


@BOTH_WAYS
def test_a_tenant_added_by_tenantctl_is_served_by_workers_at_once(
    database_url: str, tmp_path: Path, preload: bool
) -> None:
    with _gunicorn(database_url, tmp_path, preload=preload) as server:
        # Every worker queries the database (unknown names are misses) before
        # the tenant exists; with --preload they were all forked from a master
        # that had used, and pooled, a connection.
        unknown = [f"unknown-{i}" for i in range(4 * WORKERS)]
        before = _probe_all(server.port, unknown, threads=2 * WORKERS)
        assert {answer.status for answer in before} == {404}, before

        for slug in ("beta", "gamma"):
            owner = f"owner@{slug}.test"
            tenantctl(database_url, "add", slug, "--owner", owner, "--subdomain", slug)
        # Requests to all workers at once, so their queries interleave: two
        # new tenants (a miss, then hits, in each worker) and unknown names
        # (a miss every time).
        names = [
            name for i in range(30) for name in ("beta", "gamma", f"unknown-{i}-more")
        ]
        answers = _probe_all(server.port, names, threads=2 * WORKERS)

        expected = {name: 404 if name.startswith("unknown") else 200 for name in names}
        wrong = [
            (name, answer)
            for name, answer in zip(names, answers, strict=True)
            if answer.status != expected[name]
            or (answer.status == 200 and not answer.served(name))
        ]
        assert not wrong, (
            f"{len(wrong)} of {len(answers)} wrong: {wrong}\n"
            f"gunicorn's log:\n{server.log()}"
        )
        _served_by_workers(server, "beta")


def test_after_a_preload_fork_every_worker_follows_other_processes_writes(
    database_url: str, tmp_path: Path
) -> None:
    # Each worker needs a change follower thread of its own: threads do not
    # survive the fork, and the master, which built the app, must not have
    # used up the one start the workers' followers get.
    settings = {"DISPATCHER_POLL_INTERVAL": str(FOLLOW_INTERVAL)}
    with _gunicorn(database_url, tmp_path, preload=True, **settings) as server:
        owner = "owner@acme.test"
        tenantctl(database_url, "add", "acme", "--owner", owner, "--subdomain", "acme")
        # Every worker builds acme's app, to keep it for the app TTL (an hour)
        # unless its follower hears of a change.
        built = _answers_of_every_worker(server, "acme")
        versions = {answer.version for answer in built}
        assert len(versions) == 1, built
        (old_version,) = versions

        tenantctl(database_url, "config", "set", "acme", "greeting", "Hello")
        changed_at = time.monotonic()

        stale = {answer.pid for answer in built}
        while stale:
            waited = time.monotonic() - changed_at
            assert waited < FOLLOW_BOUND, (
                f"workers {stale} still serve version {old_version} {waited:.2f} s "
                f"after the change; gunicorn's log:\n{server.log()}"
            )
            for answer in _probe_together(server.port, "acme", WORKERS):
                assert answer.served("acme"), answer
                assert answer.version is not None and old_version is not None
                if answer.version > old_version:
                    stale.discard(answer.pid)
            time.sleep(POLL_INTERVAL)


def _answers_of_every_worker(server: Server, slug: str) -> list[Answer]:
    """One served answer from each of the WORKERS workers (rounds of held requests)."""
    answers: dict[int, Answer] = {}
    for _ in range(HELD_ROUNDS):
        for answer in _probe_together(server.port, slug, WORKERS):
            assert answer.served(slug), answer
            assert answer.pid is not None
            answers.setdefault(answer.pid, answer)
        if len(answers) == WORKERS:
            return list(answers.values())
    pytest.fail(f"only workers {sorted(answers)} answered in {HELD_ROUNDS} rounds")


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("DISPATCHER_MAX_APPS", "lots", "DISPATCHER_MAX_APPS='lots'"),
        ("DISPATCHER_APP_FACTORY", "nowhere:create_app", "DISPATCHER_APP_FACTORY="),
    ],
)
@BOTH_WAYS
def test_a_bad_setting_stops_the_start_in_one_line(
    database_url: str,
    tmp_path: Path,
    preload: bool,
    setting: str,
    value: str,
    message: str,
) -> None:
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "PYTHONPATH": python_path(TESTS),
        setting: value,
    }
    command = gunicorn_command(
        "dispatcher.wsgi:application", port=free_port(), workers=2, preload=preload
    )
    done = subprocess.run(
        command,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    [last] = done.stderr.strip().splitlines()[-1:]
    assert last.startswith("Error: ") and message in last, done.stderr

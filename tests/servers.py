"""Real server processes for the tests: started on a free loopback port, always stopped.

Usage::

    port = free_port()
    with running(command, port=port, env=env, log_path=tmp_path / "server.log") as s:
        answer = request(s.port, "/", host=f"acme.localhost:{s.port}")

A server that does not answer HTTP within ``START_TIMEOUT`` fails the test with
its log (stdout and stderr go to ``log_path``, never to a pipe nobody reads,
which would block a chatty server). On the way out the server gets SIGTERM and,
if it has not exited after ``STOP_TIMEOUT``, SIGKILL for its whole process
group (it runs in a session of its own, so that includes gunicorn's workers).

Imported by the tests as ``from servers import ...``: ``tests/`` has no
``__init__.py``, so pytest's default "prepend" import mode puts it on sys.path.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
TENANTCTL = Path(sys.executable).with_name("tenantctl")

START_TIMEOUT = 30.0  # seconds until a server must answer HTTP
STOP_TIMEOUT = 10.0  # seconds a server gets to exit after SIGTERM
REQUEST_TIMEOUT = 10.0  # seconds per HTTP request (connect, send, read)
COMMAND_TIMEOUT = 60.0  # seconds per tenantctl command


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    path: str = "/",
    *,
    host: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Response:
    """One request on a fresh connection to 127.0.0.1:``port``, with this Host.

    ``Connection: close``: every request is accepted anew, by whichever worker
    of a pre-fork server takes it.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        connection.putheader("Connection", "close")
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        data = None if body is None else body.encode()
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


@dataclass(frozen=True)
class Server:
    command: tuple[str, ...]
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")


@contextmanager
def running(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
    ready_host: str | None = None,
    start_timeout: float = START_TIMEOUT,
) -> Iterator[Server]:
    """Run ``command`` (a server listening on ``port``) for the ``with`` block.

    Ready once ``GET /`` with Host ``ready_host`` (default ``localhost:<port>``)
    gets any HTTP answer: the app has loaded and a worker is serving.
    """
    command = tuple(command)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    try:
        server = Server(command, process, port, log_path)
        host = ready_host or f"localhost:{port}"
        wait_until_ready(
            process,
            lambda left: request(port, "/", host=host, timeout=min(2.0, left)),
            f"{' '.join(command)} on 127.0.0.1:{port}",
            server.log,
            start_timeout,
        )
        yield server
    finally:
        stop(process)


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[float], object],
    what: str,
    log: Callable[[], str],
    timeout: float,
) -> None:
    """Call ``ready(seconds left)`` until it stops raising OSError or an HTTP
    error; fail the test if ``process`` exits first or ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"{what} exited with {process.returncode} before it was ready;"
                f" its output:\n{log()}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(
                f"{what} was not ready within {timeout:g} s; its output:\n{log()}"
            )
        try:
            ready(remaining)
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its whole group, each wait bounded."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
        # Still running (so its pid is still its own): kill its whole group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=STOP_TIMEOUT)


def gunicorn_command(
    app: str,
    *,
    port: int,
    workers: int,
    preload: bool = False,
    config: str = "python:dispatcher.gunicorn_conf",
) -> list[str]:
    """``gunicorn -c CONFIG -w WORKERS --bind 127.0.0.1:PORT [--preload] APP``.

    The default CONFIG is the one the README gives: it migrates once, in the master.
    """
    command = [sys.executable, "-m", "gunicorn", "-c", config, "-w", str(workers)]
    command += ["--bind", f"127.0.0.1:{port}"]
    if preload:
        command.append("--preload")
    if _gunicorn_has_control_socket():
        # Gunicorn 25+ opens ~/.gunicorn/gunicorn.ctl by default: one path
        # for every server of the user, so two test servers would clash.
        command.append("--no-control-socket")
    return [*command, app]


def _gunicorn_has_control_socket() -> bool:
    from gunicorn.config import Config

    return "control_socket_disable" in Config().settings


def tenantctl(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``tenantctl --database-url URL ARGS...``; fails the test unless it exits 0."""
    command = [str(TENANTCTL), "--database-url", database_url, *args]
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"tenantctl {' '.join(args)} exited with {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def python_path(*directories: Path) -> str:
    """``PYTHONPATH`` with ``directories`` in front of the current one."""
    current = os.environ.get("PYTHONPATH")
    return os.pathsep.join([*map(str, directories), *([current] if current else [])])

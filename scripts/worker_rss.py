"""A worker's memory: the docs pattern against ``dispatcher.wsgi``, hello app.

    python scripts/worker_rss.py                  # this checkout
    python scripts/worker_rss.py --tree /tmp/old  # another one, for before/after
        # (made with: git archive <commit> | tar -x -C /tmp/old)

In one process (fresh interpreters), the resident set (``/proc/self/statm``)
once the application is built ("import") and after one request. Under
``gunicorn -w 2`` (sync), each worker's ``VmRSS``, ``Pss`` and private
memory (``/proc/<pid>/smaps_rollup``) after it has answered a request, for
the docs pattern, ``dispatcher.wsgi:application``, and the same started with
``-c python:dispatcher.gunicorn_conf``, whose master migrates (importing
Alembic, Mako and the ORM) before it forks the workers: those pages are the
master's, shared copy-on-write, so they count in a worker's RSS but not in its
private memory.

The registry is a SQLite file with one tenant, ``t0.example.com``; the apps
are ``scripts/bench_apps.py``'s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
WORKERS = 2

_ONE_PROCESS = """
import json, os, sys
from wsgiref.util import setup_testing_defaults

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

if sys.argv[1] == "docs":
    from bench_apps import SubdomainDispatcher, hello_flask
    app = SubdomainDispatcher("example.com", lambda subdomain: hello_flask())
else:
    from dispatcher.wsgi import application as app
built = rss()
environ = {"HTTP_HOST": "t0.example.com", "PATH_INFO": "/"}
setup_testing_defaults(environ)
statuses = []
response = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
b"".join(response)
getattr(response, "close", lambda: None)()
assert statuses == ["200 OK"], statuses
print(json.dumps([built, rss(), len(sys.modules)]))
"""


def _environ(tree: str | None, registry: str, **more: str) -> dict[str, str]:
    path = [str(SCRIPTS)] if tree is None else [tree, str(SCRIPTS)]
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")},
        "PYTHONPATH": os.pathsep.join(path),
        "DISPATCHER_DATABASE_URL": registry,
        "DISPATCHER_BASE_DOMAIN": "example.com",
        "DISPATCHER_APP_FACTORY": "bench_apps:hello_flask",
        "DISPATCHER_DEFAULT_APP": "bench_apps:not_found",
        "DISPATCHER_TENANT_DATA": "",
        "DISPATCHER_MIGRATE": "0",
        "BENCH_TENANTS": "1",
        "BENCH_REPORT_PID": "1",
        **more,
    }


def one_process(
    kind: str, environ: dict[str, str], cwd: str
) -> tuple[float, float, int]:
    output = subprocess.run(
        [sys.executable, "-c", _ONE_PROCESS, kind],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    built, served, modules = json.loads(output)
    return built, served, modules


def _memory(pid: int) -> tuple[float, float, float]:
    """VmRSS, Pss and private memory (MiB) of a process."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    private = fields["Private_Clean"] + fields["Private_Dirty"]
    return fields["Rss"] / 1024, fields["Pss"] / 1024, private / 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _worker_pid(port: int) -> int | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/", headers={"Host": "t0.example.com"})
        response = connection.getresponse()
        response.read()
        connection.close()
    except OSError:
        return None
    if response.status != 200:
        raise RuntimeError(f"t0.example.com answered {response.status}")
    return int(response.headers["X-Worker-Pid"])


def under_gunicorn(
    environ: dict[str, str], config: list[str], cwd: str
) -> list[tuple[float, float, float]]:
    """Each worker's memory once both have answered a request."""
    port = _free_port()
    command = [sys.executable, "-m", "gunicorn", *config, "-w", str(WORKERS)]
    command += ["--bind", f"127.0.0.1:{port}", "bench_apps:application"]
    server = subprocess.Popen(
        command,
        env=environ,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while len(pids) < WORKERS:
            if server.poll() is not None or time.monotonic() > deadline:
                error = server.stderr.read().decode() if server.stderr else ""
                raise RuntimeError(f"gunicorn did not serve: {error[-2000:]}")
            pid = _worker_pid(port)
            if pid is None:
                time.sleep(0.1)
            else:
                pids.add(pid)
        return [_memory(pid) for pid in sorted(pids)]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", help="a checkout to measure instead of this one")
    args = parser.parse_args()
    # Run in an empty directory: the working directory comes first on
    # sys.path, and this checkout's dispatcher/ must not shadow --tree's.
    with tempfile.TemporaryDirectory() as tmp:
        registry = f"sqlite:///{Path(tmp) / 'registry.sqlite3'}"
        setup = (
            "import sys; from dispatcher import TenantRegistry;"
            "r = TenantRegistry(sys.argv[1]); r.migrate();"
            "r.create_tenant('t0', owner_email='t0@example.com', subdomain='t0')"
        )
        environ = _environ(args.tree, registry)
        subprocess.run(
            [sys.executable, "-c", setup, registry], env=environ, cwd=tmp, check=True
        )
        print("| process | import (app built) | after 1 request | modules |")
        print("|---|---|---|---|")
        for kind in ("docs", "wsgi"):
            built, served, modules = one_process(kind, environ, tmp)
            print(f"| one process, {kind} | {built:.1f} | {served:.1f} | {modules} |")
        print()
        print("| gunicorn sync -w 2, after 1 request | VmRSS | Pss | private |")
        print("|---|---|---|---|")
        cases = [
            ("docs pattern", {"BENCH_KIND": "docs"}, []),
            ("dispatcher.wsgi", {"BENCH_KIND": "wsgi"}, []),
            (
                "dispatcher.wsgi, -c dispatcher.gunicorn_conf (master migrates)",
                {"BENCH_KIND": "wsgi", "DISPATCHER_MIGRATE": "1"},
                ["-c", "python:dispatcher.gunicorn_conf"],
            ),
        ]
        for name, more, config in cases:
            for rss, pss, private in under_gunicorn({**environ, **more}, config, tmp):
                print(f"| {name} | {rss:.1f} | {pss:.1f} | {private:.1f} |")


if __name__ == "__main__":
    main()

"""gunicorn + wrk: the docs pattern against the dispatcher, side by side.

    python scripts/bench_server.py            # 10 s per case after 3 s warm-up
    python scripts/bench_server.py --quick    # 2 s per case, smaller sets
    python scripts/bench_server.py --rss      # worker RSS after start only

For sync and gthread workers (2 workers; gthread with 4 threads each), wrk
(``--latency``, one Lua script picking a random tenant's Host per request,
uniform and seeded) is run against, in turn:

- the docs pattern with every app cached, 2,000 tenants;
- the dispatcher with an app per tenant, 2,000 tenants, ``max_apps`` 1,000;
- the docs pattern with every app cached, 10,000 tenants;
- the dispatcher with one shared app, 10,000 tenants.

Each dispatcher figure is held against the docs pattern's on the same tenants
in the same run. The apps are ``bench_apps``'s (hello world). Each server is
started, warmed up, measured and stopped by its PID before the next starts.
``--rss`` reads each worker's ``VmRSS`` once both have answered a request.
bench.py runs this as rows 16 and 17.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
WORKER_CLASSES = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "4"],
}
WORKERS = 2

Row = tuple[str, str, str]

_LUA = """
local tenants = {tenants}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  math.randomseed({seed} + id)
end

function request()
  local host = "t" .. math.random(0, tenants - 1) .. ".example.com"
  return wrk.format("GET", "/", {{["Host"] = host}})
end
"""


@dataclass(frozen=True)
class Load:
    """What one wrk run measured."""

    rps: float
    p50: float
    p99: float
    requests: int
    bad: int  # non-2xx answers, socket errors and timeouts


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(port: int, host: str) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/", headers={"Host": host, "Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


@contextmanager
def gunicorn(
    app: str, worker_class: str, env: dict[str, str], boot_timeout: float = 300
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """gunicorn serving ``app`` with 2 workers; yields its port and process
    once every worker has built its app (``BENCH_READY_DIR``), and stops it."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as ready:
        environ = {
            **os.environ,
            "PYTHONPATH": str(SCRIPTS),
            "BENCH_READY_DIR": ready,
            **env,
        }
        command = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS)]
        command += WORKER_CLASSES[worker_class]
        # The docs pattern builds every app as a worker boots: allow for it.
        command += ["--timeout", str(int(boot_timeout)), "--no-control-socket"]
        command += ["--bind", f"127.0.0.1:{port}", app]
        # Its log goes to a file: a pipe nobody reads would stall the server.
        log = Path(ready).with_suffix(".log")
        with log.open("wb") as output:
            server = subprocess.Popen(
                command, env=environ, stdout=subprocess.DEVNULL, stderr=output
            )
        try:
            deadline = time.monotonic() + boot_timeout
            while len(os.listdir(ready)) < WORKERS:
                if server.poll() is not None:
                    error = log.read_text(errors="replace")
                    raise RuntimeError(f"gunicorn {app} exited: {error[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn {app}: workers not ready in time")
                time.sleep(0.1)
            yield port, server
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.unlink(missing_ok=True)


def wrk(port: int, tenants: int, seconds: float, workdir: Path, seed: int) -> Load:
    """wrk against ``port``, a uniformly random tenant's Host per request."""
    script = workdir / f"hosts_{tenants}.lua"
    script.write_text(_LUA.format(tenants=tenants, seed=seed))
    command = ["wrk", "-t", "1", "-c", "8", "-d", f"{seconds}s", "--latency"]
    command += ["-s", str(script), f"http://127.0.0.1:{port}/"]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return parse_wrk(output)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(output: str) -> Load:
    """req/s, p50/p99 (seconds), requests and bad answers from wrk's output."""

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
        if found is None:
            raise ValueError(f"no {percent}% latency in wrk's output:\n{output}")
        return float(found.group(1)) * _UNITS[found.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or total is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{output}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(count) for count in errors.groups())
    return Load(
        float(rps.group(1)), latency("50"), latency("99"), int(total.group(1)), failed
    )


def _registry(url: str, tenants: int) -> None:
    from bench import registry_with  # the registry every bench row uses

    registry_with(url, tenants, prefix="t").close()


#: The cases in the order they run: (name, BENCH_KIND, tenants, baseline name).
CASES = (
    ("docs pattern, every app cached", "docs", 2_000, None),
    ("dispatcher, app per tenant, max_apps {max_apps:,}", "per_tenant", 2_000, "docs"),
    ("docs pattern, every app cached", "docs", 10_000, None),
    ("dispatcher, shared app", "shared", 10_000, "docs"),
)
MAX_APPS = 1_000


def server_rows(seconds: float, warmup: float, scale: int = 1) -> list[Row]:
    """Row 16: every case under each worker class, ratios to the docs pattern."""
    from bench_apps import supports_shared_app

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry = f"sqlite:///{workdir / 'registry.sqlite3'}"
        _registry(registry, max(tenants for *_, tenants, _ in CASES) // scale)
        for worker_class in WORKER_CLASSES:
            docs: dict[int, Load] = {}
            for name, kind, full_tenants, baseline in CASES:
                tenants, max_apps = full_tenants // scale, MAX_APPS // scale
                label = (
                    f"16. gunicorn {worker_class} ×{WORKERS} + wrk, {tenants:,}"
                    f" tenants, uniform: {name.format(max_apps=max_apps)}"
                )
                if kind == "shared" and not supports_shared_app():
                    rows.append((label, "not measured", "needs shared_app="))
                    continue
                env = {
                    "BENCH_KIND": kind,
                    "BENCH_TENANTS": str(tenants),
                    "BENCH_REGISTRY": registry,
                    "BENCH_MAX_APPS": str(max_apps),
                }
                with gunicorn("bench_apps:application", worker_class, env) as (
                    port,
                    _server,
                ):
                    wrk(port, tenants, warmup, workdir, seed=1)
                    load = wrk(port, tenants, seconds, workdir, seed=2)
                figure = (
                    f"{load.rps:,.0f} req/s, p50 {load.p50 * 1e3:.1f} ms,"
                    f" p99 {load.p99 * 1e3:.1f} ms"
                )
                if load.bad:
                    figure += f" ({load.bad:,} of {load.requests:,} failed)"
                if baseline is None:
                    docs[tenants] = load
                    rows.append((label, figure, "baseline"))
                    continue
                base = docs[tenants]
                target = (
                    "target ≥ 0.5×, p99 ≤ 5×"
                    if kind == "per_tenant"
                    else "target ≥ 0.95×"
                )
                rows.append(
                    (
                        label,
                        figure,
                        f"{load.rps / base.rps:.2f}× docs req/s, p99"
                        f" {load.p99 / base.p99:.2g}× docs ({target})",
                    )
                )
    return rows


def worker_rss(pid: int) -> float:
    """A process's resident memory, MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for {pid}")


def _rss_after_one_request(port: int) -> list[float]:
    """Each worker's RSS once it has answered (requests until both have)."""
    pids: set[int] = set()
    for _ in range(500):
        status, headers = _get(port, "t0.example.com")
        if status != 200:
            raise RuntimeError(f"t0 answered {status}")
        pids.add(int(headers["X-Worker-Pid"]))
        if len(pids) == WORKERS:
            break
    else:
        raise RuntimeError(f"only {len(pids)} of {WORKERS} workers answered")
    return sorted(worker_rss(pid) for pid in pids)


def rss_rows() -> list[Row]:
    """Row 17: worker RSS after start and one request, hello app, 1 tenant."""
    from bench_apps import supports_shared_app

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = f"sqlite:///{Path(tmp) / 'registry.sqlite3'}"
        _registry(registry, 1)
        common = {"BENCH_TENANTS": "1", "BENCH_REGISTRY": registry}
        wsgi = {
            "DISPATCHER_DATABASE_URL": registry,
            "DISPATCHER_BASE_DOMAIN": "example.com",
            "DISPATCHER_APP_FACTORY": "bench_apps:hello_flask",
            "DISPATCHER_DEFAULT_APP": "bench_apps:not_found",
            "DISPATCHER_MIGRATE": "0",
            "DISPATCHER_TENANT_DATA": "",
        }
        cases = [
            (
                "docs pattern (baseline)",
                "bench_apps:application",
                {"BENCH_KIND": "docs"},
            ),
            (
                "TenantDispatcher, app per tenant",
                "bench_apps:application",
                {"BENCH_KIND": "per_tenant"},
            ),
            (
                "dispatcher.wsgi's application, app per tenant",
                "bench_apps:application",
                {"BENCH_KIND": "wsgi", **wsgi},
            ),
        ]
        if supports_shared_app():
            cases.insert(
                2,
                (
                    "TenantDispatcher, shared app",
                    "bench_apps:application",
                    {"BENCH_KIND": "shared"},
                ),
            )
        docs = 0.0
        for name, app, env in cases:
            env = {**common, **env, "BENCH_REPORT_PID": "1"}
            with gunicorn(app, "sync", env) as (port, _server):
                rss = _rss_after_one_request(port)
            figure = " and ".join(f"{value:.1f}" for value in rss) + " MiB"
            if not docs:
                docs = max(rss)
                rows.append(
                    (
                        f"17. worker RSS after start + 1 request: {name}",
                        figure,
                        f"gunicorn sync ×{WORKERS}, hello app",
                    )
                )
                continue
            rows.append(
                (
                    f"17. worker RSS after start + 1 request: {name}",
                    figure,
                    f"+{max(rss) - docs:.1f} MiB over docs (target ≤ +20 MiB)",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rss", action="store_true", help="worker RSS only")
    args = parser.parse_args()
    if not have_wrk():
        sys.exit("bench_server: wrk is not installed (apt-get install wrk)")
    rows = rss_rows()
    if not args.rss:
        if args.quick:
            rows += server_rows(seconds=2, warmup=1, scale=10)
        else:
            rows += server_rows(seconds=10, warmup=3)
    print("| measure | figure | against |")
    print("|---|---|---|")
    for measure, figure, against in rows:
        print(f"| {measure} | {figure} | {against} |")


if __name__ == "__main__":
    main()

"""The hit path's cost with Prometheus metrics off and on, in one run.

    python scripts/bench_metrics.py [--quick]

Two dispatchers on one registry serve the same tenant's hits, in interleaved
rounds: one plain, one instrumented (``dispatcher.metrics.instrument``) with
its copying thread running every 0.1 s (ten times the default, an upper
bound) and ``prometheus_client`` in multiprocess mode on a temporary
directory, as under gunicorn. Measured in a process of its own, since the
multiprocess mode is chosen when ``prometheus_client`` is first imported.
``bench_metrics(n, rounds)`` returns the rows for ``scripts/bench.py``;
nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD_FLAG = "--child"


def trivial_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    return None


def _per_call(app: Any, environ: dict[str, Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        body = app(dict(environ), _start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - start) / n


def measure(n: int, rounds: int, directory: str) -> dict[str, float]:
    """Best-of-rounds seconds per hit: direct, metrics off, metrics on."""
    from werkzeug.test import EnvironBuilder

    from dispatcher import TenantDispatcher, TenantRegistry
    from dispatcher.metrics import instrument

    registry = TenantRegistry(f"sqlite:///{Path(directory) / 'bench.sqlite3'}")
    registry.migrate()
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    off = TenantDispatcher(registry, lambda t: trivial_app, base_domain="example.com")
    on = TenantDispatcher(registry, lambda t: trivial_app, base_domain="example.com")
    metrics = instrument(on, interval=0.1)
    environ: dict[str, Any] = EnvironBuilder(
        headers=[("Host", "acme.example.com")]
    ).get_environ()
    for app in (off, on):
        _per_call(app, environ, 1)  # build once: this measures hits
    metrics.sync()
    times: dict[str, list[float]] = {"direct": [], "off": [], "on": []}
    for _ in range(rounds):  # interleaved, so drift hits both alike
        times["direct"].append(_per_call(trivial_app, environ, n))
        times["off"].append(_per_call(off, environ, n))
        times["on"].append(_per_call(on, environ, n))
    metrics.sync()
    hits = on.outcomes()["hit"]
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    summed = CollectorRegistry()
    MultiProcessCollector(summed, path=directory)  # type: ignore[no-untyped-call]
    exported = summed.get_sample_value(
        "tenant_dispatcher_requests_total", {"outcome": "hit"}
    )
    assert exported == hits, (exported, hits)  # the copies kept up, exactly
    best = {name: min(values) for name, values in times.items()}
    return {**best, "hits": float(hits)}


def bench_metrics(n: int, rounds: int) -> list[tuple[str, str, str]]:
    """Rows for scripts/bench.py: the hit overhead with metrics off and on."""
    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        command = [sys.executable, __file__, CHILD_FLAG, str(n), str(rounds)]
        output = subprocess.run(
            [*command, directory],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout
    figures = json.loads(output)
    off = figures["off"] - figures["direct"]
    on = figures["on"] - figures["direct"]
    return [
        ("19. hit overhead, metrics off", f"{off * 1e6:.2f} µs", ""),
        (
            "19. hit overhead, metrics on (multiprocess, copied every 0.1 s)",
            f"{on * 1e6:.2f} µs",
            f"{on / off:.2f}× off (target: ≈1×, nothing per hit)",
        ),
    ]


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == CHILD_FLAG:
        n, rounds, directory = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        print(json.dumps(measure(n, rounds, directory)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    for row in bench_metrics(100_000 // scale, 7):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

"""Collector pauses under uniform churn, in one process, management off and on.

    .venv/bin/python -m scripts.gc_churn [--app hello|realistic] [--requests N]
                                         [--threads N]

2,000 tenants, ``max_apps`` 1,000, uniformly random tenants: half the
requests rebuild an app and evict another. Each mode runs in a child process
of its own (the collector's state is per process) on one registry file; the
figures are side by side: full collections, their longest pause, reclaims,
apps freed by reference counting or survived, req/s.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from werkzeug.test import EnvironBuilder

from dispatcher import CachePolicy, TenantDispatcher, TenantRegistry, collector
from scripts.realistic_app import create_app, hello_app

TENANTS = 2000
MAX_APPS = 1000
FACTORIES: dict[str, Any] = {"hello": hello_app, "realistic": create_app}


class FullPauses:
    """Every full collection's pause, measured apart from the collector's stats."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)


def registry_with(url: str, count: int) -> TenantRegistry:
    registry = TenantRegistry(url)
    registry.migrate()
    specs = (
        registry.new_tenant(f"t{i}", owner_email="o@bench.test", subdomain=f"t{i}")
        for i in range(count)
    )
    for _ in registry.import_tenants(specs, batch_size=1000):
        pass
    return registry


def request(app: Any, host: str) -> None:
    environ = EnvironBuilder(headers={"Host": host}).get_environ()
    statuses = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    b"".join(body)
    getattr(body, "close", lambda: None)()
    if not statuses[0].startswith("200"):
        raise RuntimeError(f"{host} answered {statuses[0]}")


def child(
    url: str, app: str, requests: int, managed: bool, threads: int
) -> dict[str, Any]:
    collector.set_managed(managed)
    registry = TenantRegistry(url)
    ours = TenantDispatcher(
        registry,
        FACTORIES[app],
        base_domain="example.com",
        policy=CachePolicy(max_apps=MAX_APPS),
    )
    hosts = [f"t{i}.example.com" for i in range(TENANTS)]
    # Fill the cache first (as a long-running worker has), then measure.
    for host in hosts[:MAX_APPS]:
        request(ours, host)
    before = collector.stats()
    pauses = FullPauses()
    gc.callbacks.append(pauses.on_collection)
    blocks = sys.getallocatedblocks()

    def serve(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(requests // threads):
            request(ours, rng.choice(hosts))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(serve, range(threads)))
    elapsed = time.perf_counter() - started
    grown = sys.getallocatedblocks() - blocks
    gc.callbacks.remove(pauses.on_collection)
    after = collector.stats()
    return {
        "full": len(pauses.pauses),
        "longest_ms": max(pauses.pauses, default=0) * 1000,
        "reclaims": after.reclaims - before.reclaims,
        "longest_reclaim_ms": after.longest_reclaim * 1000,
        "freed": after.apps_freed - before.apps_freed,
        "survived": after.apps_survived - before.apps_survived,
        "rps": requests // threads * threads / elapsed,
        "grown": grown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=sorted(FACTORIES), default="hello")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=("off", "on"))
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        figures = child(
            args.url, args.app, args.requests, args.child == "on", args.threads
        )
        print(json.dumps(figures))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'registry.db'}"
        registry_with(url, TENANTS).engine.dispose()
        for mode in ("off", "on"):
            out = subprocess.run(
                [sys.executable, "-m", "scripts.gc_churn", "--child", mode]
                + ["--url", url, "--app", args.app, "--requests", str(args.requests)]
                + ["--threads", str(args.threads)],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                sys.exit(f"management {mode} failed:\n{out.stderr}")
            f = json.loads(out.stdout.splitlines()[-1])
            print(
                f"{args.app}, {args.threads} thread(s), management {mode}:"
                f" {f['full']} full collections,"
                f" longest {f['longest_ms']:.0f} ms; reclaims {f['reclaims']}"
                f" (longest {f['longest_reclaim_ms']:.0f} ms, included); apps freed"
                f" {f['freed']}, survived {f['survived']}; heap grew"
                f" {f['grown']:,} blocks; {f['rps']:,.0f} req/s"
            )


if __name__ == "__main__":
    main()

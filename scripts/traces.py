"""Hit ratios of the app cache's eviction policies on synthetic tenant traces.

    python scripts/traces.py                 # the table, in a few seconds
    python scripts/traces.py --length 400000 # longer traces, steadier figures

Each trace is a list of tenant slugs, one per request. :func:`simulate` replays
it through the shipped :class:`dispatcher.entries.Apps` (a fake clock, dummy
entries, hits that only set ``used`` as the dispatcher's lock-free hit path
does), so the figures are those of the code that serves requests.
:func:`belady` is the offline optimum for reference: evict the app whose next
request is farthest away. Importable by ``scripts/bench.py``.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dispatcher.entries import Apps, Entry  # noqa: E402
from dispatcher.tenant import Tenant  # noqa: E402

__all__ = ["KINDS", "belady", "generate", "simulate"]

#: name -> what it models; ``generate`` accepts each name.
KINDS = {
    "uniform": "every tenant equally likely",
    "zipf-0.8": "Zipf, s = 0.8: a mild skew",
    "zipf-1.0": "Zipf, s = 1.0",
    "zipf-1.2": "Zipf, s = 1.2: a few busy tenants",
    "scan": "Zipf s = 1.0, with a crawler sweeping every tenant in turn",
}

#: In a scan trace, every other request is the crawler's while it sweeps, and
#: it sweeps after this many requests of hot traffic alone.
SCAN_PAUSE = 20_000


def slug(index: int) -> str:
    return f"t{index:05d}"


def generate(kind: str, tenants: int, length: int, seed: int = 0) -> list[str]:
    """``length`` requests over ``tenants`` tenants, reproducibly from ``seed``.

    Zipf popularity is by rank over a random order of the tenants, so a slug's
    name says nothing about its popularity.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if tenants < 1 or length < 0:
        raise ValueError(f"need tenants >= 1 and length >= 0, not {tenants}, {length}")
    rng = random.Random(seed)
    names = [slug(i) for i in range(tenants)]
    if kind == "uniform":
        return rng.choices(names, k=length)
    s = 1.0 if kind == "scan" else float(kind.removeprefix("zipf-"))
    ranked = names[:]
    rng.shuffle(ranked)
    weights = list(itertools.accumulate(1 / rank**s for rank in range(1, tenants + 1)))
    hot = rng.choices(ranked, cum_weights=weights, k=length)
    if kind != "scan":
        return hot
    trace: list[str] = []
    requests = iter(hot)
    while len(trace) < length:
        trace.extend(itertools.islice(requests, SCAN_PAUSE))
        for name in names:  # the crawler, in step with the users
            trace.append(name)
            trace.extend(itertools.islice(requests, 1))
    return trace[:length]


class _Clock:
    """A fake clock that never moves: nothing expires in a trace."""

    def __call__(self) -> float:
        return 0.0


def _app(environ: Any, start_response: Any) -> list[bytes]:
    return []


def _teardown(app: Any, tenant: Tenant) -> None:
    pass


_TENANT = Tenant.__new__(Tenant)  # the entries' tenant is never read here


def simulate(trace: list[str], capacity: int, *, admission: bool = True) -> float:
    """The hit ratio of :class:`Apps` of ``capacity`` over ``trace``.

    A request whose slug is held is a hit: it sets the entry's ``used`` flag
    and nothing else, like ``AppCache.lease``. Any other is a miss: a new entry
    is stored, as ``AppCache`` does after a build.
    """
    held: dict[str, Entry] = {}  # AppCache.routes: what the hit path reads

    def dropped(entry: Entry, cause: str) -> None:
        for key in entry.keys:
            del held[str(key)]

    apps = Apps(capacity, _Clock(), dropped, admission=admission)
    forever = float("inf")
    hits = 0
    for name in trace:
        entry = held.get(name)
        if entry is not None:
            entry.used = True
            hits += 1
            continue
        entry = Entry(_app, _TENANT, forever, _teardown)
        entry.keys.add(name)
        apps[name] = entry
        held[name] = entry
    return hits / len(trace) if trace else 0.0


def belady(trace: list[str], capacity: int) -> float:
    """The offline optimum's hit ratio (Belady's MIN), in O(n log n).

    Every request's app is kept (as the cache must), and when one more does
    not fit, the held app whose next request is farthest away goes.
    """
    never = len(trace)
    following: list[int] = [never] * len(trace)
    seen: dict[str, int] = {}
    for position in range(len(trace) - 1, -1, -1):
        following[position] = seen.get(trace[position], never)
        seen[trace[position]] = position
    next_use: dict[str, int] = {}  # held slug -> position of its next request
    farthest: list[tuple[int, str]] = []  # (-next use, slug), stale rows skipped
    hits = 0
    for position, name in enumerate(trace):
        if name in next_use:
            hits += 1
        elif len(next_use) >= capacity:
            while True:
                negated, victim = heapq.heappop(farthest)
                if next_use.get(victim) == -negated:
                    del next_use[victim]
                    break
        next_use[name] = following[position]
        heapq.heappush(farthest, (-following[position], name))
    return hits / len(trace) if trace else 0.0


def table(length: int, capacity: int, populations: list[int]) -> list[list[str]]:
    rows = []
    for tenants in populations:
        for kind in KINDS:
            trace = generate(kind, tenants, length, seed=tenants)
            lru = simulate(trace, capacity, admission=False)
            tiny = simulate(trace, capacity)
            best = belady(trace, capacity)
            rows.append(
                [
                    f"{tenants:,}",
                    kind,
                    f"{lru:.3f}",
                    f"{tiny:.3f}",
                    f"{best:.3f}",
                    f"{tiny / best:.2f}" if best else "-",
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=100_000, help="requests")
    parser.add_argument("--capacity", type=int, default=1000, help="max_apps")
    parser.add_argument(
        "--tenants", type=int, nargs="+", default=[2000, 10_000], help="populations"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    head = ["tenants", "trace", "LRU today", "W-TinyLFU", "Belady", "W-TinyLFU/Belady"]
    rows = [head, *table(args.length, args.capacity, args.tenants)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    print(
        f"hit ratio, max_apps = {args.capacity:,}, {args.length:,} requests per trace"
    )
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(cell.rjust(width) for cell, width in cells))
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

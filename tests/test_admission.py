"""The eviction policies on their own: the frequency sketch, CLOCK, W-TinyLFU.

Keys are plain slugs and ``used`` flags a dict, as :class:`Apps` reads them
from its entries (see ``tests/test_entries.py`` for the policies inside it).
"""

from __future__ import annotations

import pytest

from dispatcher.admission import (
    DEPTH,
    MAX_COUNT,
    Clock,
    FrequencySketch,
    SecondChance,
    WindowTinyLfu,
)


class Flags(dict[str, bool]):
    """``used`` flags by key; reading one clears it, like ``Apps._take_used``."""

    def take(self, key: str) -> bool:
        return self.pop(key, False)


# -- FrequencySketch -------------------------------------------------------------


def test_sketch_counts_each_key_and_caps_the_count() -> None:
    sketch = FrequencySketch(100)
    for _ in range(3):
        sketch.increment("acme")
    sketch.increment("globex")

    assert sketch.frequency("acme") == 3
    assert sketch.frequency("globex") == 1
    assert sketch.frequency("initech") == 0
    for _ in range(40):
        sketch.increment("acme")
    assert sketch.frequency("acme") == MAX_COUNT


def test_sketch_never_undercounts_among_many_keys() -> None:
    sketch = FrequencySketch(64)
    counts = {f"t{i}": i % 5 + 1 for i in range(200)}
    for key, count in counts.items():
        for _ in range(count):
            sketch.increment(key)
    # 600 increments: below the halving sample of 640.
    assert all(sketch.frequency(key) >= count for key, count in counts.items())
    # Collisions overcount a little, not wholesale.
    exact = sum(sketch.frequency(key) == count for key, count in counts.items())
    assert exact > len(counts) / 2


def test_sketch_halves_every_count_after_its_sample() -> None:
    sketch = FrequencySketch(10)  # halves after 100 increments
    assert sketch.sample_size == 100
    for _ in range(9):
        sketch.increment("hot")
    for _ in range(90):
        sketch.increment("cold")
    assert (sketch.frequency("hot"), sketch.frequency("cold")) == (9, MAX_COUNT)
    assert sketch.increments == 99

    sketch.increment("cold")  # the hundredth

    assert (sketch.frequency("hot"), sketch.frequency("cold")) == (4, 7)
    assert sketch.increments == 50


def test_sketch_memory_is_fixed_by_capacity() -> None:
    sketch = FrequencySketch(1000)
    assert sketch.width == 4096  # four counters a slot, to a power of two
    assert sketch.nbytes == DEPTH * 4096  # 16 KiB for a thousand apps
    for i in range(50_000):
        sketch.increment(f"tenant-{i}")
    assert sketch.nbytes == DEPTH * 4096
    assert FrequencySketch(1).nbytes == DEPTH * 64  # the narrowest


def test_sketch_hashes_the_same_in_every_process() -> None:
    # blake2b, not hash(): trace figures replay identically run after run.
    assert FrequencySketch(16)._indexes("acme") == [1, 64 + 52, 128 + 39, 192 + 26]


@pytest.mark.parametrize(
    ("capacity", "error", "message"),
    [
        pytest.param(0, ValueError, "capacity must be at least 1, not 0", id="zero"),
        pytest.param(True, TypeError, "capacity must be an integer", id="bool"),
        pytest.param(1.5, TypeError, "capacity must be an integer", id="float"),
    ],
)
def test_sketch_refuses_a_bad_capacity(
    capacity: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        FrequencySketch(capacity)  # type: ignore[arg-type]


# -- Clock and SecondChance (today's policy) --------------------------------------


def test_clock_passes_used_keys_round_once_and_keeps_the_victim() -> None:
    clock = Clock()
    for key in ("a", "b", "c"):
        clock.add(key)
    used = Flags(a=True, b=True)
    seen: list[str] = []

    assert clock.oldest_unused(used.take, seen.append) == "c"
    assert seen == ["a", "b"]
    assert "c" in clock and len(clock) == 3
    # Everyone used: one turn clears the flags and the oldest goes first.
    used.update(a=True, b=True, c=True)
    assert clock.oldest_unused(used.take) == "c"


def test_second_chance_drops_the_oldest_unused() -> None:
    policy = SecondChance()
    for key in ("a", "b", "c"):
        policy.add(key)
    assert policy.victim(Flags(a=True).take) == "b"
    assert policy.victim(Flags().take) == "c"
    assert policy.victim(Flags().take) == "a"


# -- WindowTinyLfu -----------------------------------------------------------------


def fill(policy: WindowTinyLfu, keys: list[str]) -> None:
    for key in keys:
        policy.add(key)


def test_window_is_one_percent_and_at_least_one_slot() -> None:
    assert (WindowTinyLfu(1000).window_size, WindowTinyLfu(1000).main_size) == (
        10,
        990,
    )
    assert (WindowTinyLfu(1).window_size, WindowTinyLfu(1).main_size) == (1, 0)
    with pytest.raises(ValueError, match="window must be a share in .*, not 0"):
        WindowTinyLfu(10, window=0)


def test_a_one_hit_wonder_does_not_take_a_frequent_key_s_slot() -> None:
    policy = WindowTinyLfu(3)  # window 1, main 2
    fill(policy, ["hot", "warm", "new"])  # hot and warm in main, new in window
    policy.sketch.increment("hot")  # hit, seen by a sweep
    policy.sketch.increment("warm")

    # "new" (seen once) is the candidate against "hot" (twice): new goes.
    assert policy.victim(Flags().take) == "new"
    policy.add("newer")
    assert policy.victim(Flags().take) == "newer"


def test_the_more_frequent_candidate_is_admitted_in_place_of_the_victim() -> None:
    policy = WindowTinyLfu(3)
    fill(policy, ["old", "other", "busy"])
    for _ in range(3):
        policy.sketch.increment("busy")  # misses again and again meanwhile

    assert policy.victim(Flags().take) == "old"
    policy.add("next")  # busy now holds a main slot: next's candidate is next
    assert policy.victim(Flags().take) == "other"


def test_among_keys_seen_once_the_oldest_goes_as_in_lru() -> None:
    policy = WindowTinyLfu(3)
    fill(policy, ["a", "b", "c"])
    assert policy.victim(Flags().take) == "a"
    policy.add("d")
    assert policy.victim(Flags().take) == "b"


def test_a_hit_counts_when_the_sweep_sees_it() -> None:
    policy = WindowTinyLfu(3)
    fill(policy, ["hot", "cold", "new"])
    used = Flags(hot=True)

    # Passing the used "hot", the sweep counts it and gives it a second chance;
    # "cold" and "new" were seen once each: the older, cold, goes.
    assert policy.victim(used.take) == "cold"
    assert policy.sketch.frequency("hot") == 2
    assert used == {}

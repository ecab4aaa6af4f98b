"""PostgresNotifier: wake-ups at commit, chosen once per registry."""

from __future__ import annotations

import math
import uuid

import pytest

from dispatcher import TenantRegistry
from dispatcher.exceptions import TenantExists
from dispatcher.notify import DEFAULT_CHANNEL, PostgresNotifier

#: Bounds a real wait for a notification; far above the expected ~10 ms.
NOTIFY_TIMEOUT = 5.0


@pytest.mark.parametrize(
    "channel", ["", "Changes", "1changes", "changes;drop", "c" * 64, "chan nel"]
)
def test_a_channel_must_be_a_plain_identifier(channel: str) -> None:
    with pytest.raises(ValueError, match=f"channel {channel!r} must be"):
        PostgresNotifier("postgresql+psycopg://db/app", channel=channel)


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        pytest.param("5", TypeError, id="str"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param(math.nan, ValueError, id="nan"),
        pytest.param(math.inf, ValueError, id="inf"),
        pytest.param(0, ValueError, id="zero"),
    ],
)
def test_a_timeout_must_be_a_positive_number_of_seconds(
    timeout: object, error: type[Exception]
) -> None:
    """Taken as is, it failed only in the listener's thread, at each connect:
    logged, and followers silently fell back to polling."""
    with pytest.raises(error, match=f"timeout must be .*, not {timeout!r}"):
        PostgresNotifier("postgresql+psycopg://db/app", timeout=timeout)  # type: ignore[arg-type]


def test_the_registry_picks_its_notifier_once(
    registry: TenantRegistry, backend: str
) -> None:
    if backend == "postgresql":
        assert isinstance(registry.notifier, PostgresNotifier)
        assert registry.notifier.channel == DEFAULT_CHANNEL
    else:
        assert registry.notifier is None  # SQLite has no LISTEN: followers poll


def test_no_notifier_means_polling_only(database_url: str) -> None:
    with TenantRegistry(database_url, notifier=None) as registry:
        assert registry.notifier is None
        assert registry.feed.notifier is None


@pytest.fixture
def notifier(database_url: str, backend: str) -> PostgresNotifier:
    if backend != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's; SQLite is followed by polling")
    # A channel of this test's own: other tests' writes must not wake it.
    return PostgresNotifier(database_url, channel=f"t_{uuid.uuid4().hex}")


def test_a_committed_write_wakes_a_listener(
    database_url: str, notifier: PostgresNotifier
) -> None:
    with TenantRegistry(database_url, notifier=notifier) as registry:
        registry.migrate()
        with notifier.listen() as listener:
            registry.create_tenant("acme", owner_email="o@acme.test")

            assert listener.wait(NOTIFY_TIMEOUT)


def test_a_failed_write_wakes_nobody(
    database_url: str, notifier: PostgresNotifier
) -> None:
    with TenantRegistry(database_url, notifier=notifier) as registry:
        registry.migrate()
        registry.create_tenant("acme", owner_email="o@acme.test")
        with notifier.listen() as listener:
            with pytest.raises(TenantExists):
                registry.create_tenant("acme", owner_email="o@acme.test")
            # A write that commits after the failed one: its wake-up is the
            # first and only one this listener gets.
            registry.create_tenant("beta", owner_email="o@beta.test")
            generation = registry.latest_generation()

            payloads = [
                n.payload
                for n in listener._connection.notifies(
                    timeout=NOTIFY_TIMEOUT, stop_after=1
                )
            ]

    assert payloads == [str(generation)]

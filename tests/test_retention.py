"""Keeping the change feed bounded: pruning by age and count, in batches, on
its own schedule; the poll that notices a pruned change stays one indexed query."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, insert, text, update

from dispatcher import TenantRegistry
from dispatcher.changes import Operation
from dispatcher.models.tables import changes as change_table
from dispatcher.queries import CHANGES_SINCE
from dispatcher.retention import (
    AUTO_BATCHES,
    DEFAULT_RETENTION,
    FeedRetention,
    Pruner,
    parse_duration,
    prune,
    summarise,
)
from dispatcher.settings import feed_retention
from dispatcher.tenant import utcnow

DAY = dt.timedelta(days=1)


@pytest.fixture
def writer(database_url: str) -> Iterator[TenantRegistry]:
    """A migrated registry whose writes never prune by themselves."""
    registry = TenantRegistry(database_url, retention=None)
    registry.migrate()
    yield registry
    registry.close()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def write(registry: TenantRegistry, count: int) -> list[int]:
    """``count`` changes (a tenant, then config updates); their generations."""
    if registry.find_by_slug("acme") is None:
        registry.create_tenant("acme", owner_email="o@acme.test")
        count -= 1
    for i in range(count):
        registry.update_config("acme", {"i": i})
    return [change.generation for change in registry.changes_since(0, limit=10**6)]


def age(engine: Engine, generations: list[int], written: dt.datetime) -> None:
    """Say these changes were written at ``written``."""
    with engine.begin() as connection:
        connection.execute(
            update(change_table)
            .where(change_table.c.generation.in_(generations))
            .values(changed_at=written)
        )


def feed(registry: TenantRegistry) -> list[tuple[int, str]]:
    return [
        (change.generation, change.operation)
        for change in registry.changes_since(0, limit=10**6)
    ]


# -- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("7d", 7 * DAY, id="days"),
        pytest.param("12h", dt.timedelta(hours=12), id="hours"),
        pytest.param(" 30 m ", dt.timedelta(minutes=30), id="spaces"),
        pytest.param("45s", dt.timedelta(seconds=45), id="seconds"),
        pytest.param("2W", 14 * DAY, id="weeks, upper-case"),
        pytest.param("1d12h", dt.timedelta(hours=36), id="a sum"),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("7", id="no unit"),
        pytest.param("d", id="no number"),
        pytest.param("-1d", id="negative"),
        pytest.param("1.5h", id="fraction"),
        pytest.param("7x", id="unknown unit"),
        pytest.param("7d and more", id="trailing text"),
        pytest.param("0d", id="zero"),
        pytest.param("٧d", id="non-ASCII digit"),
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"max_age": dt.timedelta()}, "max_age", id="zero age"),
        pytest.param({"max_age": -DAY}, "max_age", id="negative age"),
        pytest.param({"max_age": 7}, "max_age", id="age as a number"),
        pytest.param({"max_changes": 0}, "max_changes", id="zero changes"),
        pytest.param({"max_changes": True}, "max_changes", id="bool changes"),
        pytest.param({"prune_every": 0}, "prune_every", id="zero interval"),
        pytest.param({"batch_size": 1.5}, "batch_size", id="fractional batch"),
    ],
)
def test_retention_refuses(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeedRetention(**fields)  # type: ignore[arg-type]


def test_retention_from_the_environment() -> None:
    assert feed_retention({}) == DEFAULT_RETENTION
    assert feed_retention(
        {"DISPATCHER_FEED_MAX_AGE": "12h", "DISPATCHER_FEED_MAX_CHANGES": "500"}
    ) == FeedRetention(max_age=dt.timedelta(hours=12), max_changes=500)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("DISPATCHER_FEED_MAX_AGE", "soon", id="age"),
        pytest.param("DISPATCHER_FEED_MAX_CHANGES", "0", id="zero changes"),
        pytest.param("DISPATCHER_FEED_MAX_CHANGES", "-5", id="negative changes"),
        pytest.param("DISPATCHER_FEED_MAX_CHANGES", "1e5", id="float changes"),
    ],
)
def test_retention_from_the_environment_refuses(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        feed_retention({variable: value})


def test_registry_refuses_a_retention_of_another_type(database_url: str) -> None:
    with pytest.raises(TypeError, match="retention"):
        TenantRegistry(database_url, retention={"max_changes": 5})  # type: ignore[arg-type]


# -- pruning -------------------------------------------------------------------------


def test_prune_by_count(writer: TenantRegistry) -> None:
    generations = write(writer, 10)

    pruned = writer.prune_feed(FeedRetention(max_changes=4))

    assert (pruned.removed, pruned.newest, pruned.done) == (6, generations[-1], True)
    # The last change removed is the marker a follower behind it reads.
    assert feed(writer) == [
        (generations[5], Operation.RESYNC),
        *((g, Operation.CONFIG) for g in generations[6:]),
    ]
    assert writer.prune_feed(FeedRetention(max_changes=4)).removed == 0


def test_prune_by_age(writer: TenantRegistry, engine: Engine) -> None:
    generations = write(writer, 6)
    now = utcnow()
    age(engine, generations[:3], now - 8 * DAY)

    pruned = writer.prune_feed(FeedRetention(max_age=7 * DAY), now=now)

    assert pruned.removed == 3
    assert [g for g, _ in feed(writer)] == generations[2:]
    summary = summarise(writer.database)
    assert (summary.changes, summary.oldest, summary.newest) == (
        3,
        generations[3],
        generations[-1],
    )
    assert summary.resync_below == generations[2]
    # A week on, every change but the newest has aged out.
    later = writer.prune_feed(FeedRetention(max_age=7 * DAY), now=now + 8 * DAY)
    assert later.removed == 2
    assert [g for g, _ in feed(writer)] == generations[-2:]


def test_age_and_count_both_bound_the_feed(
    writer: TenantRegistry, engine: Engine
) -> None:
    generations = write(writer, 8)
    now = utcnow()
    age(engine, generations[:2], now - 30 * DAY)

    by_age = writer.prune_feed(FeedRetention(max_age=DAY, max_changes=100), now=now)
    by_count = writer.prune_feed(FeedRetention(max_age=DAY, max_changes=3), now=now)

    assert (by_age.removed, by_count.removed) == (2, 3)
    assert summarise(writer.database).changes == 3


def test_the_newest_change_is_never_pruned(writer: TenantRegistry) -> None:
    generations = write(writer, 3)
    everything = FeedRetention(max_age=dt.timedelta(seconds=1), max_changes=1)

    writer.prune_feed(everything, now=utcnow() + 365 * DAY)
    writer.prune_feed(everything, now=utcnow() + 365 * DAY)

    assert [g for g, op in feed(writer) if op != Operation.RESYNC] == generations[-1:]
    assert writer.latest_generation() == generations[-1]
    writer.update_config("acme", {"after": True})
    assert writer.latest_generation() > generations[-1]


def test_an_empty_feed_prunes_nothing(writer: TenantRegistry) -> None:
    pruned = writer.prune_feed(FeedRetention(max_changes=1))

    assert (pruned.removed, pruned.newest, pruned.done) == (0, 0, True)
    summary = summarise(writer.database)
    assert (summary.changes, summary.oldest, summary.resync_below) == (0, None, None)


def test_prune_stops_at_the_first_change_it_keeps(
    writer: TenantRegistry, engine: Engine
) -> None:
    # A writer with a clock behind the others stamped the second change as
    # recent: the old changes after it stay, or the feed would have a hole.
    generations = write(writer, 5)
    now = utcnow()
    age(engine, generations, now - 30 * DAY)
    age(engine, generations[1:2], now)

    pruned = writer.prune_feed(FeedRetention(max_age=DAY), now=now)

    assert pruned.removed == 1
    assert [g for g, _ in feed(writer)] == generations


def test_prune_in_batches(writer: TenantRegistry) -> None:
    generations = write(writer, 12)
    retention = FeedRetention(max_changes=2, batch_size=3)

    first = prune(writer.database, retention, max_batches=1)
    between = feed(writer)
    second = prune(writer.database, retention, max_batches=2)
    rest = prune(writer.database, retention)

    # A batch deletes three rows and turns the next change into the marker.
    assert (first.removed, first.done) == (4, False)
    # Each batch leaves a consistent feed: a marker, then every later change.
    assert between[0] == (generations[3], Operation.RESYNC)
    assert [g for g, _ in between[1:]] == generations[4:]
    assert (second.removed, second.done) == (6, False)
    assert (rest.removed, rest.done) == (0, True)
    assert [g for g, _ in feed(writer)] == generations[-3:]


def test_a_batch_of_one_still_makes_progress(writer: TenantRegistry) -> None:
    generations = write(writer, 5)

    pruned = writer.prune_feed(FeedRetention(max_changes=1, batch_size=1))

    assert pruned.removed == 4
    assert [g for g, _ in feed(writer)] == generations[-2:]


# -- the automatic schedule ------------------------------------------------------------


def test_writes_prune_at_first_then_every_prune_every_generations(
    database_url: str, writer: TenantRegistry
) -> None:
    write(writer, 5)
    registry = TenantRegistry(
        database_url, retention=FeedRetention(max_changes=2, prune_every=4)
    )
    try:
        # The process's first write prunes what accumulated before it.
        registry.update_config("acme", {"first": True})
        after_first = summarise(registry.database).changes
        first = registry.latest_generation()
        registry.update_config("acme", {"x": 1})
        registry.update_config("acme", {"x": 2})
        registry.update_config("acme", {"x": 3})
        before_due = summarise(registry.database).changes
        registry.update_config("acme", {"x": 4})
        due = summarise(registry.database)
    finally:
        registry.close()

    assert after_first == 2
    assert before_due == 5
    assert (due.changes, due.newest) == (2, first + 4)


def test_a_write_that_changes_nothing_does_not_prune(
    database_url: str, writer: TenantRegistry
) -> None:
    write(writer, 5)
    registry = TenantRegistry(database_url, retention=FeedRetention(max_changes=1))
    try:
        registry.enable_tenant("acme")  # already active: no change
        assert summarise(registry.database).changes == 5
    finally:
        registry.close()


def test_an_automatic_prune_is_bounded_and_the_next_write_goes_on(
    database_url: str, writer: TenantRegistry
) -> None:
    write(writer, AUTO_BATCHES + 10)
    registry = TenantRegistry(
        database_url,
        retention=FeedRetention(max_changes=1, batch_size=1, prune_every=1000),
    )
    try:
        registry.update_config("acme", {"x": 1})
        bounded = summarise(registry.database).changes
        registry.update_config("acme", {"x": 2})
        rest = summarise(registry.database).changes
    finally:
        registry.close()

    # 21 changes: the first batch of one row removes two (one deleted, one
    # the marker), each of the others one; the newest is kept.
    assert bounded == 21 - (AUTO_BATCHES + 1)
    assert rest == 1


def test_one_prune_at_a_time(writer: TenantRegistry) -> None:
    [*_, newest] = write(writer, 5)
    pruner = Pruner(writer.database, FeedRetention(max_changes=1))

    with pruner._lock:  # another thread of this process is pruning
        assert pruner.after_commit(newest) is None
    assert summarise(writer.database).changes == 5
    pruned = pruner.after_commit(newest)
    assert pruned is not None and pruned.removed == 4
    assert pruner.after_commit(newest) is None  # not due again yet


# -- the poll stays one indexed query -----------------------------------------------


def test_the_poll_is_one_primary_key_range_scan(
    writer: TenantRegistry, engine: Engine, backend: str
) -> None:
    rows = [
        {"slug": "acme", "operation": "config", "changed_at": utcnow()}
        for _ in range(5000)
    ]
    with engine.begin() as connection:
        connection.execute(insert(change_table), rows)
        if backend == "postgresql":
            connection.execute(text("ANALYZE tenant_changes"))
    compiled = CHANGES_SINCE.compile(dialect=engine.dialect)
    values = {"generation": writer.latest_generation() - 10, "limit": 1000}
    if compiled.positional:
        parameters: object = tuple(
            values.get(name, 0) for name in compiled.positiontup or ()
        )
    else:
        parameters = values
    explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(explain + compiled.string, parameters)  # type: ignore[arg-type]
        detail = " / ".join(str(row[-1]) for row in plan)

    if backend == "sqlite":
        assert detail == "SEARCH tenant_changes USING INTEGER PRIMARY KEY (rowid>?)"
    else:
        assert "Index Scan using pk_tenant_changes" in detail, detail
        assert "Sort" not in detail and "Seq Scan" not in detail, detail


def test_the_server_reads_its_retention_from_the_environment(
    database_url: str,
) -> None:
    from dispatcher.wsgi import make_application

    environ = {
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_TENANT_DATA": "",
        "DISPATCHER_SECRET_KEY": "s" * 40,
        "DISPATCHER_FEED_MAX_AGE": "36h",
        "DISPATCHER_FEED_MAX_CHANGES": "5000",
    }
    application = make_application(environ)
    try:
        retention = application.registry.retention
    finally:
        application.close()
        application.registry.close()

    assert retention == FeedRetention(max_age=dt.timedelta(hours=36), max_changes=5000)
    with pytest.raises(ValueError, match="DISPATCHER_FEED_MAX_CHANGES='0' must be"):
        make_application({**environ, "DISPATCHER_FEED_MAX_CHANGES": "0"})


def test_a_failed_prune_never_fails_the_write(
    database_url: str,
    writer: TenantRegistry,
    engine: Engine,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write(writer, 5)
    # The database refuses every delete from the feed.
    with engine.begin() as connection:
        if backend == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER keep_feed BEFORE DELETE ON tenant_changes"
                " BEGIN SELECT RAISE(ABORT, 'the feed is kept'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION keep_feed() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'the feed is kept'; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER keep_feed BEFORE DELETE ON tenant_changes"
                " FOR EACH ROW EXECUTE FUNCTION keep_feed()"
            )
    registry = TenantRegistry(
        database_url, retention=FeedRetention(max_changes=1, prune_every=10)
    )
    try:
        with caplog.at_level("WARNING", logger="dispatcher.retention"):
            tenant = registry.update_config("acme", {"written": True})
            registry.update_config("acme", {"again": True})
    finally:
        registry.close()

    assert tenant.config["written"] is True
    assert summarise(writer.database).changes == 7
    # Logged once: the next writes do not try again before prune_every.
    [record] = caplog.records
    assert record.getMessage() == "pruning the change feed failed"

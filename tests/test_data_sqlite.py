"""SQLite tenant files: creation is one transaction, on a real file."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, make_url

from dispatcher.data_sqlite import SqliteFiles


def test_create_runs_the_tables_and_the_stamp_in_one_transaction(
    tmp_path: Path,
) -> None:
    """pysqlite begins before DML only: without a BEGIN each CREATE would
    commit (and sync) alone, and the stamp would not share their transaction."""
    metadata = MetaData()
    tables = [
        Table(f"t{n}", metadata, Column("id", Integer, primary_key=True))
        for n in range(3)
    ]
    files = SqliteFiles(make_url("sqlite://"), tmp_path)
    seen: list[bool] = []

    def then(connection: Connection) -> None:
        raw = connection.connection.dbapi_connection
        seen.append(bool(getattr(raw, "in_transaction", False)))

    files.create("t_acme_00000000", "acme", tables, then)
    assert seen == [True]
    with files.engine("t_acme_00000000").connect() as connection:
        names = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )
        assert [row[0] for row in names] == ["t0", "t1", "t2"]
    files.dispose_all()


def test_a_failure_after_the_tables_leaves_no_file(tmp_path: Path) -> None:
    metadata = MetaData()
    table = Table("items", metadata, Column("id", Integer, primary_key=True))
    files = SqliteFiles(make_url("sqlite://"), tmp_path)

    def then(connection: Connection) -> None:
        connection.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(Exception, match="acme"):
        files.create("t_acme_00000000", "acme", [table], then)
    assert list(tmp_path.iterdir()) == []

"""The change feed's values: operations, names, rows read back, and what they evict."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.changes import NO_NAMES, Names, Operation, TenantChange
from dispatcher.models import Change as ChangeRow
from dispatcher.tenant import NewTenant


def test_operation_is_checked() -> None:
    assert TenantChange(1, "acme", "created").operation is Operation.CREATED
    with pytest.raises(ValueError, match="'renamed'"):
        TenantChange(1, "acme", "renamed")


def test_names_of_a_tenant() -> None:
    spec = NewTenant("acme", "o@acme.test", None, "acme", "shop", ("acme.com",))

    assert Names.of(spec) == Names("acme", "shop", ("acme.com",))
    assert Names.of(NewTenant("bare", "o@bare.test")) == NO_NAMES
    assert not NO_NAMES
    assert Names(domains=("a.test",))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            TenantChange(
                3,
                "acme",
                Operation.SUBDOMAIN,
                Names(subdomain="new"),
                Names(subdomain="old"),
            ),
            id="added and removed",
        ),
        pytest.param(
            TenantChange(4, "acme", Operation.DELETED, NO_NAMES, Names("a", "b")),
            id="removed only",
        ),
        pytest.param(
            TenantChange(5, "acme", Operation.CONFIG, NO_NAMES), id="no names"
        ),
    ],
)
def test_a_change_reads_back_as_written(change: TenantChange) -> None:
    row = (change.generation, change.slug, change.operation.value)

    assert TenantChange.from_row(*row, change.names_to_json()) == change


def test_the_added_names_stay_where_the_previous_release_reads_them() -> None:
    """During a rolling deploy, processes of the release before removed names
    were kept read the added names from the top level of the column."""
    change = TenantChange(
        3, "acme", "subdomain", Names(subdomain="new"), Names(subdomain="old")
    )

    names = change.names_to_json()

    assert (names["subdomain"], names["path_prefix"], names["domains"]) == (
        "new",
        None,
        [],
    )
    assert names["removed"]["subdomain"] == "old"


def test_rows_written_before_removed_names_were_kept() -> None:
    """Older rows stored the added names alone, at the top level."""
    names = {"subdomain": "acme", "path_prefix": None, "domains": ["acme.com"]}

    change = TenantChange.from_row(7, "acme", "created", names)

    assert change.added == Names("acme", None, ("acme.com",))
    assert change.removed == NO_NAMES


def test_rows_without_names_say_any_name_may_have_changed() -> None:
    change = TenantChange.from_row(8, "acme", "domain_added", None)

    assert change.added is None
    assert not change.names_known


def test_a_row_of_an_operation_this_version_does_not_know_is_a_resync(
    registry: TenantRegistry,
) -> None:
    """A newer version's operation (or a hand-written row) must not stop the
    feed: a follower that cannot read a row would ask for it again forever.
    Not knowing what the change did, a process assumes anything may have."""
    registry.create_tenant("acme", owner_email="o@acme.test")
    with registry.engine.begin() as connection:
        connection.execute(
            insert(ChangeRow).values(slug="acme", operation="renamed", names=None)
        )
    registry.disable_tenant("acme")

    changes = registry.changes_since(0)

    assert [(c.slug, c.operation) for c in changes] == [
        ("acme", Operation.CREATED),
        ("acme", Operation.RESYNC),
        ("acme", Operation.DISABLED),
    ]
    assert changes[1].added is None


# -- a tenant's data moves to another server (issue 11) -------------------------


def test_a_data_server_change_reads_back_as_written() -> None:
    change = TenantChange(6, "acme", Operation.DATA_SERVER, NO_NAMES)

    assert Operation("data_server") is Operation.DATA_SERVER
    assert TenantChange.from_row(6, "acme", "data_server", change.names_to_json()) == (
        change
    )


def _data_app(tenant: Tenant) -> Flask:
    """A tenant app that says which data server it was built for."""
    app = Flask(__name__)

    @app.get("/")
    def index() -> dict[str, Any]:
        return {"tenant": tenant.slug, "data_server": tenant.data_server}

    return app


@pytest.mark.parametrize("process", ["same", "another"])
def test_a_data_server_change_evicts_the_app_built_for_the_old_server(
    registry: TenantRegistry, database_url: str, process: str
) -> None:
    """An app's engine points at the server its snapshot named: once the
    tenant moves, the app must go, in this process and in every other."""
    registry.create_tenant("acme", owner_email="o@x.test", subdomain="acme")
    registry.create_tenant("beta", owner_email="o@x.test", subdomain="beta")
    registry.set_data_server("acme", "eu")
    registry.set_data_server("beta", "eu")
    serving = registry if process == "same" else TenantRegistry(database_url)
    built: list[tuple[str, str | None]] = []
    torn: list[tuple[str, str | None]] = []

    def create_app(tenant: Tenant) -> Flask:
        built.append((tenant.slug, tenant.data_server))
        return _data_app(tenant)

    dispatcher = TenantDispatcher(
        serving,
        create_app,
        base_domain="example.com",
        policy=CachePolicy(poll_interval=60),
        teardown=lambda app, tenant: torn.append((tenant.slug, tenant.data_server)),
    )
    try:
        client = Client(dispatcher)
        for host in ("acme.example.com", "beta.example.com"):
            assert client.get("/", headers={"Host": host}).json["data_server"] == "eu"
        follower = serving.feed.follow()

        registry.set_data_server("acme", "us")
        follower.poll()
        moved = client.get("/", headers={"Host": "acme.example.com"}).json
        stayed = client.get("/", headers={"Host": "beta.example.com"}).json
    finally:
        dispatcher.close()
        if serving is not registry:
            serving.close()

    assert moved == {"tenant": "acme", "data_server": "us"}
    assert stayed == {"tenant": "beta", "data_server": "eu"}
    # The other tenant's app, on the server that did not change, was kept.
    assert built == [("acme", "eu"), ("beta", "eu"), ("acme", "us")]
    assert torn[0] == ("acme", "eu")

"""Provisioner: hooks around creating and deleting tenants, against a real registry.

The dispatcher checks are end to end: a :class:`TenantDispatcher` built on the
same registry object (so the registry's in-process change notification reaches
it) and the demo's real Flask ``create_app``, driven by werkzeug's test client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.demo import create_app
from dispatcher.exceptions import (
    Conflict,
    DomainTaken,
    InvalidConfig,
    InvalidName,
    OwnerExists,
    TenantExists,
    TenantNotFound,
)
from dispatcher.models import TenantStatus
from dispatcher.provisioning import Provisioner, ProvisioningFailed

BASE = "example.com"
OWNER = "ada@acme.test"
#: Seconds a thread of the concurrency test may take; far above what it needs.
JOIN_TIMEOUT = 30.0

Hook = Callable[[Tenant], None]


# -- fixtures and helpers -------------------------------------------------------


@pytest.fixture
def dispatcher(
    registry: TenantRegistry, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TenantDispatcher]:
    """The demo tenant app behind a dispatcher on the test's registry object."""
    # Else the demo keeps a key file in the working directory, the checkout.
    monkeypatch.setenv("DISPATCHER_SECRET_KEY", "provisioning-tests-" + "s" * 32)
    dispatcher = TenantDispatcher(
        registry,
        create_app,
        base_domain=BASE,
        path_routing=True,
        # No follower thread: only this registry object's own change
        # notification can evict, so it is what these tests prove.
        policy=CachePolicy(poll_interval=None),
    )
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def client(dispatcher: TenantDispatcher) -> Client:
    return Client(dispatcher)


def fetch(client: Client, host: str, path: str = "/") -> TestResponse:
    """GET with this Host header; buffered, so the app's lease is released at once."""
    return client.get(path, environ_overrides={"HTTP_HOST": host}, buffered=True)


def statuses(client: Client, slug: str) -> tuple[int, int]:
    """The status of ``slug``'s home page by subdomain and by path prefix."""
    return (
        fetch(client, f"{slug}.{BASE}").status_code,
        fetch(client, BASE, f"/{slug}/").status_code,
    )


def recorder(calls: list[tuple[str, Tenant]], name: str) -> Hook:
    """A hook that appends ``(name, tenant)`` to ``calls``."""

    def hook(tenant: Tenant) -> None:
        calls.append((name, tenant))

    hook.__name__ = name
    return hook


def names(calls: list[tuple[str, Tenant]]) -> list[str]:
    return [name for name, _ in calls]


def create_acme(provisioner: Provisioner, **options: Any) -> Tenant:
    options.setdefault("owner_email", OWNER)
    options.setdefault("subdomain", "acme")
    options.setdefault("path_prefix", "acme")
    return provisioner.create("acme", **options)


def state(registry: TenantRegistry) -> tuple[list[Tenant], int]:
    """Everything a failed write must leave as it was."""
    return registry.list_tenants(), registry.latest_generation()


# -- create ---------------------------------------------------------------------


def test_hooks_run_in_order_with_the_disabled_tenant(registry: TenantRegistry) -> None:
    calls: list[tuple[str, Tenant]] = []
    seen_in_registry: list[Tenant] = []

    def look(tenant: Tenant) -> None:
        seen_in_registry.append(registry.get_tenant(tenant.slug))

    provisioner = Provisioner(
        registry,
        on_create=[recorder(calls, "first"), recorder(calls, "second"), look],
        on_delete=[recorder(calls, "never")],
    )
    tenant = create_acme(
        provisioner, config={"plan": "pro"}, domains=["Shop.Acme.test"]
    )

    assert names(calls) == ["first", "second"]
    for _, seen in calls:
        assert seen.slug == "acme"
        assert seen.subdomain == "acme"
        assert seen.path_prefix == "acme"
        assert seen.domains == ("shop.acme.test",)
        assert seen.owner_email == OWNER
        assert dict(seen.config) == {"plan": "pro"}
        assert seen.status is TenantStatus.DISABLED
        assert seen.disabled_reason == "provisioning"
        assert not seen.is_active
    # Every hook gets the same snapshot; the stored tenant agrees with it.
    assert calls[0][1] is calls[1][1]
    assert seen_in_registry == [calls[0][1]]

    assert tenant.is_active
    assert tenant.disabled_reason is None
    assert tenant.version > calls[0][1].version
    assert registry.get_tenant("acme") == tenant


def test_without_hooks_the_tenant_is_created_active_at_once(
    registry: TenantRegistry,
) -> None:
    before = registry.latest_generation()
    tenant = create_acme(Provisioner(registry))
    assert tenant.is_active
    assert tenant.disabled_reason is None
    assert registry.get_tenant("acme") == tenant
    # Never disabled, not even for a moment.
    assert [c.operation for c in registry.changes_since(before)] == ["created"]


def test_with_hooks_the_change_feed_shows_created_then_enabled(
    registry: TenantRegistry,
) -> None:
    before = registry.latest_generation()
    tenant = create_acme(Provisioner(registry, on_create=[lambda tenant: None]))
    changes = registry.changes_since(before)
    assert [(c.slug, c.operation) for c in changes] == [
        ("acme", "created"),
        ("acme", "enabled"),
    ]
    assert tenant.version == changes[-1].generation


def test_what_hooks_write_is_in_the_returned_tenant(
    registry: TenantRegistry, client: Client
) -> None:
    def seed(tenant: Tenant) -> None:
        registry.update_config(tenant.slug, {"greeting": "Seeded by a hook"})

    tenant = create_acme(Provisioner(registry, on_create=[seed]))
    assert tenant.is_active
    assert tenant.config["greeting"] == "Seeded by a hook"
    response = fetch(client, f"acme.{BASE}")
    assert response.status_code == 200
    assert "Seeded by a hook" in response.text


def test_a_half_made_tenant_is_never_served(
    registry: TenantRegistry, client: Client
) -> None:
    # Remembered as unknown first: the creation must make the dispatcher forget.
    assert statuses(client, "acme") == (404, 404)
    during: list[tuple[str, tuple[int, int], str]] = []

    def request_it(name: str) -> Hook:
        def hook(tenant: Tenant) -> None:
            response = fetch(client, f"acme.{BASE}")
            during.append((name, statuses(client, "acme"), response.text))

        return hook

    tenant = create_acme(
        Provisioner(registry, on_create=[request_it("first"), request_it("second")])
    )

    assert [(name, seen) for name, seen, _ in during] == [
        ("first", (403, 403)),
        ("second", (403, 403)),
    ]
    for _, _, text in during:
        assert "currently unavailable" in text
        assert "Welcome to acme!" not in text
    # Served on the very next request: enabling evicted the disabled answer.
    response = fetch(client, f"acme.{BASE}")
    assert response.status_code == 200
    assert "Welcome to acme!" in response.text
    assert statuses(client, "acme") == (200, 200)
    about = fetch(client, BASE, "/acme/about")
    assert about.status_code == 200
    assert f"Version {tenant.version} of this tenant" in about.text


def test_a_failing_hook_undoes_the_tenant(
    registry: TenantRegistry, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, Tenant]] = []
    served_during: list[tuple[int, int]] = []

    def failing(tenant: Tenant) -> None:
        calls.append(("failing", tenant))
        served_during.append(statuses(client, "acme"))
        raise RuntimeError("disk full")

    provisioner = Provisioner(
        registry,
        on_create=[recorder(calls, "prepare"), failing, recorder(calls, "after")],
        on_delete=[recorder(calls, "undo_prepare"), recorder(calls, "undo_failing")],
    )
    before = state(registry)
    with (
        caplog.at_level(logging.ERROR, logger="dispatcher.provisioning"),
        pytest.raises(ProvisioningFailed, match="'acme'") as raised,
    ):
        create_acme(provisioner)

    assert "disk full" in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert "provisioning hook" in caplog.text
    # The later create hook never ran; every delete hook did, in reverse order.
    assert names(calls) == ["prepare", "failing", "undo_failing", "undo_prepare"]
    assert all(tenant.slug == "acme" for _, tenant in calls)
    assert served_during == [(403, 403)]

    with pytest.raises(TenantNotFound):
        registry.get_tenant("acme")
    assert registry.list_tenants() == before[0]
    assert statuses(client, "acme") == (404, 404)

    # The name is free again: a second signup gets it and is served at once.
    tenant = create_acme(Provisioner(registry))
    assert tenant.is_active
    assert statuses(client, "acme") == (200, 200)


def test_a_failing_undo_hook_does_not_stop_the_undo(
    registry: TenantRegistry, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, Tenant]] = []

    def failing_create(tenant: Tenant) -> None:
        raise RuntimeError("create failed")

    def failing_undo(tenant: Tenant) -> None:
        calls.append(("failing_undo", tenant))
        raise RuntimeError("undo failed too")

    provisioner = Provisioner(
        registry,
        on_create=[failing_create],
        on_delete=[recorder(calls, "first"), failing_undo],
    )
    with (
        caplog.at_level(logging.ERROR, logger="dispatcher.provisioning"),
        pytest.raises(ProvisioningFailed, match="create failed"),
    ):
        create_acme(provisioner)
    assert names(calls) == ["failing_undo", "first"]
    assert "undo hook" in caplog.text
    with pytest.raises(TenantNotFound):
        registry.get_tenant("acme")
    assert statuses(client, "acme") == (404, 404)


def test_the_owner_of_a_failed_signup_can_sign_up_again(
    registry: TenantRegistry,
) -> None:
    def failing(tenant: Tenant) -> None:
        raise ValueError("no")

    with pytest.raises(ProvisioningFailed):
        create_acme(Provisioner(registry, on_create=[failing]))
    tenant = create_acme(Provisioner(registry, on_create=[lambda tenant: None]))
    assert tenant.owner_email == OWNER
    assert [t.slug for t in registry.list_tenants()] == ["acme"]


@pytest.fixture
def existing(registry: TenantRegistry) -> Tenant:
    return registry.create_tenant(
        "acme",
        owner_email=OWNER,
        subdomain="acme",
        path_prefix="acme",
        domains=["shop.acme.test"],
    )


@pytest.mark.parametrize(
    ("slug", "options", "error"),
    [
        pytest.param("a_b", {}, InvalidName, id="bad-slug"),
        pytest.param("-x", {}, InvalidName, id="slug-starts-with-dash"),
        pytest.param("a" * 64, {}, InvalidName, id="slug-64-chars"),
        pytest.param("new", {"subdomain": "www"}, InvalidName, id="reserved-sub"),
        pytest.param("new", {"path_prefix": "Admin"}, InvalidName, id="reserved-path"),
        pytest.param("new", {"owner_email": "nobody"}, InvalidName, id="bad-email"),
        pytest.param("new", {"domains": ["localhost"]}, InvalidName, id="bad-domain"),
        pytest.param(
            "new", {"config": {"x": object()}}, InvalidConfig, id="bad-config"
        ),
        pytest.param("ACME", {}, TenantExists, id="slug-taken"),
        pytest.param("new", {"subdomain": "Acme"}, DomainTaken, id="subdomain-taken"),
        pytest.param("new", {"path_prefix": "ACME"}, DomainTaken, id="prefix-taken"),
        pytest.param(
            "new", {"domains": ["SHOP.acme.test."]}, DomainTaken, id="domain-taken"
        ),
    ],
)
def test_invalid_or_taken_names_raise_before_any_hook_runs(
    registry: TenantRegistry,
    existing: Tenant,
    slug: str,
    options: dict[str, Any],
    error: type[Exception],
) -> None:
    calls: list[tuple[str, Tenant]] = []
    provisioner = Provisioner(
        registry,
        on_create=[recorder(calls, "create")],
        on_delete=[recorder(calls, "delete")],
    )
    options.setdefault("owner_email", "bob@other.test")
    before = state(registry)
    with pytest.raises(error):
        provisioner.create(slug, **options)
    assert calls == []
    assert state(registry) == before


# -- delete ---------------------------------------------------------------------


def test_delete_runs_the_hooks_in_reverse_then_deletes(
    registry: TenantRegistry, client: Client
) -> None:
    calls: list[tuple[str, Tenant]] = []
    seen_in_registry: list[Tenant] = []
    served_during: list[tuple[int, int]] = []

    def look(tenant: Tenant) -> None:
        seen_in_registry.append(registry.get_tenant(tenant.slug))
        served_during.append(statuses(client, tenant.slug))

    provisioner = Provisioner(
        registry,
        on_delete=[recorder(calls, "a"), recorder(calls, "b"), look],
    )
    create_acme(provisioner)
    assert statuses(client, "acme") == (200, 200)
    assert calls == []

    provisioner.delete("ACME")

    assert names(calls) == ["b", "a"]
    for _, tenant in calls:
        assert tenant.slug == "acme"
        assert tenant.status is TenantStatus.DISABLED
        assert tenant.disabled_reason == "deleting"
    assert seen_in_registry == [calls[0][1]]
    assert served_during == [(403, 403)]
    with pytest.raises(TenantNotFound):
        registry.get_tenant("acme")
    assert statuses(client, "acme") == (404, 404)


def test_delete_without_hooks(registry: TenantRegistry, client: Client) -> None:
    provisioner = Provisioner(registry)
    create_acme(provisioner)
    before = registry.latest_generation()
    provisioner.delete("acme")
    assert registry.list_tenants() == []
    assert [c.operation for c in registry.changes_since(before)] == [
        "disabled",
        "deleted",
    ]
    assert statuses(client, "acme") == (404, 404)


def test_deleting_an_unknown_tenant_runs_no_hook(registry: TenantRegistry) -> None:
    calls: list[tuple[str, Tenant]] = []
    provisioner = Provisioner(registry, on_delete=[recorder(calls, "delete")])
    with pytest.raises(TenantNotFound):
        provisioner.delete("nobody")
    assert calls == []


def test_a_failing_delete_hook_leaves_the_tenant_disabled(
    registry: TenantRegistry, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, Tenant]] = []
    broken = True

    def flaky(tenant: Tenant) -> None:
        calls.append(("flaky", tenant))
        if broken:
            raise OSError("volume busy")

    provisioner = Provisioner(
        registry,
        on_delete=[recorder(calls, "first"), flaky, recorder(calls, "last")],
    )
    create_acme(provisioner)
    with (
        caplog.at_level(logging.ERROR, logger="dispatcher.provisioning"),
        pytest.raises(ProvisioningFailed, match="'acme'") as raised,
    ):
        provisioner.delete("acme")

    assert "volume busy" in str(raised.value)
    assert isinstance(raised.value.__cause__, OSError)
    assert names(calls) == ["last", "flaky"]  # "first" never ran
    tenant = registry.get_tenant("acme")
    assert tenant.status is TenantStatus.DISABLED
    assert tenant.disabled_reason == "deleting"
    assert statuses(client, "acme") == (403, 403)

    # Deleting again retries every hook.
    calls.clear()
    broken = False
    provisioner.delete("acme")
    assert names(calls) == ["last", "flaky", "first"]
    with pytest.raises(TenantNotFound):
        registry.get_tenant("acme")
    assert statuses(client, "acme") == (404, 404)


# -- arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    "registry_argument",
    [
        pytest.param("sqlite://", id="url"),
        pytest.param(None, id="none"),
        pytest.param(object(), id="object"),
    ],
)
def test_the_registry_must_be_a_tenant_registry(registry_argument: Any) -> None:
    with pytest.raises(TypeError, match="registry must be a TenantRegistry"):
        Provisioner(registry_argument)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"on_create": [None]}, "on_create hook None", id="create-none"),
        pytest.param({"on_create": ["hook"]}, "on_create hook 'hook'", id="create-str"),
        pytest.param(
            {"on_create": [print, 42]}, "on_create hook 42", id="create-second"
        ),
        pytest.param({"on_delete": [1]}, "on_delete hook 1", id="delete-int"),
    ],
)
def test_hooks_must_be_callable(
    registry: TenantRegistry, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Provisioner(registry, **options)


def test_hooks_given_as_an_iterator_all_run(registry: TenantRegistry) -> None:
    """Validating the hooks must not use up an iterator of them."""
    calls: list[tuple[str, Tenant]] = []
    hooks = iter([recorder(calls, "create")])
    provisioner = Provisioner(registry, on_create=hooks)  # type: ignore[arg-type]
    create_acme(provisioner)
    assert names(calls) == ["create"]


# -- concurrency ----------------------------------------------------------------


def _sign_up(
    registry: TenantRegistry,
    name: str,
    barrier: threading.Barrier,
    results: dict[str, Tenant | BaseException],
    hooked: list[str],
) -> None:
    provisioner = Provisioner(registry, on_create=[lambda tenant: hooked.append(name)])
    try:
        barrier.wait()
        results[name] = provisioner.create(
            name, owner_email=f"{name}@example.test", subdomain=name
        )
    except BaseException as e:  # checked by the main thread
        results[name] = e


def test_two_signups_of_one_name_in_two_spellings(database_url: str) -> None:
    """Writers on separate registries (as in separate workers) race for a name."""
    registries = [TenantRegistry(database_url), TenantRegistry(database_url)]
    try:
        registries[0].migrate()
        for round_ in range(5):
            spellings = [f"acme{round_}", f"ACME{round_}"]
            barrier = threading.Barrier(2, timeout=JOIN_TIMEOUT)
            results: dict[str, Tenant | BaseException] = {}
            hooked: list[str] = []
            threads = [
                threading.Thread(
                    target=_sign_up, args=(registry, name, barrier, results, hooked)
                )
                for registry, name in zip(registries, spellings, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(JOIN_TIMEOUT)
            assert not any(thread.is_alive() for thread in threads)

            winners = [n for n, r in results.items() if isinstance(r, Tenant)]
            losers = [n for n, r in results.items() if isinstance(r, Conflict)]
            assert len(winners) == 1, results
            assert len(losers) == 1, results
            assert hooked == winners  # the loser's hooks never ran
            tenant = registries[1].get_tenant(spellings[0])
            assert tenant.is_active
            assert tenant.subdomain == spellings[0]
            assert tenant.owner_email == f"{winners[0].lower()}@example.test"
        assert [t.slug for t in registries[1].list_tenants()] == [
            f"acme{round_}" for round_ in range(5)
        ]
    finally:
        for registry in registries:
            registry.close()


# -- signup cannot claim an existing owner (issue 9, C14a) -----------------------


def test_create_refuses_an_existing_owner_when_asked(registry: TenantRegistry) -> None:
    registry.create_tenant("victim", owner_email="ceo@victim.test")
    calls: list[tuple[str, Tenant]] = []
    provisioner = Provisioner(registry, on_create=[recorder(calls, "create")])
    before = state(registry)

    with pytest.raises(OwnerExists, match="'ceo@victim.test'"):
        provisioner.create(
            "mallory", owner_email="CEO@Victim.Test.", allow_existing_owner=False
        )

    assert calls == []
    assert state(registry) == before


def test_create_attaches_an_existing_owner_by_default(
    registry: TenantRegistry,
) -> None:
    registry.create_tenant("first", owner_email=OWNER)

    tenant = Provisioner(registry).create("second", owner_email=OWNER.upper())

    assert tenant.owner_email == OWNER


def test_a_hook_that_returns_a_newer_snapshot_hands_it_to_later_hooks(
    registry: TenantRegistry,
) -> None:
    """TenantData.create records where the data went; hooks after it must know."""
    calls: list[tuple[str, Tenant]] = []

    def configure(tenant: Tenant) -> Tenant:
        return registry.update_config(tenant.slug, {"placed": True})

    def failing(tenant: Tenant) -> None:
        calls.append(("failing", tenant))
        raise RuntimeError("later hook fails")

    provisioner = Provisioner(
        registry,
        on_create=[configure, recorder(calls, "after")],
        on_delete=[recorder(calls, "undo")],
    )
    tenant = create_acme(provisioner)
    assert calls[0][1].config["placed"] is True
    assert tenant.config["placed"] is True

    registry.delete_tenant("acme")
    calls.clear()
    provisioner = Provisioner(
        registry, on_create=[configure, failing], on_delete=[recorder(calls, "undo")]
    )
    with pytest.raises(ProvisioningFailed):
        create_acme(provisioner)
    # The undo hooks see the newest snapshot too: it says where the data is.
    assert [(name, t.config.get("placed")) for name, t in calls] == [
        ("failing", True),
        ("undo", True),
    ]


def test_an_undone_creation_removes_only_the_account_it_made(
    registry: TenantRegistry,
) -> None:
    def failing(tenant: Tenant) -> None:
        raise RuntimeError("no data")

    provisioner = Provisioner(registry, on_create=[failing])
    # A public signup refuses existing owners, so the account is this call's.
    with pytest.raises(ProvisioningFailed):
        create_acme(provisioner, allow_existing_owner=False)
    assert create_acme(Provisioner(registry), allow_existing_owner=False).is_active
    registry.delete_tenant("acme")
    # An admin's creation may reuse an account: the undo leaves it alone.
    with pytest.raises(ProvisioningFailed):
        create_acme(provisioner, owner_name="Ada")
    with pytest.raises(OwnerExists):
        create_acme(Provisioner(registry), allow_existing_owner=False)

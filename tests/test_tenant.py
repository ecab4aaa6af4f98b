"""Tenant and NewTenant: plain values, and what adding a field must not break."""

from __future__ import annotations

import datetime as dt
import json

from dispatcher import NewTenant, Tenant, TenantStatus

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def tenant(**fields: object) -> Tenant:
    """A snapshot built by keyword, as tenant apps' tests build them."""
    values: dict[str, object] = {
        "slug": "acme",
        "owner_email": "o@acme.test",
        "owner_name": None,
        "subdomain": "acme",
        "path_prefix": None,
        "domains": (),
        "config": {},
        "status": TenantStatus.ACTIVE,
        "disabled_reason": None,
        "version": 1,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Tenant(**values)  # type: ignore[arg-type]


def test_a_snapshot_built_without_a_data_server_has_none() -> None:
    """Code written before snapshots had data_server still builds them."""
    assert tenant().data_server is None
    assert NewTenant("acme", "o@acme.test").data_server is None


def test_to_dict_carries_the_data_server() -> None:
    data = json.loads(json.dumps(tenant(data_server="eu").to_dict()))

    assert data["data_server"] == "eu"
    assert json.loads(json.dumps(tenant().to_dict()))["data_server"] is None


def test_the_data_server_is_part_of_the_snapshot() -> None:
    assert tenant(data_server="eu") != tenant(data_server="us")
    assert tenant(data_server="eu") == tenant(data_server="eu")

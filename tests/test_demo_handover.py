"""The demo's one-time sign-in links, apart from HTTP: signature, site, age."""

from __future__ import annotations

import datetime as dt

import pytest
from helpers import make_tenant
from itsdangerous import URLSafeSerializer

from dispatcher import Tenant
from dispatcher.demo.handover import LINK_LIFETIME, InvalidLink, make_link, read_link

SECRET = "the-demo-deployment-secret-of-the-link-tests"
T0 = 1_700_000_000.0


def test_a_link_reads_back_until_it_expires() -> None:
    acme = make_tenant("acme")
    token = make_link(SECRET, acme, now=lambda: T0)
    link = read_link(SECRET, acme, token, now=lambda: T0 + LINK_LIFETIME)
    assert link.nonce
    with pytest.raises(InvalidLink, match="expired"):
        read_link(SECRET, acme, token, now=lambda: T0 + LINK_LIFETIME + 1)


RE_CREATED = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(make_tenant("beta"), id="another-site"),
        pytest.param(make_tenant("acme", RE_CREATED), id="re-created"),
    ],
)
def test_a_link_is_worthless_on_another_tenant(other: Tenant) -> None:
    acme = make_tenant("acme")
    token = make_link(SECRET, acme, now=lambda: T0)
    with pytest.raises(InvalidLink):
        read_link(SECRET, other, token, now=lambda: T0)


def test_a_link_of_another_deployment_secret_is_refused() -> None:
    acme = make_tenant("acme")
    token = make_link(SECRET, acme, now=lambda: T0)
    with pytest.raises(InvalidLink):
        read_link(SECRET + "-other", acme, token, now=lambda: T0)


def test_a_link_reveals_nothing_personal_when_decoded() -> None:
    # Signed, not encrypted: anyone with the address (an access log) can
    # decode it, so it holds only what a link must.
    acme = make_tenant("acme")
    token = make_link(SECRET, acme, now=lambda: T0)
    _, payload = URLSafeSerializer("any key").loads_unsafe(token)
    assert set(payload) == {"site", "created", "nonce", "issued"}
    assert acme.owner_email not in token and acme.owner_email not in str(payload)

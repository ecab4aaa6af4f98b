"""The signup flow in a real browser: headless Chromium driven by Playwright.

The browser is Debian's ``chromium`` package at ``/usr/bin/chromium``;
Playwright only drives it (no ``playwright install``, no browser download).
Without Chromium or Playwright the tests skip and say why.

The server is ``tenantctl serve`` in a process of its own, on a free loopback
port; ``*.localhost`` reaches it because Chromium resolves every name under
``localhost`` to the loopback address, no DNS set-up needed. It runs in the
test's temporary directory with ``DISPATCHER_SECRET_KEY`` set, so it writes no
key file into the checkout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from servers import TENANTCTL, Server, free_port, running, tenantctl

from dispatcher import TenantRegistry

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# --headless and a fresh --user-data-dir are Playwright's to pass: headless=True
# and the user_data_dir of launch_persistent_context (launch() refuses a
# --user-data-dir in args).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_TIMEOUT_MS = 15_000  # every Playwright action and navigation
SECRET = "the-deployment-secret-of-the-browser-tests"

# ``tenantctl disable`` runs in another process than the server, which hears
# of it through the registry's change feed (polled every second by default) or,
# failing that, when its cached app's TTL ends: DISPATCHER_APP_TTL=1 keeps that
# short too, so the browser flow does not depend on the follower. Either way the
# disabled page comes within a bound, not at once: reload until it shows, for
# at most DISABLED_BOUND seconds. (Before cross-process invalidation, the app
# TTL alone set this bound.)
APP_TTL = "1"
NEGATIVE_TTL = "0.5"
DISABLED_BOUND = 5.0
RELOAD_INTERVAL = 0.2

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is absent: install Debian's chromium package",
    ),
    pytest.mark.skipif(
        sync_playwright is None,
        reason="playwright is not importable: pip install the 'test' extra",
    ),
]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A tab of a headless Chromium with a fresh profile."""
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=BROWSER_TIMEOUT_MS,
        )
        try:
            context.set_default_timeout(BROWSER_TIMEOUT_MS)
            context.set_default_navigation_timeout(BROWSER_TIMEOUT_MS)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """``tenantctl serve`` on an empty database (it migrates it at start)."""
    port = free_port()
    command = [str(TENANTCTL), "--database-url", database_url]
    command += ["serve", "--port", str(port)]
    env = {
        **os.environ,
        "DISPATCHER_BASE_DOMAIN": "localhost",
        "DISPATCHER_APP_TTL": APP_TTL,
        "DISPATCHER_NEGATIVE_TTL": NEGATIVE_TTL,
        "DISPATCHER_SECRET_KEY": SECRET,
    }
    log_path = tmp_path / "serve.log"
    with running(
        command, port=port, env=env, log_path=log_path, cwd=tmp_path
    ) as running_server:
        yield running_server


def _fill_signup_form(
    page: Page, subdomain: str, email: str = "owner@acme.test"
) -> None:
    page.fill("#organisation", "Acme")
    page.fill("#subdomain", subdomain)
    page.fill("#email", email)


def _sign_in(page: Page, url: str, name: str) -> None:
    page.goto(url)
    page.fill("#visitor", name)
    page.click("#sign-in")
    page.wait_for_url(url)


def _visitor(page: Page, url: str) -> str | None:
    response = page.goto(url)
    assert response is not None and response.status == 200
    if page.locator("#visitor-name").count() == 0:
        return None
    return page.text_content("#visitor-name")


def test_sign_up_land_on_the_new_site_then_see_it_disabled(
    server: Server, page: Page, database_url: str, tmp_path: Path
) -> None:
    apex = f"http://localhost:{server.port}/"
    home = f"http://acme.localhost:{server.port}/"
    response = page.goto(apex)
    assert response is not None and response.status == 200
    assert page.title() == "Sign up"

    _fill_signup_form(page, "acme")
    page.click("#submit")
    page.wait_for_url(home)

    assert page.text_content("#greeting") == "Welcome to Acme!"
    assert page.text_content("#slug") == "acme"
    screenshot = tmp_path / "acme.png"
    page.screenshot(path=screenshot)
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert screenshot.stat().st_size > 1000

    tenantctl(database_url, "disable", "acme", "--reason", "unpaid")
    # The server may serve its cached app a little longer (see DISABLED_BOUND).
    disabled_after = time.monotonic() + DISABLED_BOUND
    statuses = []
    while True:
        response = page.reload()
        assert response is not None
        statuses.append(response.status)
        if response.status != 200:
            break
        assert time.monotonic() < disabled_after, (
            f"still served {DISABLED_BOUND} s after tenantctl disable "
            f"(app TTL {APP_TTL} s): {statuses}; server log:\n{server.log()}"
        )
        time.sleep(RELOAD_INTERVAL)

    assert response.status == 403, statuses
    assert page.url == home
    assert "currently unavailable" in page.inner_text("body")
    page.screenshot(path=tmp_path / "disabled.png")


def test_a_reserved_name_is_refused_on_the_signup_page(
    server: Server, page: Page, database_url: str, tmp_path: Path
) -> None:
    apex = f"http://localhost:{server.port}/"
    page.goto(apex)

    _fill_signup_form(page, "www")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#submit")
    page.wait_for_load_state()

    assert posted.value.status == 422
    assert page.url == apex
    error = page.text_content("#error") or ""
    assert "'www' is reserved" in error, error
    # What was typed is kept, for the visitor to correct.
    assert page.input_value("#organisation") == "Acme"
    assert page.input_value("#subdomain") == "www"
    page.screenshot(path=tmp_path / "refused.png")
    with TenantRegistry(database_url) as registry:
        assert registry.list_tenants() == []


def test_signing_in_on_one_site_leaves_the_others_alone(
    server: Server, page: Page
) -> None:
    apex = f"http://localhost:{server.port}/"
    for name in ("acme", "beta"):
        page.goto(apex)
        _fill_signup_form(page, name, f"owner@{name}.test")
        page.click("#submit")
        page.wait_for_url(f"http://{name}.localhost:{server.port}/")
    acme, beta = f"{apex}acme/", f"{apex}beta/"

    _sign_in(page, beta, "Bob")
    assert _visitor(page, acme) is None
    _sign_in(page, acme, "Ada")
    assert _visitor(page, beta) == "Bob"
    assert _visitor(page, acme) == "Ada"
    # Host-only: acme's own subdomain has a session of its own.
    assert _visitor(page, f"http://acme.localhost:{server.port}/") is None

    sessions = {
        (c["domain"], c["path"])
        for c in page.context.cookies()
        if c["name"] == "session"
    }
    # Each tenant's own path; no cookie for a parent domain (".localhost").
    assert {("localhost", "/acme"), ("localhost", "/beta")} <= sessions
    assert all(not domain.startswith(".") for domain, _ in sessions)

    page.goto(acme)
    page.click("#sign-out")
    page.wait_for_url(acme)
    assert _visitor(page, acme) is None
    assert _visitor(page, beta) == "Bob"

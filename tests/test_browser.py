"""A new user's journey through the demo in a real browser: headless Chromium
driven by Playwright.

The browser is Debian's ``chromium`` package at ``/usr/bin/chromium``;
Playwright only drives it (no ``playwright install``, no browser download).
Without Chromium or Playwright the test skips and says why.

The server is ``tenantctl serve`` in a process of its own, on a free loopback
port; ``*.localhost`` reaches it because Chromium resolves every name under
``localhost`` to the loopback address, no DNS set-up needed. It runs in the
test's temporary directory with ``DISPATCHER_SECRET_KEY`` set, so it writes no
key file into the checkout.

Each step leaves a screenshot (``01-signup.png``, ``02-board.png``, ...) in
the directory named by ``DISPATCHER_TEST_ARTIFACTS``, else in
``.artifacts/browser/`` at the repository root: look at them after a run.
``05-board-custom-colour.png`` is the README's picture of the demo.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from servers import TENANTCTL, Server, free_port, running, tenantctl

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, Response, ViewportSize

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
VIEWPORT: ViewportSize = {"width": 1000, "height": 700}
BROWSER_TIMEOUT_MS = 15_000  # every Playwright action and navigation
SECRET = "the-deployment-secret-of-the-browser-tests"
# Read at import: the tests' autouse fixture clears every DISPATCHER_* variable
# (but the database URL) before each test.
ARTIFACTS = Path(
    os.environ.get("DISPATCHER_TEST_ARTIFACTS")
    or Path(__file__).resolve().parent.parent / ".artifacts" / "browser"
)

# ``tenantctl maintenance`` and ``disable`` run in another process than the
# server, which hears of them through the registry's change feed (polled every
# second by default) or, failing that, when its cached app's TTL ends:
# DISPATCHER_APP_TTL=1 keeps that short too. Either way the new state shows
# within a bound, not at once: reload until it shows, for at most
# CHANGE_BOUND seconds.
APP_TTL = "1"
NEGATIVE_TTL = "0.5"
CHANGE_BOUND = 5.0
RELOAD_INTERVAL = 0.2

# The demo's own colours (dispatcher.demo.site_settings.DEFAULT_COLOUR and
# dispatcher.demo.answers.ANSWER_COLOUR) and its page background, as the
# browser computes them: proof that a page is the demo's styled one.
DEFAULT_ACCENT = "rgb(59, 91, 219)"
ANSWER_GREY = "rgb(73, 80, 87)"
PAGE_BACKGROUND = "rgb(244, 245, 247)"
TEAL, TEAL_RGB = "#0c8599", "rgb(12, 133, 153)"

PASSWORD = "correct horse battery staple"
TASKS = [
    "Draft the launch announcement",
    "Book a room for Thursday's planning session",
    "Review the new onboarding e-mails",
    "Renew the TLS certificate for the API",
]
DONE_TASK = TASKS[3]

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
def artifacts() -> Path:
    """Where the screenshots go (created; earlier files are overwritten)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


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
            viewport=VIEWPORT,
            timeout=BROWSER_TIMEOUT_MS,
        )
        try:
            context.set_default_timeout(BROWSER_TIMEOUT_MS)
            context.set_default_navigation_timeout(BROWSER_TIMEOUT_MS)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@pytest.fixture
def server(
    database_url: str,
    tenant_data_location: dict[str, Any],  # drops the tenants' schemas afterwards
    tmp_path: Path,
) -> Iterator[Server]:
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


def test_a_new_user_signs_up_works_on_the_board_and_meets_every_answer(
    server: Server, page: Page, database_url: str, artifacts: Path
) -> None:
    port = server.port
    apex = f"http://localhost:{port}/"
    acme = f"http://acme.localhost:{port}/"
    beta = f"http://beta.localhost:{port}/"

    def shot(name: str) -> None:
        path = artifacts / f"{name}.png"
        page.screenshot(path=path)
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # 1. Sign up on the apex; land signed in on the new site.
    answer = page.goto(apex)
    assert answer is not None and answer.status == 200
    assert page.title() == "Sign up"
    assert f"acme.localhost:{port}" not in page.inner_text("#address")
    assert f"<name>.localhost:{port}" in page.inner_text("#address")
    _fill_signup(page, "acme", "Acme Rockets", "ada@acme.test")
    shot("01-signup")
    page.click("#submit")
    page.wait_for_url(acme)
    assert page.text_content("#greeting") == "Welcome to Acme Rockets!"
    assert page.text_content("#owner") == "ada@acme.test"
    assert page.locator("#no-items-yet").is_visible()

    # 2. Tasks on the board, one done; still there after a reload.
    for task in TASKS:
        page.fill("#item", task)
        page.click("#add-item")
        # The URL stays the board's: wait for the new task itself.
        _task(page, task).wait_for()
    _task(page, DONE_TASK).get_by_role("button", name="Done").click()
    page.locator("#items li.done").filter(has_text=DONE_TASK).wait_for()
    page.reload()
    assert _board(page) == {task: task == DONE_TASK for task in TASKS}
    assert _style(page, ".bar", "backgroundColor") == DEFAULT_ACCENT
    shot("02-board")

    # 3. Sign out; sign in again, after a wrong password.
    page.click("#sign-out")
    page.locator("#sign-in-link").wait_for()
    assert page.url == acme
    assert page.locator("#owner").count() == 0
    assert page.locator("#read-only").is_visible()
    assert _board(page) == {task: task == DONE_TASK for task in TASKS}
    page.click("#sign-in-link")
    page.fill("#email", "ada@acme.test")
    page.fill("#password", "not the password")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#sign-in")
    page.wait_for_load_state()
    assert posted.value.status == 400
    assert page.text_content("#error") == (
        "The e-mail address or the password is wrong."
    )
    assert page.input_value("#password") == ""
    shot("03-sign-in-refused")
    # An unknown address gets the very same words: no hint who has an account.
    page.fill("#email", "nobody@acme.test")
    page.fill("#password", PASSWORD)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#sign-in")
    page.wait_for_load_state()
    assert posted.value.status == 400
    assert page.text_content("#error") == (
        "The e-mail address or the password is wrong."
    )
    page.fill("#email", "ada@acme.test")
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(acme)
    assert page.text_content("#owner") == "ada@acme.test"

    # 4. Settings: a new colour and site name, seen on the very next page.
    page.click("#settings-link")
    page.wait_for_url(f"{acme}settings")
    assert page.input_value("#colour") == "#3b5bdb"
    page.fill("#name", "Acme Launch Team")
    page.fill("#greeting", "Launch week: what is left")
    page.fill("#colour", TEAL)
    page.click("#save")
    page.wait_for_url(f"{acme}settings?saved=1")
    assert page.locator("#saved").is_visible()
    assert page.input_value("#colour") == TEAL
    assert _style(page, ".bar", "backgroundColor") == TEAL_RGB
    shot("04-settings")
    page.click("#site-name")
    page.wait_for_url(acme)
    assert page.text_content("#site-name") == "Acme Launch Team"
    assert page.title() == "Board · Acme Launch Team"
    assert page.text_content("#greeting") == "Launch week: what is left"
    assert _style(page, ".bar", "backgroundColor") == TEAL_RGB
    assert _style(page, "#greeting", "color") == TEAL_RGB
    assert _style(page, "#add-item", "backgroundColor") == TEAL_RGB
    shot("05-board-custom-colour")
    acme_session = _session_cookie(page, "acme.localhost", "/")

    # 5. A second site: its own board, and the first one's session is no
    # session there, by subdomain or by path.
    page.goto(apex)
    _fill_signup(page, "beta", "Beta Bakery", "bo@beta.test")
    page.click("#submit")
    page.wait_for_url(beta)
    assert page.text_content("#owner") == "bo@beta.test"
    assert page.locator("#no-items-yet").is_visible()
    assert _board(page) == {}
    text = page.inner_text("body")
    assert not [task for task in TASKS if task in text], text
    shot("06-second-site")
    # Host-only cookies: acme.localhost's session reaches no other host, so
    # the same site by path (localhost/acme/) is not signed in either.
    for url in (f"{apex}acme/", f"{apex}beta/"):
        _goto(page, url, 200)
        assert page.locator("#sign-in-link").is_visible(), url
    assert all(
        not cookie["domain"].startswith(".") for cookie in page.context.cookies()
    )
    # Sent there anyway, acme's session is refused: each site's own key.
    for domain, path, url in (
        ("beta.localhost", "/", beta),
        ("localhost", "/beta", f"{apex}beta/"),
    ):
        page.context.add_cookies(
            [{"name": "session", "value": acme_session, "domain": domain, "path": path}]
        )
        answer = _goto(page, url, 200)
        assert acme_session in (answer.request.header_value("cookie") or ""), url
        assert page.locator("#owner").count() == 0, url
        assert page.locator("#sign-in-link").is_visible(), url
    # The control: the same cookie where it belongs (acme, by path) is a
    # session, so the refusals above are the key's doing, not a lost cookie.
    page.context.add_cookies(
        [
            {
                "name": "session",
                "value": acme_session,
                "domain": "localhost",
                "path": "/acme",
            }
        ]
    )
    _goto(page, f"{apex}acme/", 200)
    assert page.text_content("#owner") == "ada@acme.test"
    _goto(page, acme, 200)
    assert page.text_content("#owner") == "ada@acme.test"

    # 6. The dispatcher's own answers, styled like the demo.
    tenantctl(
        database_url,
        "maintenance",
        "on",
        "acme",
        "--message",
        "We are moving the board to a faster server.",
    )
    answer = _reload_until(page, server, lambda a: a.status == 503, "maintenance")
    assert answer.headers.get("retry-after") == "60"
    assert page.text_content("#heading") == "Down for maintenance"
    assert "We are moving the board to a faster server." in page.inner_text("main")
    _assert_answer_page(page, apex)
    shot("07-maintenance")

    tenantctl(database_url, "maintenance", "off", "acme")
    _reload_until(page, server, lambda a: a.status == 200, "maintenance off")
    assert page.text_content("#site-name") == "Acme Launch Team"

    tenantctl(database_url, "disable", "acme", "--reason", "card declined")
    _reload_until(page, server, lambda a: a.status == 403, "disabled")
    assert page.text_content("#heading") == "This site is unavailable"
    page_text = page.inner_text("body")
    for private in ("card declined", "acme", "Acme", "ada@acme.test"):
        assert private not in page_text, page_text
    _assert_answer_page(page, apex)
    shot("08-disabled")

    for url, name in (
        (f"http://nobody.localhost:{port}/", "09-unknown-subdomain"),
        (f"{apex}nobody/", "10-unknown-path"),
    ):
        _goto(page, url, 404)
        assert page.title() == "No such site"
        assert page.text_content("#heading") == "No such site"
        _assert_answer_page(page, apex)
        shot(name)
    page.click("#back")
    page.wait_for_url(apex)
    assert page.title() == "Sign up"


def _fill_signup(page: Page, name: str, organisation: str, email: str) -> None:
    page.fill("#organisation", organisation)
    page.fill("#subdomain", name)
    page.fill("#email", email)
    page.fill("#password", PASSWORD)


def _task(page: Page, body: str) -> Locator:
    return page.locator("#items li.item").filter(has_text=body)


def _board(page: Page) -> dict[str, bool]:
    """The board's tasks as shown, each with whether it is crossed out."""
    shown: dict[str, bool] = {}
    for item in page.locator("#items li.item").all():
        body = item.locator(".body")
        crossed = _style_of(body, "textDecorationLine") == "line-through"
        shown[body.inner_text()] = crossed
    return shown


def _style(page: Page, selector: str, name: str) -> str:
    """The computed style ``name`` (camelCase) of the element at ``selector``."""
    return _style_of(page.locator(selector), name)


def _style_of(locator: Locator, name: str) -> str:
    value: str = locator.evaluate("(e, name) => getComputedStyle(e)[name]", name)
    return value


def _session_cookie(page: Page, domain: str, path: str) -> str:
    for cookie in page.context.cookies():
        if cookie["name"] == "session" and (cookie["domain"], cookie["path"]) == (
            domain,
            path,
        ):
            return cookie["value"]
    pytest.fail(f"no session cookie for {domain}{path}: {page.context.cookies()}")


def _goto(page: Page, url: str, status: int) -> Response:
    answer = page.goto(url)
    assert answer is not None
    assert answer.status == status, (url, answer.status, page.inner_text("body"))
    return answer


def _reload_until(
    page: Page, server: Server, shown: Callable[[Response], bool], what: str
) -> Response:
    """Reload until ``shown(answer)``, for at most CHANGE_BOUND seconds."""
    deadline = time.monotonic() + CHANGE_BOUND
    statuses = []
    while True:
        answer = page.reload()
        assert answer is not None
        statuses.append(answer.status)
        if shown(answer):
            return answer
        assert time.monotonic() < deadline, (
            f"{what}: not shown {CHANGE_BOUND} s after the tenantctl command"
            f" (app TTL {APP_TTL} s): {statuses}; server log:\n{server.log()}"
        )
        time.sleep(RELOAD_INTERVAL)


def _assert_answer_page(page: Page, apex: str) -> None:
    """The demo's styled answer: its grey, its background, a way to the signup."""
    assert _style(page, "body", "backgroundColor") == PAGE_BACKGROUND
    assert _style(page, "#heading", "color") == ANSWER_GREY
    assert _style(page, ".bar", "backgroundColor") == ANSWER_GREY
    assert page.get_attribute("#back", "href") == apex

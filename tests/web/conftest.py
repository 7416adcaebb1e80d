"""Browser fixtures: Debian's Chromium driven by Playwright against the app on loopback.

Playwright's own browser download is never used (`playwright install` cannot run here): the
browser is /usr/bin/chromium, which `.ci/run` installs. Without it these tests skip, saying why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.cache import cache

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium (.ci/run installs it)"
)


def clear_login_throttle() -> None:
    """Forget this worker's failed-login counters: every browser test signs in from 127.0.0.1."""
    redis = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    for key in redis.scan_iter(match=cache.make_key("login-throttle:*")):
        redis.delete(key)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # between browser steps are ordinary synchronous code, so Django's async guard must stand down.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class PageProblems:
    """What a page did that it never should: dialogs, console errors, CSP violations, failed scripts."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []


@pytest.fixture
def page(browser, live_server):
    """A fresh browser tab (1440 x 900) whose dialogs and errors are recorded, not ignored."""
    clear_login_throttle()
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems = PageProblems()

    def on_dialog(dialog):
        problems.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    tab.on("console", lambda message: message.type == "error" and problems.console_errors.append(message.text))
    tab.on("pageerror", lambda error: problems.page_errors.append(str(error)))
    tab.problems = problems
    yield tab
    context.close()
    clear_login_throttle()


def expected_console_error(text: str) -> bool:
    """Chromium logs every non-2xx fetch to the console; those are answers the page handles."""
    return "Failed to load resource: the server responded with a status of" in text


@pytest.fixture
def assert_clean_page(page):
    """After the test: no script error, no CSP violation, no unexpected console error."""
    yield page
    assert page.problems.page_errors == []
    assert [text for text in page.problems.console_errors if not expected_console_error(text)] == []


def sign_in(page, *, email: str, password: str, path: str = "/dashboard/") -> None:
    """Open `path`, get sent to the login page, sign in with the form, and land back on `path`."""
    page.goto(path)
    page.wait_for_url("**/dashboard/login/**")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{path}")
    wait_until_loaded(page)


def wait_until_loaded(page) -> None:
    """Every page marks what it is still fetching with aria-busy; wait until nothing is."""
    from playwright.sync_api import expect

    expect(page.locator("main [aria-busy='true']")).to_have_count(0)

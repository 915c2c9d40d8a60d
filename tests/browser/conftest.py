"""Browser tests: Debian's Chromium, driven by Playwright, against the test app served by a real
WSGI server on loopback (a thread of this process, so the test and the server share the
database set up by tests/conftest.py, and time-machine moves the server's clock too).

Chromium comes from the system (apt package `chromium`); Playwright's own browser downloads
are not used. When a test fails, a full-page screenshot of its page is saved under
test-artifacts/screenshots/ (git-ignored) so CI can show what the browser saw.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, sync_playwright
from werkzeug.serving import make_server

from backoffice.staff.models import StaffUser
from tests.factories import STAFF_PASSWORD, totp_code

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 15_000
UNSAFE = re.compile(r"[^\w.-]+")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """Save what the browser showed when a test failed (taken before its page is closed)."""
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None and not page.is_closed():
        folder = item.config.rootpath / "test-artifacts" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (UNSAFE.sub("_", item.name) + ".png")
        page.screenshot(path=path, full_page=True)
        report.sections.append(("screenshot", f"{path} (page {page.url})"))
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module, closed before the rest of the suite runs."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The test app on a free loopback port, served from a background thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def page(browser: Browser, live_server: str) -> Iterator[Page]:
    """A fresh browser profile per test, in English (tests select by data-testid, not by text)."""
    context = browser.new_context(base_url=live_server, locale="en-GB", timezone_id="Europe/Madrid")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def dialogs(page: Page) -> list[str]:
    """The questions confirm.js asked; each one is accepted, as a user clicking OK would."""
    asked: list[str] = []

    def accept(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return asked


@pytest.fixture
def sign_in(page: Page) -> Callable[[StaffUser], None]:
    """Sign a staff member in through the login form and the second step, as a person would
    (the code is the one their authenticator app shows now)."""

    def sign_in(user: StaffUser) -> None:
        page.goto("/login")
        page.fill("#email", user.email)
        page.fill("#password", STAFF_PASSWORD)
        page.click("form button[type=submit]")
        page.wait_for_url(re.compile(r"/mfa\?"))
        page.fill("#code", totp_code(user.email))
        page.get_by_test_id("verify-code").click()
        page.wait_for_url(re.compile(r"/admin/$"))

    return sign_in

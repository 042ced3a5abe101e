"""The browser tier's fixtures: Debian's Chromium driven by Playwright's sync API (pointed at the system browser:
no browser download is reachable), `make serve`'s LocalApi with the real model and scheduled batch runs, and a page
that records every console error and uncaught exception.

Where Chromium is missing the tier is skipped with a message, except where it is required (``BROWSER_REQUIRED``,
set by `make test`, or ``CI``): there it fails. ``CHROMIUM_PATH`` names the browser (default: chromium on PATH).
Screenshots go to ``CONSOLE_SCREENSHOTS`` (`make screenshots`: docs/screenshots/), else to a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Playwright, ViewportSize, sync_playwright

from scripts.local import serve

#: Seconds between scheduled batch runs: short, so that a batch ends soon after its lines are generated.
SCHEDULE_EVERY_S = 2
VIEWPORT: ViewportSize = {"width": 1200, "height": 900}


def _required() -> bool:
    return bool(os.environ.get("BROWSER_REQUIRED") or os.environ.get("CI"))


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """The system Chromium; skipped where it is missing and not required, failed where it is required."""
    named = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if Path(named).is_file() and os.access(named, os.X_OK):
        return Path(named)
    message = f"no Chromium at {named} (make chromium installs Debian's; CHROMIUM_PATH names another)"
    if _required():
        pytest.fail(message + ": the browser tests are required here (BROWSER_REQUIRED or CI)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Playwright, chromium_path: Path) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(chromium_path), headless=True)
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each view's screenshot is saved."""
    named = os.environ.get("CONSOLE_SCREENSHOTS")
    folder = Path(named) if named else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def local(real_model: Path) -> Iterator[serve.LocalApi]:
    """`make serve` with the real model and scheduled batch runs, a table and bucket of its own."""
    suffix = uuid.uuid4().hex[:8]
    with serve.LocalApi(
        real_model,
        env={"N_THREADS": "2"},
        table_name=f"{serve.TABLE}-{suffix}",
        bucket_name=f"{serve.BUCKET}-{suffix}",
        schedule_every_s=SCHEDULE_EVERY_S,
    ) as running:
        yield running


@dataclass
class Console:
    """A browser page on the console, and what went wrong in it."""

    page: Page
    base_url: str
    #: Console messages of type error and uncaught exceptions, in order.
    errors: list[str] = field(default_factory=list)

    def problems(self, *expected: str) -> list[str]:
        """The errors, less those containing one of ``expected`` (a refusal the test provoked on purpose)."""
        return [error for error in self.errors if not any(part in error for part in expected)]


@pytest.fixture(scope="module")
def console(browser: Browser, local: serve.LocalApi) -> Iterator[Console]:
    """One page for the module's tests, in order: loaded, then each test's requests on it."""
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light", accept_downloads=True)
    page = context.new_page()
    opened = Console(page, local.base_url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.errors.append(f"console: {message.text}")

    def on_page_error(error: Error) -> None:
        opened.errors.append(f"uncaught: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    yield opened
    context.close()

"""Fixtures of the browser tests: a real headless Chromium and a console served over HTTP.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it),
driven by Playwright without Playwright's own browser download. Without a
browser the tests skip, saying so, except under ``.ci/run``
(``SPAKKY_OUTBOX_REQUIRE_SERVICES``), where they fail.
"""

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import BrowserContext, Page, sync_playwright
from spakky_outbox_testservices.resolve import ServiceSpec, required
from starlette.types import ASGIApp

from .outbox_app import Outbox, started_outbox

CHROMIUM_ENV = "SPAKKY_OUTBOX_CHROMIUM"
"""Path of the Chromium to drive; default the first of `_CHROMIUM_NAMES` on PATH."""
SCREENSHOTS_ENV = "SPAKKY_OUTBOX_CONSOLE_SCREENSHOTS"
"""Folder the tests save their screenshots in (``make screenshots`` sets docs/images/console)."""
UNAVAILABLE_ENV = "SPAKKY_OUTBOX_CHROMIUM_UNAVAILABLE"
"""Why no browser could be installed (``.ci/run`` sets it): the tests skip with it, even when required."""
CHROMIUM = ServiceSpec("chromium", CHROMIUM_ENV, "", required=True)
"""Required by ``SPAKKY_OUTBOX_REQUIRE_SERVICES=1`` (or a list naming ``chromium``)."""
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
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
"""Flags Chromium needs on these machines (root, no GPU, no network but loopback)."""


def chromium_path() -> str | None:
    """The Chromium executable the tests drive, or None when none is installed."""
    if path := os.environ.get(CHROMIUM_ENV):
        return path
    return next((found for name in _CHROMIUM_NAMES if (found := shutil.which(name))), None)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[BrowserContext]:
    """A Playwright browser context on a real headless Chromium with a fresh profile.

    One per test: Playwright's sync API runs an event loop on this thread
    while it is open, which would break the asyncio tests that follow on the
    same worker.
    """
    path = chromium_path()
    if path is None:
        if unavailable := os.environ.get(UNAVAILABLE_ENV):
            pytest.skip(f"no browser could be installed: {unavailable}")
        reason = "no Chromium installed: apt-get install chromium (or set SPAKKY_OUTBOX_CHROMIUM)"
        if required(CHROMIUM):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=path,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(chromium: BrowserContext) -> Iterator[Page]:
    """A new tab."""
    tab = chromium.new_page()
    try:
        yield tab
    finally:
        tab.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a loopback port in a thread; yield its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Page, str], Path]:
    """Save a full-page screenshot of a tab under a name (into docs when `SCREENSHOTS_ENV` is set)."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def take(tab: Page, name: str) -> Path:
        target = folder / f"{name}.png"
        tab.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 0
        return target

    return take


@pytest.fixture
def outbox(postgres_url: str) -> Iterator[Outbox]:
    """A started application with the SQLAlchemy outbox on a fresh PostgreSQL table (relay off)."""
    with started_outbox(postgres_url) as started:
        yield started

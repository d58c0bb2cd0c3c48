"""The admin in a real browser (Debian's Chromium driven by Playwright) with the real daemon.

Screenshots of every step go to ``test-artifacts/browser/<test name>/NN-step.png``.
INOTIFIER_TEST_BROWSER=0 skips the test; =1 makes a missing browser a failure (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, DaemonProcess

pytestmark = [pytest.mark.browser, pytest.mark.daemon]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
PASSWORD = "browser-test-password"


def _browser_missing() -> str:
    """Return why the browser test cannot run here, or "" when it can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is missing (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 pip install playwright)"
    return ""


@pytest.fixture
def browser_page(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Playwright page in Debian's Chromium (never a browser Playwright downloads)."""
    wanted = os.environ.get("INOTIFIER_TEST_BROWSER", "")
    if wanted == "0":
        pytest.skip("INOTIFIER_TEST_BROWSER=0")
    missing = _browser_missing()
    if missing:
        if wanted == "1":
            pytest.fail(f"INOTIFIER_TEST_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from django.conf import settings

    if not settings.STATIC_URL:
        pytest.fail(
            "the test settings have no STATIC_URL: the live server fails every request "
            "(add django.contrib.staticfiles and STATIC_URL to tests/settings.py)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000}, locale="en-US")
        context.set_default_timeout(15_000)
        page = context.new_page()
        try:
            yield page
        finally:
            context.close()
            browser.close()


class Shots:
    """Numbered full-page screenshots in a folder named after the test."""

    def __init__(self, page: Any, name: str):
        self.page = page
        self.folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    def __call__(self, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def reload_until(page: Any, found: Callable[[], bool], timeout: float = 20.0) -> None:
    """Reload ``page`` until ``found()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not found():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s on {page.url}")
        time.sleep(0.3)
        page.reload()


@pytest.fixture
def superuser(django_user_model: Any, daemon: DaemonProcess) -> str:
    """Create the admin user (before the browser starts: no ORM calls under Playwright)."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", PASSWORD)
    return "admin"


def test_admin_watch_becomes_active_and_logs_events(
    live_server: Any,
    daemon: DaemonProcess,
    superuser: str,
    watch_dir: Path,
    browser_page: Any,
    request: pytest.FixtureRequest,
) -> None:
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    daemon.env_extra["INOTIFIER_POLL_INTERVAL"] = "0.2"
    daemon.start()
    page = browser_page
    shot = Shots(page, request.node.name)
    admin = live_server.url + "/admin/"

    # Log in.
    page.goto(admin)
    page.fill("#id_username", superuser)
    page.fill("#id_password", PASSWORD)
    shot("login")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    shot("dashboard")

    # Add a watch through the form, ticking the event checkboxes.
    page.goto(admin + "inotifier/watchpath/add/")
    page.fill("#id_path", str(watch_dir))
    for box in page.query_selector_all("input[name=mask]:checked"):
        box.uncheck()
    page.check("input[name=mask][value=IN_CREATE]")
    page.check("input[name=mask][value=IN_CLOSE_WRITE]")
    page.select_option("#id_processor", "inotifier.event_processors.AllEventsSignaler")
    page.fill("#id_description", "Added by the browser test")
    shot("add-form")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    shot("saved")
    assert str(watch_dir) in page.inner_text("#result_list")

    # The daemon notices the new row at its next poll and reports the watch active.
    row = f"#result_list tr:has(a:text-is('{watch_dir}'))"
    reload_until(page, lambda: page.locator(f"{row} .inotifier-state-active").count() > 0)
    shot("active")
    assert "IN_CLOSE_WRITE | IN_CREATE" in page.inner_text(row)
    assert page.locator("#inotifier-daemons").count() == 1

    # A file created in the folder shows up in the event log.
    created = watch_dir / "hello-from-the-browser-test.txt"
    created.write_text("hello\n")
    daemon.record.wait_path(created, "IN_CLOSE_WRITE")
    page.goto(admin + "inotifier/eventlog/")
    reload_until(
        page,
        lambda: page.locator("#result_list").count() > 0 and str(created) in page.inner_text("#result_list"),
    )
    shot("event-log")
    log = page.inner_text("#result_list")
    assert re.search(rf"IN_CREATE\s+{re.escape(str(created))}", log), log
    assert re.search(rf"IN_CLOSE_WRITE\s+{re.escape(str(created))}", log), log

    # One event in detail (read-only).
    page.locator("#result_list tr:has(td:text-is('IN_CLOSE_WRITE')) a").first.click()
    page.wait_for_selector("#content")
    shot("event-detail")
    assert str(created) in page.inner_text("#content")


#: Debian's Chromium shows this colour for the grey *unknown* badge (#6e7781).
UNKNOWN_GREY = "rgb(110, 119, 129)"


@pytest.fixture
def health_rows(daemon: DaemonProcess, watch_dir: Path) -> dict[str, Any]:
    """Three watches made before the browser starts: working, refused processor, a 3 000-character path."""
    from inotifier.models import WatchPath

    (watch_dir / "refused").mkdir()
    long_path = str(watch_dir) + ("/" + "d" * 199) * 15
    rows = {
        "good": WatchPath.objects.create(path=str(watch_dir), mask=0x108),
        "refused": WatchPath.objects.create(
            path=str(watch_dir / "refused"), mask=0x100, processor="os.system"
        ),
        "long": WatchPath.objects.create(path=long_path, mask=0x100),
    }
    assert len(long_path) > 3000
    return {name: row.pk for name, row in rows.items()} | {"long_path": long_path}


def test_states_reasons_and_long_paths_in_the_watch_list(
    live_server: Any,
    daemon: DaemonProcess,
    superuser: str,
    health_rows: dict[str, Any],
    browser_page: Any,
    request: pytest.FixtureRequest,
) -> None:
    """Issue 11: reasons readable in the list, a stopped daemon's states grey, long paths contained."""
    daemon.env_extra["INOTIFIER_POLL_INTERVAL"] = "0.2"
    daemon.start()
    page = browser_page
    shot = Shots(page, request.node.name)
    admin = live_server.url + "/admin/"
    page.goto(admin)
    page.fill("#id_username", superuser)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")

    def row(name: str) -> Any:
        return page.locator(f"#result_list tr:has(input.action-select[value='{health_rows[name]}'])")

    page.goto(admin + "inotifier/watchpath/")
    reload_until(
        page,
        lambda: (
            row("good").locator(".inotifier-state-active").count() == 1
            and row("refused").locator(".inotifier-state-error").count() == 1
            and row("long").locator(".inotifier-state-missing").count() == 1
        ),
    )
    shot("reported")

    # Why a watch failed is text in its row, not only a tooltip.
    reason = row("refused").locator(".inotifier-state-reason")
    assert reason.is_visible()
    assert "'os.system' is not in INOTIFIER_PROCESSORS" in reason.inner_text()
    assert row("long").locator(".inotifier-state-reason").is_visible()

    # A 3 000-character path does not push the other columns off the page: the table is
    # as wide with it as without it (and within the window), its row a few lines high.
    width = page.evaluate("window.innerWidth")
    table = page.locator("#result_list").bounding_box()
    assert table is not None and table["x"] + table["width"] <= width
    for cell in row("long").locator("th, td").all():
        box = cell.bounding_box()
        assert box is not None and box["x"] + box["width"] <= table["x"] + table["width"] + 1
    path_box = row("long").locator("th.field-path_display").bounding_box()
    assert path_box is not None and path_box["height"] < 250  # shortened, not 3 000 characters wrapped
    assert row("long").locator(".inotifier-path").get_attribute("title") == health_rows["long_path"]
    page.goto(admin + "inotifier/watchpath/?state=active")
    without = page.locator("#result_list").bounding_box()
    assert without is not None and table["width"] <= without["width"] + 1
    page.goto(admin + "inotifier/watchpath/")

    # After inotifier_stop no state claims to be current: all grey "unknown".
    result = daemon.stop()
    assert result.returncode == 0, result.stderr
    reload_until(page, lambda: page.locator("#result_list .inotifier-state-active").count() == 0)
    shot("daemon-stopped")
    unknown = page.locator("#result_list .inotifier-state-unknown")
    assert unknown.count() == 3
    for i in range(3):
        badge = unknown.nth(i)
        assert "unknown (daemon not running)" in badge.inner_text()
        assert badge.evaluate("e => getComputedStyle(e).color") == UNKNOWN_GREY
    assert "Last reported: active" in (
        row("good").locator(".inotifier-state-unknown").get_attribute("title") or ""
    )
    assert "stopped" in page.inner_text("#inotifier-daemons")
    page.goto(admin + "inotifier/watchpath/?state=active")
    assert page.locator("#result_list").count() == 0 or page.locator("#result_list tbody tr").count() == 0
    shot("filter-active-after-stop")

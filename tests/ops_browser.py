"""Headless Chromium (Debian's chromium and chromium-driver) through Selenium, for the console.

Nothing is downloaded: the browser and its driver are the system's.
Run as a script, this module takes the screenshots of docs/web.rst:
``.venv/bin/python -m tests.ops_browser docs/_static``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

# Generous: the CI machine has two cores shared with other work.
DEADLINE = 30.0
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]


def find_chromium() -> tuple[str, str]:
    """The paths of chromium and chromedriver. Raises FileNotFoundError if one is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        raise FileNotFoundError(
            "the browser tests need Chromium and its driver (Debian: apt-get install chromium "
            "chromium-driver)"
        )
    return browser, driver


@contextlib.contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile, quit at the end."""
    browser, driver_path = find_chromium()
    with tempfile.TemporaryDirectory(prefix="greenstalk-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        try:
            driver.set_page_load_timeout(DEADLINE)
            yield driver
        finally:
            driver.quit()


def until(check: Callable[[], Any], what: str, seconds: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something true (returned); elements that are
    replaced meanwhile are looked up again. Raises AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (AssertionError, StaleElementReferenceException, WebDriverException) as error:
            last = error
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {seconds} s") from last


def css(driver: webdriver.Chrome, selector: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def tube_row(driver: webdriver.Chrome, tube: str, server: int = 0) -> WebElement | None:
    """The overview's row of ``tube`` on server number ``server``, if shown."""
    rows = css(driver, f'#tubes tbody tr[data-server="{server}"][data-tube="{tube}"]')
    return rows[0] if rows else None


def cell(driver: webdriver.Chrome, tube: str, column: str, server: int = 0) -> str | None:
    """The text of a column of a tube's row, or None while the row is not shown."""
    row = tube_row(driver, tube, server)
    if row is None:
        return None
    return str(row.find_element(By.CSS_SELECTOR, f'td[data-col="{column}"]').text)


def open_tube(driver: webdriver.Chrome, tube: str, server: int = 0) -> None:
    """Click a tube's row and wait for its panel to show its counts."""
    until(lambda: tube_row(driver, tube, server), f"tube {tube} listed").click()
    until(lambda: tube in driver.find_element(By.ID, "tube-title").text, "the tube panel")
    until(lambda: "ready" in driver.find_element(By.ID, "tube-counts").text, "the counts")


def job_button(driver: webdriver.Chrome, state: str, action: str) -> WebElement:
    """A button of the next job in ``state`` (ready, delayed, buried)."""
    button: WebElement = until(
        lambda: css(driver, f'#job-{state} button[data-action="{action}"]')[0],
        f"the {action} button of the {state} job",
    )
    return button


def take_docs_screenshots(directory: Path) -> None:
    """Screenshots of the console for the docs: two servers with a few tubes, one tube open."""
    import greenstalk
    from greenstalk.ops.web import Console
    from greenstalk.testing import run_server

    from .ops_support import served

    directory.mkdir(parents=True, exist_ok=True)
    with run_server("greenstalkd") as first, run_server("greenstalkd") as second:
        with greenstalk.Client(first.address) as client:
            for tube, count in (("emails", 42), ("thumbnails", 7), ("reports", 3)):
                client.use(tube)
                client.put_many(
                    [f'{{"{tube[:-1]}": {n}, "to": "user{n}@example.com"}}'.encode()
                     for n in range(count)]
                )
            client.put(b'{"report": "monthly"}', delay=3600)
            client.use("emails")
            client.put(b'{"email": "digest", "to": "all"}', priority=100, delay=900)
            client.watch("emails")
            for _ in range(3):
                client.bury(client.reserve(0))
            client.pause_tube("reports", 600)
        with greenstalk.Client(second.address, use="webhooks") as client:
            client.put_many([b'{"url": "https://example.com/hook"}'] * 12)
        console = Console([first.address, second.address], refresh=0.5)
        with served(console.app) as url, chromium() as driver:
            driver.set_window_size(1280, 760)
            driver.get(url + "/")
            until(lambda: tube_row(driver, "webhooks", 1), "the second server's tubes")
            driver.save_screenshot(str(directory / "web-console.png"))
            driver.set_window_size(1280, 1000)
            open_tube(driver, "emails")
            until(lambda: css(driver, "#job-buried dd"), "the buried job")
            driver.save_screenshot(str(directory / "web-console-tube.png"))


if __name__ == "__main__":
    take_docs_screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_static"))

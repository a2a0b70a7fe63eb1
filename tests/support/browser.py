"""A real headless browser for the web app's tests: Debian's chromium driven by Selenium through
Debian's chromedriver (scripts/setup.sh installs both). Every wait is bounded.

Set FUSIONRANK_SCREENSHOTS=docs/screenshots to have the tests save the page's main states there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 20.0  # the longest any one page state may take to appear
WINDOW = (1280, 900)


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if absent:
        return (f"{' and '.join(absent)} not installed: scripts/setup.sh installs Debian's "
                "chromium and chromium-driver with apt")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: scripts/setup.sh installs the [dev] extra"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium (Selenium WebDriver); skips the test with the reason when absent."""
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--disable-extensions", "--no-first-run",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition: Callable[[Any], Any], what: str, timeout_s: float = WAIT_S):
    """The condition's first truthy value, or a failure naming `what` the page never showed."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    waiting = WebDriverWait(driver, timeout_s, poll_frequency=0.05,
                            ignored_exceptions=(StaleElementReferenceException,))
    try:
        return waiting.until(condition)
    except TimeoutException:
        pytest.fail(f"the page did not show {what} within {timeout_s:.0f} s")


def screenshot(driver, name: str) -> Path | None:
    """Save the page as <FUSIONRANK_SCREENSHOTS>/<name>.png when that variable is set, in 128
    colours (a third of the size; a page of flat colours and text looks the same)."""
    folder = os.environ.get("FUSIONRANK_SCREENSHOTS")
    if not folder:
        return None
    import io

    from PIL import Image

    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    page.quantize(colors=128, method=Image.Quantize.MEDIANCUT,
                  dither=Image.Dither.NONE).save(path, optimize=True)
    return path

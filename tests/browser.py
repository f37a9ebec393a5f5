"""A real headless Chromium for the page tests, offline.

Importing this module skips the importing test module where Debian's chromium and
chromium-driver are absent, unless EDGE_RUNTIME_REQUIRE_BROWSER is set (as CI sets it),
which makes their absence an error. The `browser` fixture (conftest.py) is one of these.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("EDGE_RUNTIME_REQUIRE_BROWSER"):
        raise RuntimeError("chromium and chromedriver are required (apt-get install chromium chromium-driver)")
    pytest.skip("chromium and chromedriver are not installed", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

__all__ = ["Select", "WebDriverWait", "chromium"]


def chromium(profile: Path, window: str = "1280,900", logs: bool = False) -> Any:
    """A headless Chromium that fetches nothing by itself; `logs` records every request
    the page makes and every script error."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch drivers
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(arg)
    if logs:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

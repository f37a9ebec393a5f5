"""The Train page in a real headless Chromium on a real server: Train, the progress bar, the
comparison with the frames the two versions disagree on, Promote, and live results from
the new version with no failed prediction request meanwhile.

Skipped like tests/test_live_page.py where chromium and chromedriver are absent.
"""

from __future__ import annotations

import httpx
import pytest

from tests.browser import WebDriverWait  # skips this module where Chromium is absent
from tests.retrain_util import BEARER, TOKEN, app_over, base_bundle, labelled_pair, store_with
from tests.server_util import running
from tests.test_retrain import Hammer

ROWS_JS = """
return Array.from(document.querySelectorAll('#figures tr.tag-row')).map(r => r.dataset.tag);
"""
THUMBS_JS = """
return Array.from(document.querySelectorAll('#frames img')).map(i => i.complete && i.naturalWidth > 0);
"""


@pytest.mark.timeout(400)
def test_train_compare_promote_on_the_page(browser, tmp_path):
    store = store_with(base_bundle(tmp_path / "base"), tmp_path / "models", labelled_pair(tmp_path / "pair"))
    app, _ = app_over(store)
    with running(app) as url:
        assert httpx.get(f"{url}/view/train").status_code == 401  # the sign-in form
        browser.get(f"{url}/?token={TOKEN}")
        browser.get(f"{url}/view/train")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element("id", "active").text.startswith("active: v1"))
        browser.find_element("id", "train").click()
        wait.until(lambda d: d.execute_script("return document.getElementById('bar').value") > 0)  # the child's
        WebDriverWait(browser, 300).until(lambda d: d.find_element("id", "job-state").text.endswith("ready"))
        assert set(browser.execute_script(ROWS_JS)) == {"blue", "green", "red", "overall"}
        WebDriverWait(browser, 30).until(lambda d: (t := d.execute_script(THUMBS_JS)) and all(t))
        assert "answered differently" in browser.find_element("id", "summary").text
        with Hammer(url) as hammer:
            browser.find_element("id", "promote").click()
            wait.until(lambda d: d.find_element("id", "job-state").text.endswith("promoted"))
            wait.until(lambda d: "publish from retrain" in d.find_element("id", "changes").text)
            assert browser.find_element("id", "active").text.startswith("active: v2")
            seen = len(hammer.iterations)
            assert WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda d: len(hammer.iterations) > seen + 3)
        assert set(hammer.statuses) == {200}
        served = httpx.get(f"{url}/api/models", headers=BEARER, timeout=10).json()[0]
        assert served["version"] == 2 and hammer.iterations[-1] == served["iteration"]
        assert "blue" in served["tags"]

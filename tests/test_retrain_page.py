"""The Train page in a real headless Chromium on a real server: Train, the progress bar, the
comparison with the frames the two versions disagree on, Promote, and live results from
the new version with no failed prediction request meanwhile; and the whole field loop,
from frames grabbed off a real camera and labelled with a new tag on the label page to
the live page showing that tag from the promoted version.

Skipped like tests/test_live_page.py where chromium and chromedriver are absent.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from edge_runtime.config import load_settings
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from tests.browser import WebDriverWait  # skips this module where Chromium is absent
from tests.conftest import wait_for
from tests.retrain_util import BEARER, CHANNEL, TOKEN, app_over, base_bundle, label_in_store, store_with
from tests.server_util import running
from tests.test_retrain import Hammer

ROWS_JS = """
return Array.from(document.querySelectorAll('#figures tr.tag-row')).map(r => r.dataset.tag);
"""
THUMBS_JS = """
return Array.from(document.querySelectorAll('#frames img')).map(i => i.complete && i.naturalWidth > 0);
"""
ROW_JS = """
const r = document.querySelector(`#figures tr.tag-row[data-tag="${arguments[0]}"]`);
return r ? Array.from(r.children).map(c => c.textContent) : null;
"""
TOP_JS = "const c = document.querySelector('#predictions tr td'); return c ? c.textContent : '';"


@pytest.mark.timeout(400)
def test_train_compare_promote_on_the_page(browser, tmp_path):
    store = store_with(base_bundle(tmp_path / "base"), tmp_path / "models")
    label_in_store(tmp_path / "events", count=33)  # saved through the store, blue among them
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


def blue_clip(path: Path, frames: int = 40, fps: float = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """A real MJPG clip of noise frames with the blue channel at full: the new tag's frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(7)
    for _ in range(frames):
        image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        image[..., CHANNEL["blue"]] = 255
        writer.write(image)
    writer.release()
    return path


def latest(url: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(f"{url}/predictions/latest", params={"camera": "cam"}, headers=BEARER, timeout=10)
    return r.json() if r.status_code == 200 else {}  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_the_field_loop_label_a_new_tag_train_compare_promote_and_see_it_live(browser, tmp_path):
    """v1 (red, green, trained by `edge-export train` on the base set, which is also the
    name's base dataset) watches a camera whose clip shows blue frames. Six frames are
    grabbed and labelled `blue` on the label page; the Train page trains a candidate on
    the base set and those labels, shows blue found by it and not by v1, promotes it;
    the live page then shows blue from v2, and a client posting to the prediction route
    throughout got 200 every time."""
    from selenium.webdriver.common.keys import Keys

    work = tmp_path / "base"
    store = store_with(base_bundle(work), tmp_path / "models", base=work / "base")
    settings = load_settings(env={}, overrides={
        "models": {"path": str(store), "probation_s": 60},
        "events": {"store": {"path": str(tmp_path / "events"), "min_free_mb": 0}},
        "cameras": [{"id": "cam", "source": str(blue_clip(tmp_path / "blue.avi")), "loop": True, "realtime": True,
                     "max_fps": 10, "model": "shelf"}]})
    svc = build_services(settings, env={"EDGE_RUNTIME_TOKEN": TOKEN})
    with running(create_app(svc)) as url, Hammer(url) as hammer:
        assert wait_for(lambda: bool(latest(url)), 60, 0.2)  # the camera has a result from v1
        v1 = latest(url)
        assert v1["predictions"][0]["tagName"] in ("red", "green")
        browser.get(f"{url}/?token={TOKEN}")
        browser.get(f"{url}/view/label")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element("id", "empty").is_displayed())  # nothing kept yet
        for n in range(6):
            browser.find_element("id", "grab").click()
            wait.until(lambda d: d.find_element("id", "status").text == "grabbed a frame")
            if n == 0:  # the new tag, typed once; then it is a button of its own
                browser.find_element("id", "new-tag").send_keys("blue", Keys.ENTER)
            else:
                browser.find_element("css selector", '#tags button[data-tag="blue"]').click()
            wait.until(lambda d: d.find_element("css selector", "#tags button.on").get_attribute("data-tag") == "blue")
            browser.find_element("id", "save").click()
            wait.until(lambda d: d.find_element("id", "status").text.startswith("saved"))
            time.sleep(0.3)  # the next grab takes a later frame of the clip
        labels = svc.store.labels("shelf")  # type: ignore[union-attr]
        assert len(labels) == 6 and {x.tags for x in labels} == {("blue",)}

        browser.get(f"{url}/view/train")
        wait.until(lambda d: d.find_element("id", "active").text.startswith("active: v1"))
        browser.find_element("id", "train").click()
        WebDriverWait(browser, 300).until(lambda d: d.find_element("id", "job-state").text.endswith("ready"))
        # tag, precision (v1, new), recall (v1, new), AP (v1, new), images: v1 never said blue
        cells = browser.execute_script(ROW_JS, "blue")
        assert cells is not None and cells[3] == "0.0%" and cells[4] == "100.0%", cells
        WebDriverWait(browser, 30).until(lambda d: (t := d.execute_script(THUMBS_JS)) and all(t))
        browser.find_element("id", "promote").click()
        wait.until(lambda d: d.find_element("id", "job-state").text.endswith("promoted"))
        assert browser.find_element("id", "active").text.startswith("active: v2")

        browser.get(f"{url}/")  # the live page: the camera's results, now from v2
        WebDriverWait(browser, 60, poll_frequency=0.2).until(lambda d: d.execute_script(TOP_JS) == "blue")
        now = latest(url)
        assert now["iteration"] != v1["iteration"] and now["predictions"][0]["tagName"] == "blue"
        seen = len(hammer.iterations)
        assert wait_for(lambda: len(hammer.iterations) > seen + 3, 30)
    assert len(hammer.statuses) > 20 and set(hammer.statuses) == {200}  # none failed, before, during, after
    assert hammer.iterations[0] == v1["iteration"] and hammer.iterations[-1] == now["iteration"]

"""The live page in a real headless Chromium: results that change, a stream with pixels.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them). Skipped where
they are absent, unless EDGE_RUNTIME_REQUIRE_BROWSER is set, as CI sets it.
"""

from __future__ import annotations

import time

import pytest

from edge_runtime.model.predictor import Predictor
from tests.browser import WebDriverWait  # skips this module where Chromium is absent
from tests.conftest import DEMO, write_video
from tests.server_util import make_app, running

pytestmark = pytest.mark.slow  # a real browser per test

PIXELS_JS = """
const img = document.getElementById('stream');
if (!img.complete || !img.naturalWidth) return null;
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d');
ctx.drawImage(img, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let lit = 0, sum = 0;
for (let i = 0; i < d.length; i += 4) { const v = d[i] + d[i + 1] + d[i + 2]; if (v > 30) lit++; sum += v; }
return {width: c.width, height: c.height, lit: lit, mean: sum / (d.length / 4)};
"""


def test_live_page_shows_changing_results_and_a_stream_with_pixels(browser, tmp_path):
    video = write_video(tmp_path / "cam.avi", frames=30, size=(640, 360), fps=15)
    app = make_app(Predictor.load(DEMO), model={"top_k": 3},
                   cameras=[{"id": "shelf", "source": str(video), "loop": True, "realtime": True}])
    with running(app) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: d.find_element("id", "seq").text.isdigit())
        first = int(browser.find_element("id", "seq").text)
        wait.until(lambda d: d.find_element("id", "seq").text.isdigit()
                   and int(d.find_element("id", "seq").text) > first)
        # read the rows in one script call: every event replaces them
        rows = browser.execute_script(
            "return Array.from(document.querySelectorAll('#predictions tr')).map(r => r.textContent)")
        assert len(rows) == 3 and all("%" in r for r in rows)
        wait.until(lambda d: d.find_element("id", "state").text == "online")
        wait.until(lambda d: float(d.find_element("id", "fps").text) > 0)
        pixels = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pixels = browser.execute_script(PIXELS_JS)
            # the video's first frames are near black (grey 4*i), so wait for a lit one
            if pixels and pixels["lit"] > 1000 and pixels["mean"] > 10:
                break
            time.sleep(0.2)
        assert pixels is not None, "the stream image never loaded"
        assert (pixels["width"], pixels["height"]) == (640, 360)
        assert pixels["lit"] > 1000 and pixels["mean"] > 10
        assert "multiclass model, 1000 tags" in browser.find_element("id", "model").text


DROP_JS = """
const [kind, done] = arguments;
const finish = (blob, name, type) => {
  const dt = new DataTransfer();
  dt.items.add(new File([blob], name, {type: type}));
  document.getElementById('tester').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
  done(true);
};
if (kind === 'text') { finish(new Blob(['not an image']), 'notes.txt', 'text/plain'); return; }
const c = document.createElement('canvas');
c.width = 320; c.height = 240;
const ctx = c.getContext('2d');
ctx.fillStyle = 'rgb(255, 0, 0)';
ctx.fillRect(0, 0, 320, 240);
c.toBlob((blob) => finish(blob, 'red.png', 'image/png'), 'image/png');
"""

CANVAS_JS = """
const c = document.getElementById('canvas');
if (c.hidden || !c.width) return null;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let lit = 0, box = 0;
for (let i = 0; i < d.length; i += 4) {
  if (d[i] + d[i + 1] + d[i + 2] > 30) lit++;
  if (d[i] < 40 && d[i + 1] > 200 && d[i + 2] > 90 && d[i + 2] < 150) box++;  // the box colour, #00e676
}
return {width: c.width, height: c.height, lit: lit, box: box};
"""


def rows(browser):
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#predictions tr')).map(r => r.textContent)")


def test_without_cameras_the_page_tests_a_picked_image(browser):
    app = make_app(Predictor.load(DEMO), model={"top_k": 3})
    with running(app) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: d.find_element("id", "tester").is_displayed())
        assert not browser.find_element("id", "stream").is_displayed()  # no broken image
        assert not browser.find_element("id", "live-status").is_displayed()
        assert "waiting for results" not in browser.find_element("id", "predictions").text
        assert "--source 0" in browser.find_element("id", "add-camera").text
        shoot = browser.find_element("id", "shoot")
        assert shoot.get_attribute("capture") == "environment" and shoot.get_attribute("accept") == "image/*"
        browser.find_element("id", "pick").send_keys(str(DEMO / "samples" / "coffee.jpg"))
        wait.until(lambda d: "predictions" in d.find_element("id", "upload-status").text)
        shown = rows(browser)
        assert len(shown) == 3 and "espresso" in shown[0] and "%" in shown[0]
        canvas = browser.execute_script(CANVAS_JS)
        assert canvas is not None and canvas["lit"] > 1000


def test_without_cameras_a_dropped_image_shows_its_boxes_and_a_bad_file_its_error(browser, exports):
    app = make_app(Predictor.load(exports["yolo"]), model={"path": str(exports["yolo"])})
    with running(app) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: d.find_element("id", "tester").is_displayed())
        browser.execute_async_script(DROP_JS, "text")
        wait.until(lambda d: "could not predict" in d.find_element("id", "upload-status").text)
        assert "image" in browser.find_element("id", "upload-status").text.split("could not predict:")[1]
        browser.execute_async_script(DROP_JS, "png")
        wait.until(lambda d: "red.png: " in d.find_element("id", "upload-status").text
                   and "predictions" in d.find_element("id", "upload-status").text)
        assert any("red" in r and "%" in r for r in rows(browser))
        canvas = browser.execute_script(CANVAS_JS)
        assert canvas is not None and (canvas["width"], canvas["height"]) == (320, 240)
        assert canvas["box"] > 100  # the detection's box is drawn over the picture

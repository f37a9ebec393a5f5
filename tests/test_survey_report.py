"""report.html in a real headless Chromium: it loads from disk alone, filters, and opens findings.

Needs Debian's chromium and chromium-driver, as tests/test_live_page.py does.
"""

from __future__ import annotations

import json
import re

import cv2
import pytest

from edge_runtime.cli import main
from edge_runtime.survey.records import BadRecord, FindingRecord, UnitRecord
from edge_runtime.survey.report import write_report
from tests.browser import Select, WebDriverWait, chromium  # skips this module where Chromium is absent
from tests.survey_util import dji_xmp, geotagged_jpeg, place_squares, terrain, write_detector

pytestmark = pytest.mark.timeout(120)  # a stuck browser fails instead of hanging

NETWORK_URL = re.compile(r"\b(?:https?|wss?|ftp):|//[a-z0-9.-]+\.[a-z]{2,}/", re.IGNORECASE)


@pytest.fixture()
def browser(tmp_path):
    driver = chromium(tmp_path / "profile", window="1280,1000", logs=True)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    """What documents loaded from files asked for (the browser's own new-tab page is left out)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent" and \
                message["params"].get("documentURL", "").startswith("file:"):
            urls.append(message["params"]["request"]["url"])
    return urls


def load(driver, path) -> None:
    driver.get("about:blank")
    driver.get_log("performance")  # drop what came before
    driver.get(path.as_uri())


def assert_offline(driver, html: str) -> None:
    assert NETWORK_URL.search(html) is None, NETWORK_URL.search(html)
    urls = requested_urls(driver)
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def rows(driver) -> list[list[str]]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#findings tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent))")


def finding(tag: str, p: float, lat: float, lon: float, left: float = 0.4) -> FindingRecord:
    return FindingRecord(tag, p, {"left": left, "top": 0.3, "width": 0.1, "height": 0.1}, "0,0,512,512",
                         lat, lon, "ground")


def test_the_report_filters_and_opens_findings_without_the_network(browser, tmp_path):
    (tmp_path / "annotated").mkdir()
    cv2.imwrite(str(tmp_path / "annotated" / "a.jpg"), terrain(1600, 1200))
    units = [
        UnitRecord("in/a.jpg", "a.jpg", 4000, 3000, 47.0, 8.0, 400.0, "2026-11-28T10:00:00", {"predictions": []},
                   [finding("person", 0.93, 47.0001, 8.0001), finding("vehicle", 0.41, 47.0002, 7.9999, 0.1),
                    finding("person", 0.62, 46.9999, 8.0002, 0.7)], "annotated/a.jpg"),
        UnitRecord("in/b.jpg", "b.jpg", 4000, 3000, 47.001, 8.0, 400.0, None, {"predictions": []},
                   [finding("vehicle", 0.77, 47.0011, 8.0003)], None),
        UnitRecord("in/c.jpg", "<c>.jpg", 4000, 3000, 47.002, 8.001, 400.0, None, {"predictions": []}),
    ]
    bad = [BadRecord("in/broken.jpg", "truncated JPEG: the data ends before the image does", "/in/broken.jpg")]
    settings = {"model": "m.zip", "variant": "yolo", "tiles": "auto", "overlap": 0.2, "threshold": 0.1, "every": 1}
    path = write_report(tmp_path, units, bad, settings)
    html = path.read_text()

    load(browser, path)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(rows(d)) == 4)
    assert_offline(browser, html)
    assert [r[:3] for r in rows(browser)] == [["93.0%", "person", "a.jpg"], ["77.0%", "vehicle", "b.jpg"],
                                              ["62.0%", "person", "a.jpg"], ["41.0%", "vehicle", "a.jpg"]]
    summary = browser.find_element("id", "summary").text
    assert "3 images and frames, 4 findings, 1 skipped" in summary and "tiles auto" in summary
    assert "broken.jpg: truncated JPEG" in browser.find_element("id", "bad").text
    assert len(browser.find_elements("css selector", "#map circle.image")) == 3
    assert len(browser.find_elements("css selector", "#map circle.finding")) == 4
    assert re.fullmatch(r"\d+ k?m", browser.find_element("css selector", "#scalebar text").text)

    Select(browser.find_element("id", "tag")).select_by_value("vehicle")
    assert [r[1] for r in rows(browser)] == ["vehicle", "vehicle"]
    assert len(browser.find_elements("css selector", "#map circle.finding")) == 2
    browser.execute_script("const s = document.getElementById('minprob'); s.value = '0.5';"
                           "s.dispatchEvent(new Event('input'))")
    assert [r[:2] for r in rows(browser)] == [["77.0%", "vehicle"]]
    assert "1 of 4 findings shown" in browser.find_element("id", "shown").text
    counts = browser.find_element("id", "counts").text
    assert "person 0" in counts and "vehicle 1" in counts

    Select(browser.find_element("id", "tag")).select_by_value("")
    browser.find_element("css selector", "#map circle.finding[data-index='0']").click()
    wait.until(lambda d: d.find_element("id", "detail-image").text == "a.jpg")
    assert browser.find_element("id", "detail-tag").text == "person"
    assert browser.find_element("id", "detail-probability").text == "93.0%"
    image = browser.find_element("css selector", "#detail img")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", image) == 480)  # the thumbnail
    assert browser.find_elements("css selector", "#detail .box")
    assert browser.find_element("css selector", "#map circle.finding.selected").get_attribute("data-index") == "0"
    browser.find_element("css selector", "#findings tbody tr:nth-child(2)").click()
    wait.until(lambda d: d.find_element("id", "detail-image").text == "b.jpg")
    assert "no thumbnail" in browser.find_element("id", "detail").text
    assert browser.execute_script("return document.querySelectorAll('c').length") == 0  # names are never markup


def test_a_real_survey_report_loads_offline(browser, tmp_path):
    image = terrain(1024, 768)
    place_squares(image, [(200, 200), (700, 500)])
    folder = tmp_path / "in"
    folder.mkdir()
    geotagged_jpeg(folder / "DJI_0001.JPG", image, 47.3769, 8.5417, xmp=dji_xmp(40, 10))
    out = tmp_path / "out"
    assert main(["survey", str(write_detector(tmp_path / "model")), str(folder), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    load(browser, out / "report.html")
    WebDriverWait(browser, 20).until(lambda d: len(rows(d)) == 2)
    assert_offline(browser, html)
    assert "tiles auto" in browser.find_element("id", "summary").text

"""The label page in a real headless Chromium on a real server: a frame labelled with a new
tag by keys, one by a click, a box drawn with the pointer on a detector's frame, and boxes
drawn by touch, moved and deleted, each seen saved in the store.

Skipped like tests/test_live_page.py where chromium and chromedriver are absent.
"""

from __future__ import annotations

from importlib import resources

import pytest

from edge_runtime.model.predictor import Predictor
from tests.browser import WebDriverWait  # skips this module where Chromium is absent
from tests.conftest import wait_for
from tests.events_util import TOKEN
from tests.server_util import running
from tests.test_label_api import keep, label_app

pytestmark = pytest.mark.timeout(120)
IMAGE_SHOWN = "const i = document.getElementById('image'); return i.complete && i.naturalWidth > 0 " \
              "&& !document.getElementById('work').hidden"


def _open(browser, url):  # type: ignore[no-untyped-def]
    browser.get(f"{url}/?token={TOKEN}")  # the session cookie the label page shares
    browser.get(f"{url}/view/label")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.execute_script(IMAGE_SHOWN))
    return wait


def _saved_box_is(browser, store, sample, model, tag, where):  # type: ignore[no-untyped-def]
    """Enter saves the frame's label; it holds one box, `tag` at `where` (left, top, width,
    height, as fractions of the picture), to within 3% of the picture."""
    from selenium.webdriver.common.keys import Keys

    browser.find_element("tag name", "body").send_keys(Keys.ENTER)
    assert wait_for(lambda: store.label(sample, model) is not None, timeout=10)
    (box,) = store.label(sample, model).boxes
    assert box.tag == tag
    assert (box.left, box.top, box.width, box.height) == pytest.approx(where, abs=0.03)


def test_a_frame_is_labelled_with_a_new_tag_by_keys_and_another_by_a_click(colours, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    app = label_app(colours, tmp_path)
    with running(app) as url:
        first, second = keep(app, 2)[::-1]  # newest first on the page
        store, model = app.state.services.store, app.state.services.models.default.name
        wait = _open(browser, url)
        browser.find_element("tag name", "body").send_keys("n")  # focus the new-tag field
        browser.switch_to.active_element.send_keys("kiosk-new", Keys.ENTER)
        wait.until(lambda d: d.find_element("css selector", "#tags button.on").text.endswith("kiosk-new"))
        browser.find_element("tag name", "body").send_keys(Keys.ENTER)  # save and next
        assert wait_for(lambda: store.label(first, model) is not None, timeout=10)
        assert store.label(first, model).tags == ("kiosk-new",)
        wait.until(lambda d: "2 of 2" in d.find_element("id", "where").text)
        green = next(b for b in browser.find_elements("css selector", "#tags button") if b.text.endswith("green"))
        green.click()
        browser.find_element("id", "save").click()
        assert wait_for(lambda: store.label(second, model) is not None, timeout=10)
        assert store.label(second, model).tags == ("green",)
        browser.find_element("tag name", "body").send_keys(Keys.ARROW_LEFT)  # back: it shows the saved label
        wait.until(lambda d: "labelled (rev 1)" in d.find_element("id", "where").text)
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]


def test_a_box_drawn_with_the_pointer_on_a_detectors_frame_is_saved(exports, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    app = label_app(Predictor.load(exports["yolo"]), tmp_path)
    with running(app) as url:
        sample = keep(app, 1)[0]  # its prediction has no box: the frame starts empty
        store, model = app.state.services.store, app.state.services.models.default.name
        wait = _open(browser, url)
        stage = browser.find_element("id", "stage")
        width, height = stage.size["width"], stage.size["height"]
        # drag from 20%,20% to 60%,70% of the picture (offsets are from the element's centre)
        ActionChains(browser).move_to_element_with_offset(stage, int(-0.3 * width), int(-0.3 * height)) \
            .click_and_hold().move_by_offset(int(0.2 * width), int(0.25 * height)) \
            .move_by_offset(int(0.2 * width), int(0.25 * height)).release().perform()
        wait.until(lambda d: len(d.find_elements("css selector", "#stage .box")) == 1)
        browser.find_element("id", "new-tag").send_keys("cola-can", Keys.ENTER)  # the box's tag, a new one
        wait.until(lambda d: d.find_element("css selector", "#stage .box span").text == "cola-can")
        _saved_box_is(browser, store, sample, model, "cola-can", (0.2, 0.2, 0.4, 0.5))


def test_boxes_are_drawn_by_touch_moved_and_deleted_before_the_label_is_saved(exports, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.keys import Keys

    app = label_app(Predictor.load(exports["yolo"]), tmp_path)
    with running(app) as url:
        sample = keep(app, 1)[0]
        store, model = app.state.services.store, app.state.services.models.default.name
        wait = _open(browser, url)
        stage = browser.find_element("id", "stage")
        width, height = stage.size["width"], stage.size["height"]

        def at(x: float, y: float) -> tuple[int, int]:  # a point of the picture, from the element's centre
            return int((x - 0.5) * width), int((y - 0.5) * height)

        def boxes() -> int:
            return len(browser.find_elements("css selector", "#stage .box"))

        for start, end in (((0.2, 0.2), (0.6, 0.7)), ((0.7, 0.75), (0.9, 0.95))):  # two boxes, each by a finger
            touch = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
            touch.pointer_action.move_to(stage, *at(*start)).pointer_down() \
                .move_to(stage, *at((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)) \
                .move_to(stage, *at(*end)).pointer_up()
            touch.perform()
        wait.until(lambda d: boxes() == 2)
        # move the first box 10% right by dragging its middle with the mouse
        ActionChains(browser).move_to_element_with_offset(stage, *at(0.4, 0.45)).click_and_hold() \
            .move_by_offset(int(0.05 * width), 0).move_by_offset(int(0.05 * width), 0).release().perform()
        browser.find_element("id", "new-tag").send_keys("cola-can", Keys.ENTER)  # the selected box's tag
        # select the second box with a click and delete it with the key
        ActionChains(browser).move_to_element_with_offset(stage, *at(0.8, 0.85)).click().perform()
        browser.find_element("tag name", "body").send_keys(Keys.DELETE)
        wait.until(lambda d: boxes() == 1)
        _saved_box_is(browser, store, sample, model, "cola-can", (0.3, 0.2, 0.4, 0.5))


def test_the_live_and_events_pages_link_to_the_label_page():
    pages = resources.files("edge_runtime.server")
    assert 'id="label-link" href="view/label"' in pages.joinpath("live.html").read_text()
    assert 'id="label-link" href="/view/label"' in pages.joinpath("events.html").read_text()

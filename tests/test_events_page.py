"""The events page in a real headless Chromium: thumbnails newest first, a tag filter, and a
click that plays the event's clip (VP9 in MP4) or offers it as a download (MPEG-4 Part 2).

Skipped like tests/test_live_page.py where chromium and chromedriver are absent.
"""

from __future__ import annotations

import httpx
import pytest

from tests.browser import WebDriverWait  # skips this module where Chromium is absent
from tests.conftest import wait_for
from tests.events_util import AUTH, GREY, RED, TOKEN, colour_video, ended, events_app
from tests.server_util import running

GREEN = (0, 255, 0)

CARDS_JS = """
return Array.from(document.querySelectorAll('#events .event')).map(c => ({
  tag: c.querySelector('.tag').textContent,
  thumb: c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0,
}));
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("codec", ["vp09", "mp4v"])
def test_events_page_lists_filters_and_opens_a_clip(codec, browser, colours, tmp_path):
    """VP9 plays in the page; MPEG-4 Part 2, which browsers cannot play, is offered as a download."""
    video = colour_video(tmp_path / "v.avi", [(GREY, 20), (RED, 15), (GREY, 20), (GREEN, 15), (GREY, 600)])
    rule = {"name": "any", "min_probability": 0.8, "min_frames": 3, "end_after_s": 0.5}
    app = events_app(colours, video, tmp_path / "data", rules=[rule],
                     clip={"enabled": True, "pre_s": 0.5, "post_s": 0.5, "codec": codec})
    with running(app) as url:
        assert wait_for(lambda: len(ended(url)) == 2, timeout=30)
        signin = httpx.get(f"{url}/view/events")
        assert signin.status_code == 401 and "<form" in signin.text  # the sign-in form, not raw JSON
        browser.get(f"{url}/?token={TOKEN}")  # traded for the session cookie the events page shares
        assert "token" not in browser.current_url
        browser.get(f"{url}/view/events")
        wait = WebDriverWait(browser, 40)
        wait.until(lambda d: len(d.execute_script(CARDS_JS)) == 2)
        wait.until(lambda d: all(c["thumb"] for c in d.execute_script(CARDS_JS)))
        assert [c["tag"] for c in browser.execute_script(CARDS_JS)] == ["green", "red"]  # newest first

        browser.execute_script("const t = document.getElementById('tag'); t.value = 'red';"
                               "t.dispatchEvent(new Event('change'));")
        wait.until(lambda d: [c["tag"] for c in d.execute_script(CARDS_JS)] == ["red"])

        browser.find_element("css selector", "#events .event").click()
        red = ended(url)[-1]
        if codec == "mp4v":
            link = wait.until(lambda d: d.find_elements("id", "download"))[0]
            assert link.get_attribute("href").endswith(red["clip"])
            assert httpx.get(url + red["clip"], headers=AUTH).content[4:8] == b"ftyp"
            return
        wait.until(lambda d: d.execute_script(
            "const v = document.querySelector('#viewer video'); return !!v && v.readyState >= 2 && v.videoWidth > 0"))
        size = browser.execute_script("const v = document.querySelector('#viewer video');"
                                      "return [v.videoWidth, v.videoHeight, v.duration]")
        assert size[:2] == [320, 240] and size[2] > 1.0


def test_the_live_page_links_to_the_events_page():
    from importlib import resources

    html = resources.files("edge_runtime.server").joinpath("live.html").read_text()
    assert 'id="events-link" href="view/events"' in html

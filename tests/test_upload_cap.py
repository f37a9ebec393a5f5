"""server.max_upload_bytes on every route that takes an image, at its boundary, with a
value other than the default: a real server on loopback, the demo model."""

from __future__ import annotations

import httpx
import pytest

from edge_runtime.model.predictor import Predictor
from tests.conftest import DEMO
from tests.server_util import make_app, running

COFFEE = (DEMO / "samples" / "coffee.jpg").read_bytes()
CAP = len(COFFEE) + 1000  # not the 4 MB default
ROUTES = ["/image", "/image/nostore", "/shelf/classify/iterations/Iteration1/image",
          "/customvision/v3.0/prediction/p1/classify/iterations/Iteration1/image",
          "/customvision/v3.1/prediction/p1/classify/iterations/Iteration1/image/nostore",
          "/shelf/detect/iterations/Iteration1/image/nostore"]


def padded(size: int) -> bytes:
    """The photo with bytes after its end-of-image marker: still a JPEG, exactly `size` long."""
    return COFFEE + b"\0" * (size - len(COFFEE))


@pytest.fixture(scope="module")
def server():
    with running(make_app(Predictor.load(DEMO), server={"max_upload_bytes": CAP})) as url:
        yield url


@pytest.mark.parametrize("route", ROUTES)
def test_a_raw_body_of_exactly_the_cap_is_taken_and_one_byte_more_is_413(server, route):
    with httpx.Client(base_url=server, timeout=30) as client:
        at = client.post(route, content=padded(CAP), headers={"Content-Type": "application/octet-stream"})
        assert at.status_code == 200, at.text
        assert at.json()["predictions"][0]["tagName"] == "espresso"
        over = client.post(route, content=padded(CAP + 1), headers={"Content-Type": "application/octet-stream"})
        assert over.status_code == 413, over.text
        assert str(CAP) in over.json()["message"] or "large" in over.json()["message"].lower()


def test_a_chunked_body_without_a_length_is_counted_too(server):
    def chunks(total: int):
        data = padded(total)
        for i in range(0, total, 4096):
            yield data[i:i + 4096]

    with httpx.Client(base_url=server, timeout=30) as client:
        assert client.post("/image", content=chunks(CAP)).status_code == 200
        assert client.post("/image", content=chunks(CAP + 1)).status_code == 413


@pytest.mark.parametrize("route", [ROUTES[0], ROUTES[3]])
def test_a_multipart_upload_is_capped_on_the_whole_body(server, route):
    with httpx.Client(base_url=server, timeout=30) as client:
        small = client.post(route, files={"imageData": ("c.jpg", COFFEE, "image/jpeg")})
        assert small.status_code == 200, small.text
        big = client.post(route, files={"imageData": ("c.jpg", padded(CAP + 1), "image/jpeg")})
        assert big.status_code == 413, big.text


def test_the_server_still_serves_after_refusals(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        for _ in range(3):
            assert client.post("/image", content=padded(CAP * 3)).status_code == 413
        assert client.post("/image", content=COFFEE).status_code == 200

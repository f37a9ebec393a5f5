"""The one token comparison, behind every way a token arrives: the bearer header, the
Prediction-Key header of the cloud SDKs, the sign-in form. A real server on loopback."""

from __future__ import annotations

import hmac

import httpx
import pytest

from edge_runtime.model.predictor import Predictor
from edge_runtime.server import auth
from edge_runtime.server.auth import Auth
from tests.conftest import DEMO
from tests.server_util import make_app, running

TOKEN = "the-one-token-0123456789"
WRONG = ["", " ", TOKEN[:-1], TOKEN[1:], TOKEN + "x", f" {TOKEN}x", TOKEN.upper(), f"{TOKEN[:8]} {TOKEN[8:]}",
         TOKEN + "\u00e9", "\u0000" + TOKEN]


@pytest.mark.parametrize("supplied", WRONG)
def test_only_the_token_itself_matches(supplied):
    assert not Auth(TOKEN, 3600).token_ok(supplied)


def test_the_token_matches_and_with_no_token_anything_does():
    assert Auth(TOKEN, 3600).token_ok(TOKEN)
    assert Auth(None, 3600).token_ok(None) and Auth(None, 3600).token_ok("whatever")
    assert not Auth(TOKEN, 3600).token_ok(None)


def test_the_comparison_takes_constant_time(monkeypatch):
    calls, real = [], hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    a = Auth(TOKEN, 3600)
    assert not a.token_ok(TOKEN[:3]) and a.token_ok(TOKEN)
    assert len(calls) == 2  # no early return on a short or different token: hmac decides both


@pytest.fixture(scope="module")
def server():
    with running(make_app(Predictor.load(DEMO), token=TOKEN)) as url:
        yield url


COFFEE = (DEMO / "samples" / "coffee.jpg").read_bytes()
CLOUD = "/customvision/v3.1/prediction/p1/classify/iterations/Iteration1/image"


@pytest.mark.parametrize("supplied", [w for w in WRONG if w.strip() == w and w.isascii() and "\0" not in w and w])
def test_every_way_in_refuses_a_near_miss(server, supplied):
    with httpx.Client(base_url=server, timeout=30) as client:
        assert client.get("/model", headers={"Authorization": f"Bearer {supplied}"}).status_code == 401
        assert client.post(CLOUD, content=COFFEE, headers={"Prediction-Key": supplied}).status_code == 401
        assert client.post(CLOUD, content=COFFEE, headers={"Authorization": f"Bearer {supplied}"}).status_code == 401
        form = client.post("/signin", data={"token": supplied, "next": "/"}, follow_redirects=False)
        assert form.status_code == 401 and "edge_runtime_session" not in form.cookies


def test_every_way_in_takes_the_token(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        assert client.get("/model", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.post(CLOUD, content=COFFEE, headers={"Prediction-Key": TOKEN}).status_code == 200
        assert client.post(CLOUD, content=COFFEE, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        form = client.post("/signin", data={"token": TOKEN, "next": "/"}, follow_redirects=False)
        assert form.status_code == 303 and "edge_runtime_session" in form.cookies
        assert client.get("/model").status_code == 200  # the session cookie it set

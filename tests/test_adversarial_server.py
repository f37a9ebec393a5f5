"""The server's request bodies, sessions, Host and Origin checks and settings files against
hostile input, for real: a uvicorn server on loopback (in this process, or `edge-runtime
serve` as a process where memory is measured) and the real CLI in a subprocess.

- Bodies: no route reads a byte of a body before the token is checked, and none reads past
  its cap, whether the body declares its length or comes chunked without one. A raw socket
  sends the headers and only part of a body: the answer must come while the rest is unsent.
- Sessions: a signed cookie of any shape but the one the server issues is a 401, not a 500.
- Host and Origin: an HTTP/1.0 request without a Host header is checked all the same.
- Settings files: a --config or token file that is a device, a FIFO, a folder or too big is
  one line from the CLI, without hanging.

Slow cases are marked `adversarial`.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute

from edge_runtime.config import Settings, load_settings, resolve_token
from edge_runtime.errors import ConfigError
from edge_runtime.model.predictor import Predictor
from edge_runtime.paths import CONFIG_FILE_BYTES, SECRET_FILE_BYTES
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from edge_runtime.server.auth import SESSION_COOKIE, SIGNIN_FORM_LIMIT, Auth, require_token
from edge_runtime.server.body import BEFORE_AUTH
from tests.conftest import DEMO
from tests.server_util import answer, free_port, running, serve_process

COFFEE = (DEMO / "samples" / "coffee.jpg").read_bytes()
TOKEN = "adversarial-server-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
MiB = 1024 * 1024
UPLOAD_CAP = 256 * 1024  # server.max_upload_bytes in these tests: small, so oversize bodies are cheap
HUGE = 100 * MiB  # what the hostile requests declare
CLOUD = "/customvision/v3.1/prediction/p/classify/iterations/it"
OPEN_ROUTES = {"/healthz", "/readyz", "/docs/assets/{name}"}  # answer without the token, read no body
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def predictor(exports: dict[str, Path]) -> Predictor:
    return Predictor.load(exports["modern"])


def make_app(predictor: Predictor, token: str | None = TOKEN, **server: Any) -> tuple[FastAPI, Settings]:
    settings = load_settings(env={}, overrides={"server": {"max_upload_bytes": UPLOAD_CAP, **server}})
    env = {"EDGE_RUNTIME_TOKEN": token} if token else {}
    return create_app(build_services(settings, predictor=predictor, env=env)), settings


@pytest.fixture(scope="module")
def protected(predictor) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A server with a token and /url on, and every (method, route template) it has."""
    app, settings = make_app(predictor, url={"enabled": True, "allow_hosts": ["127.0.0.1:9"]})
    with running(app, settings) as url:
        yield url, sorted(every_route(app.routes))


def every_route(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of each route, through included routers as FastAPI keeps them."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield from ((method, prefix + route.path) for method in route.methods or ())
        elif (included := getattr(route, "original_router", None)) is not None:
            context = getattr(route, "include_context", None)
            yield from every_route(included.routes, prefix + (getattr(context, "prefix", "") or ""))


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "p", template)


# --- raw HTTP: send the head and part of a body, and wait for the answer ----------------------


def head(method: str, path: str, headers: dict[str, str], version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(data: bytes, size: int = 16 * 1024) -> bytes:
    """`data` as chunks, without the last (empty) chunk: the body is still open."""
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size))


def declared(method: str, path: str, size: int, **headers: str) -> bytes:
    """A request that declares a `size`-byte body and sends only its first 64 KB."""
    return head(method, path, {"Host": "127.0.0.1", "Content-Length": str(size), **headers}) + b"\0" * 65536


def open_chunked(method: str, path: str, size: int, **headers: str) -> bytes:
    """A chunked request whose first `size` bytes are sent and whose end never comes."""
    return head(method, path, {"Host": "127.0.0.1", "Transfer-Encoding": "chunked", **headers}) + chunked(b"\0" * size)


def expected_without_token(template: str) -> set[int]:
    if template in OPEN_ROUTES:
        return {200, 404, 503}
    if template == "/signin":
        return {413}  # the one body read before a token: the form that carries it, within its cap
    return {401}


# --- 1. no body is read before the token, and none past its cap ------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_every_route_answers_without_the_token_before_reading_its_body(protected, framing):
    """Every route the app has (so a route added later is covered too), with a 100 MB body of
    which 64 KB is sent: the answer comes at once, a 401 wherever a token is needed."""
    url, routes = protected
    wrong = []
    for method, template in routes:
        path = concrete(template)
        request = declared(method, path, HUGE) if framing == "content-length" else open_chunked(method, path, 65536)
        status, _ = answer(url, request, seconds=3)
        if status not in expected_without_token(template):
            wrong.append(f"{method} {template}: {status}")
    assert not wrong, wrong
    assert any("/url" in t for _, t in routes) and any(t.startswith("/customvision/") for _, t in routes)


def body_routes(routes: list[tuple[str, str]]) -> list[str]:
    """The prediction routes, which read a body (the cloud's detect ones refuse a classifier first)."""
    return [t for m, t in routes if m == "POST" and t != "/signin" and not t.startswith("/api/models/")
            and not (t.startswith("/customvision/") and "/detect/" in t)]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversize_bodies_with_the_token_are_413_at_the_cap(protected, framing):
    """A declared length over the cap is refused before the body; a chunked body when the
    bytes pass the cap, while the client is still sending."""
    url, routes = protected
    wrong = []
    for template in body_routes(routes):
        path = concrete(template)
        if framing == "content-length":
            request = declared("POST", path, HUGE, **BEARER)
        else:
            request = open_chunked("POST", path, UPLOAD_CAP + 128 * 1024, **BEARER)
        status, data = answer(url, request)
        if status != 413 or b"\n" in data.partition(b"\r\n\r\n")[2]:
            wrong.append(f"{template}: {status}")
    assert len(body_routes(routes)) >= 20 and not wrong, wrong
    # the same routes still take what fits
    assert len(COFFEE) < UPLOAD_CAP
    assert httpx.post(f"{url}/image", content=COFFEE, headers=BEARER).status_code == 200
    refused = httpx.post(f"{url}/url", json={"url": "http://127.0.0.1:9/x.jpg"}, headers=BEARER, timeout=10)
    assert refused.status_code == 502  # read, parsed and fetched (nothing listens on port 9)


def test_url_bodies_have_a_small_cap_of_their_own(protected):
    url, _ = protected
    for path in ("/url", f"{CLOUD}/url", "/p/classify/iterations/it/url/nostore"):
        big = httpx.post(url + path, content=b'{"url": "' + b"a" * (2 * UPLOAD_CAP) + b'"}', headers=BEARER)
        assert big.status_code == 413, (path, big.text)
        status, _ = answer(url, open_chunked("POST", path, 64 * 1024, **BEARER))
        assert status == 413, path
        for junk in (b"not json", b"[]", b'{"url": 1}', b'{"nope": "x"}', b"\xff\xfe"):
            r = httpx.post(url + path, content=junk, headers={**BEARER, "Content-Type": "application/json"})
            assert r.status_code == 400 and "\n" not in r.json()["message"], (path, junk, r.text)


def test_url_is_off_by_default_and_reads_no_body_then(predictor):
    app, settings = make_app(predictor)
    with running(app, settings) as url:
        for path in ("/url", f"{CLOUD}/url/nostore", "/p/detect/iterations/it/url"):
            status, _ = answer(url, declared("POST", path, HUGE, **BEARER))
            assert status == 403, path
            status, _ = answer(url, declared("POST", path, HUGE))
            assert status == 401, path


def test_the_guard_holds_for_a_route_that_reads_its_body_its_own_way(predictor):
    """A route that lets FastAPI parse its body (which happens before its dependencies run),
    or reads it whole with request.body(), still cannot read before the token or past the cap."""
    app, settings = make_app(predictor)

    async def parsed(payload: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(payload)}

    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.add_api_route("/test/parsed", parsed, methods=["POST"], dependencies=[Depends(require_token)])
    app.add_api_route("/test/raw", raw, methods=["POST"], dependencies=[Depends(require_token)])
    with running(app, settings) as url:
        for headers in ({}, BEARER):  # parsed ahead of the token check: refused even with the token
            status, data = answer(url, declared("POST", "/test/parsed", HUGE, **headers))
            assert status == 401 and BEFORE_AUTH.encode() in data, data[:300]
            r = httpx.post(f"{url}/test/parsed", json={"a": 1}, headers=headers)
            assert r.status_code == 401 and r.json()["message"] == BEFORE_AUTH
        assert answer(url, declared("POST", "/test/raw", HUGE))[0] == 401
        assert answer(url, declared("POST", "/test/raw", HUGE, **BEARER))[0] == 413
        assert answer(url, open_chunked("POST", "/test/raw", UPLOAD_CAP + 128 * 1024, **BEARER))[0] == 413
        assert httpx.post(f"{url}/test/raw", content=b"x" * 1000, headers=BEARER).json() == {"bytes": 1000}


def test_the_signin_form_keeps_its_own_small_cap(protected):
    url, _ = protected
    status, _ = answer(url, declared("POST", "/signin", HUGE, **{"Content-Type": "application/x-www-form-urlencoded"}))
    assert status == 413
    status, _ = answer(url, open_chunked("POST", "/signin", SIGNIN_FORM_LIMIT + 1))
    assert status == 413
    over = httpx.post(f"{url}/signin", content=b"token=" + b"a" * SIGNIN_FORM_LIMIT,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert over.status_code == 413
    padded = f"next=/docs&token={TOKEN}&pad=".encode()
    fits = padded + b"x" * (SIGNIN_FORM_LIMIT - len(padded))
    ok = httpx.post(f"{url}/signin", content=fits, headers={"Content-Type": "application/x-www-form-urlencoded"},
                    follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/docs" and SESSION_COOKIE in ok.headers["set-cookie"]


def _stream(size: int) -> Iterator[bytes]:
    chunk = b"\0" * MiB
    for _ in range(size // MiB):
        yield chunk


@pytest.mark.adversarial
def test_huge_bodies_do_not_grow_the_server(exports, tmp_path):
    """`edge-runtime serve` as a process, its peak RSS from /proc: 64 MB bodies, chunked and
    with a Content-Length, to every kind of body-reading route, without the token (401, or
    413 from the sign-in form) and with it (413): the server's memory stays flat."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    size = 64 * MiB
    paths = ["/url", f"{CLOUD}/url", "/p/classify/iterations/it/url/nostore", "/image", f"{CLOUD}/image",
             "/p/detect/iterations/it/image", "/signin"]
    with serve_process(exports["modern"], tmp_path, EDGE_RUNTIME_TOKEN_FILE=str(token_file)) as server:
        before = server.peak_rss_mb()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for path in paths:
                for headers in ({}, {"Content-Length": str(size)}):
                    r = client.post(path, content=_stream(size), headers=headers)
                    assert r.status_code == (413 if path == "/signin" else 401), (path, headers, r.text)
            for path in ("/image", f"{CLOUD}/image"):
                for headers in ({}, {"Content-Length": str(size)}):
                    r = client.post(path, content=_stream(size), headers={**BEARER, **headers})
                    assert r.status_code == 413, (path, headers, r.text)
            assert client.post("/image", content=COFFEE, headers=BEARER).status_code == 200
        grown = server.peak_rss_mb() - before
    assert grown < 40, f"peak RSS grew {grown:.0f} MB"


# --- 3. malformed session cookies ------------------------------------------------------------


def forge(payload: str) -> str:
    """A cookie signed with the server's own key, as only the token's holder could make."""
    return f"{payload}.{Auth(TOKEN, 3600)._sign(payload)}"


def test_malformed_session_cookies_are_401_never_500(protected):
    url, _ = protected
    future = int(time.time()) + 600
    signed = [
        "9" * 5000 + ".nonce",  # an int() of over 4300 digits raises
        "1" * 50 + ".nonce",  # a session lasting past the end of time
        "²³.nonce",  # digits to str.isdigit(), not to int()
        "-5.nonce", "+99999999999.nonce", "inf.nonce", "nan.nonce", "1e999.nonce", "0x7fffffff.nonce",
        f" {future}.nonce", f"{future} .nonce", f"{future}\t.nonce", "",
        f"{future}", f"{future}.a.b", f"{future}..", f".{future}.nonce",  # wrong field counts
        f"{future}.non\u00e9ce", f"{future}.n%ff", f"{future}.n\u00ff",
    ]
    cookies = [forge(p) for p in signed] + [
        "", ".", "..", "...", "a.b.c", f"{future}.nonce.", f"{future}.nonce." + "z" * 64, "9" * 8000,
        forge(f"{future}.nonce").upper(), forge(f"{future}.nonce") + "00",
    ]
    raw = [c.encode("latin-1") for c in cookies]  # the server reads header bytes as latin-1
    raw += [b"\xff\xfe\xfd", b"1\x80.\xc3\x28." + b"0" * 64, forge(f"{future}.nonce").encode() + b"\xff"]
    wrong = []
    for value in raw:
        request = head("GET", "/model", {"Host": "127.0.0.1"})[:-2] + f"Cookie: {SESSION_COOKIE}=".encode()
        status, _ = answer(url, request + value + b"\r\n\r\n")
        if status != 401:
            wrong.append((value[:40], status))
    assert not wrong, wrong
    good = Auth(TOKEN, 3600).issue()  # the shape the server issues still works
    assert httpx.get(f"{url}/model", cookies={SESSION_COOKIE: good}).status_code == 200


def test_session_checks_never_raise():
    auth = Auth(TOKEN, 3600, clock=lambda: 1000.0)
    for payload in ("9" * 5000 + ".n", "²³.n", "١٢٣٤.n", "-1.n", "inf.n", "2000.n.x", "2000", "2000.n\n"):
        assert auth.session_ok(forge(payload)) is False
    assert auth.session_ok(Auth(TOKEN, 3600, clock=lambda: 1000.0).issue()) is True


# --- 4. Host and Origin on requests without a Host header ------------------------------------


def test_a_request_without_a_host_header_is_still_checked(predictor):
    app, settings = make_app(predictor, token=None)
    with running(app, settings) as url:
        port = url.rsplit(":", 1)[1]
        for version in ("HTTP/1.0", "HTTP/1.1"):
            for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port}"):
                request = head("POST", "/image", {"Origin": origin, "Content-Length": str(len(COFFEE))}, version)
                status, data = answer(url, request + COFFEE)
                assert status in ((403,) if version == "HTTP/1.0" else (400, 403)), (version, origin, data[:200])
            status, _ = answer(url, head("GET", "/model", {}, version))  # no Host: not one of this server's names
            assert status in ((403,) if version == "HTTP/1.0" else (400, 403)), version
        status, _ = answer(url, head("GET", "/healthz", {}, "HTTP/1.0"))
        assert status == 200  # probes answer whatever Host they send, or none
        status, _ = answer(url, head("POST", "/image", {"Host": f"127.0.0.1:{port}",
                                                        "Content-Length": str(len(COFFEE))}, "HTTP/1.0") + COFFEE)
        assert status == 200  # HTTP/1.0 with a Host works


def test_malformed_origins_are_refused_not_a_crash(predictor):
    app, settings = make_app(predictor, token=None)
    with running(app, settings) as url:
        port = url.rsplit(":", 1)[1]
        for origin in ("http://[", "http://[::1", f"http://127.0.0.1:{port}]", "http://\u00e9", "", " ", "//"):
            request = head("GET", "/model", {"Host": f"127.0.0.1:{port}", "Origin": origin})
            status, data = answer(url, request.decode("latin-1").encode("utf-8"))
            assert status == 403, (origin, data[:300])


def test_a_network_bind_without_a_host_header_still_checks_origin(predictor):
    app, settings = make_app(predictor, host="0.0.0.0")  # any Host name; the token protects
    with running(app, settings) as url:
        request = head("GET", "/model", {"Origin": "http://evil.example", **BEARER}, "HTTP/1.0")
        assert answer(url, request)[0] == 403
        assert answer(url, head("GET", "/model", BEARER, "HTTP/1.0"))[0] == 200  # a program, no Origin


# --- 5. settings files -----------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_") or k.endswith("CACHE_DIR")}
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**full_env, **(env or {})}, cwd=ROOT)


def one_line_failure(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and lines[0].startswith("edge-runtime: "), proc.stderr
    return lines[0]


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of file a setting must not name, and the words its refusal gives."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# x\n" * (CONFIG_FILE_BYTES // 4 + 1))
    return {"/dev/zero": (Path("/dev/zero"), "not a regular file"), "fifo": (fifo, "not a regular file"),
            "folder": (folder, "not a regular file"), "big": (big, "larger than"),
            "missing": (tmp_path / "nope.yaml", "No such file")}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "folder", "big", "missing"])
def test_config_and_token_files_that_are_not_regular_files_are_one_line_errors(bad_files, kind):
    path, words = bad_files[kind]
    with pytest.raises(ConfigError, match=words) as err:
        load_settings(path, env={})
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    settings = load_settings(env={}, overrides={"server": {"token_file": str(path)}})
    with pytest.raises(ConfigError, match=words) as err:
        resolve_token(settings, env={})
    assert "\n" not in str(err.value) and str(err.value).startswith("token file ")
    if kind == "big":  # a token file has its own, smaller cap
        small = path.with_name("token")
        small.write_text("t" * (SECRET_FILE_BYTES + 1))
        with pytest.raises(ConfigError, match="larger than the 4096-byte limit"):
            resolve_token(load_settings(env={}, overrides={"server": {"token_file": str(small)}}), env={})


@pytest.mark.adversarial
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "folder", "big"])
def test_serve_refuses_such_files_in_one_line(bad_files, kind):
    path, words = bad_files[kind]
    port = str(free_port())
    for args, env in ((("serve", "--config", str(path), "--port", port), {}),
                      (("serve", "--token-file", str(path), "--port", port), {}),
                      (("serve", "--port", port), {"EDGE_RUNTIME_TOKEN_FILE": str(path)})):
        line = one_line_failure(_cli(*args, env=env))
        assert words in line and str(path) in line, (args, line)


def test_a_symlink_to_a_regular_file_is_read(tmp_path, caplog):
    target = tmp_path / "real.yaml"
    target.write_text("server:\n  port: 9123\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    assert load_settings(link, env={}).server.port == 9123
    secret = tmp_path / "..data" / "token"  # the shape of a Kubernetes secret mount
    secret.parent.mkdir()
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    mounted = tmp_path / "token"
    mounted.symlink_to(secret)
    with caplog.at_level(logging.WARNING):
        assert resolve_token(load_settings(env={}), env={"EDGE_RUNTIME_TOKEN_FILE": str(mounted)}) == TOKEN
    assert not caplog.records
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ConfigError, match="loop") as err:
        load_settings(tmp_path / "loop", env={})
    assert "\n" not in str(err.value)


def test_a_world_readable_token_file_is_warned_about_by_name_only(tmp_path, caplog):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert resolve_token(load_settings(env={}), env={"EDGE_RUNTIME_TOKEN_FILE": str(token_file)}) == TOKEN
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(token_file) in warnings[0] and "chmod o-r" in warnings[0]
    assert TOKEN not in warnings[0] and "\n" not in warnings[0]
    token_file.chmod(0o600)
    caplog.clear()
    resolve_token(load_settings(env={}), env={"EDGE_RUNTIME_TOKEN_FILE": str(token_file)})
    assert not caplog.records


@pytest.mark.timeout(120)
def test_the_cli_reads_a_symlinked_config_and_warns_of_a_readable_token_file(tmp_path):
    target = tmp_path / "real.yaml"
    target.write_text("server:\n  prot: 1\n")  # a typo: its error proves the file was read
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    line = one_line_failure(_cli("serve", "--config", str(link)))
    assert "prot" in line
    short = tmp_path / "token"
    short.write_text("short")
    short.chmod(0o644)
    proc = _cli("serve", "--token-file", str(short), "--port", str(free_port()))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 2, proc.stderr
    assert "can be read by every user" in lines[0] and "short" not in lines[0]  # named, never shown
    assert lines[1].startswith("edge-runtime: ") and "too short" in lines[1]

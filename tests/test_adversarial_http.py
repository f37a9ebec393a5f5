"""The HTTP server against hostile clients, for real: slow and partial requests, forged log
lines, hostile methods, slow and probing /url targets, tokens in the wrong places, DNS
rebinding and cross-site requests.

The connection-level cases start `edge-runtime serve` as a process on a free loopback port
(with a small open-file limit, a private TMPDIR and its log in a file); the others run the
app under uvicorn in this process. Slow cases are marked `adversarial`.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import importlib.util
import logging
import re
import resource
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from edge_runtime.config import load_settings
from edge_runtime.model.predictor import Predictor
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from edge_runtime.server.auth import SESSION_COOKIE, Auth
from edge_runtime.server.connections import FD_RESERVE
from edge_runtime.service import logs
from tests.conftest import DEMO, wait_for
from tests.server_util import free_port, healthz_ms, running, serve_process

COFFEE = (DEMO / "samples" / "coffee.jpg").read_bytes()
TOKEN = "adversarial-test-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: |\| )")


@pytest.fixture(scope="module")
def model(exports) -> Path:  # type: ignore[no-untyped-def]
    return exports["modern"]


@pytest.fixture(scope="module")
def predictor(model) -> Predictor:  # type: ignore[no-untyped-def]
    return Predictor.load(model)


def make_app(predictor, token=None, **server):  # type: ignore[no-untyped-def]
    settings = load_settings(env={}, overrides={"server": server})
    return create_app(build_services(settings, predictor=predictor, env={"EDGE_RUNTIME_TOKEN": token} if token else {}))


def one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    message = r.json()["message"]
    assert message and "\n" not in message and "Traceback" not in message
    return str(message)


# --- the server as a process -------------------------------------------------------------------


def open_slow(url: str, count: int, request: bytes) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    out = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(request)
        out.append(s)
    return out


def closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 503")


@pytest.fixture()
def many_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.adversarial
def test_slow_clients_cannot_take_the_server_down(model, tmp_path, many_files):
    """200 slowloris connections and 200 partial bodies, under `ulimit -n 256`: /healthz keeps
    answering, the slow ones are closed, the log stays small and memory flat."""
    with serve_process(model, tmp_path, nofile=256, EDGE_RUNTIME_SERVER__HEADER_TIMEOUT_S="3",
                       EDGE_RUNTIME_SERVER__BODY_TIMEOUT_S="3") as server:
        rss_before = server.peak_rss_mb()
        slow = open_slow(server.url, 200, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        partial = open_slow(server.url, 200, b"POST /image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                             b"Content-Length: 4194304\r\n\r\n" + b"\xff" * 1024)
        answers = []
        for _ in range(10):
            for s in slow[:50]:  # keep trickling: a per-read timeout would never fire
                with suppress(OSError):
                    s.send(b"a")
            answers.append(healthz_ms(server.url, timeout=3))
            time.sleep(0.5)
        assert all(a is not None for a in answers), answers
        # every slow connection ends: by the cap (oldest first) or by its deadline
        assert wait_for(lambda: all(closed_by_server(s) for s in slow + partial), timeout=10)
        for s in slow + partial:
            s.close()
        assert httpx.post(f"{server.url}/image", content=COFFEE, timeout=10).status_code == 200
        assert server.peak_rss_mb() - rss_before < 100
        log = server.log_text()
    assert "max_connections lowered" in log  # the cap was fitted to the 256 descriptors
    assert len(log) < 100_000 and not re.search(r"^\| ", log, re.M), log[:3000]  # no tracebacks
    assert log.count("out of system resource") <= 6 and " 500 " not in log
    left = sum(f.stat().st_size for f in (tmp_path / "tmp").rglob("*") if f.is_file())
    assert left < 64 * 1024  # no partial upload was spooled to disk


@pytest.mark.adversarial
def test_log_lines_cannot_be_forged_and_repeats_are_held_back(model, tmp_path):
    with serve_process(model, tmp_path) as server:
        for path in ("/x%0a2026-01-01 00:00:00,000 ERROR edge_runtime: FORGED", "/y%0d%0aFORGED%1b[31m",
                     "/z%e2%80%a8FORGED", "/%00FORGED%7f"):
            r = httpx.get(server.url + path)
            one_line_error(r, 404)
        for _ in range(30):  # 30 malformed requests: uvicorn warns about each
            with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
                assert s.recv(100).startswith(b"HTTP/1.1 400")
        log = server.log_text()
    for line in log.splitlines():
        assert LOG_LINE.match(line), line
        if "FORGED" in line:
            assert "ERROR edge_runtime: FORGED" not in line.split(": ", 1)[0]
            assert "\\x" in line or "\\u2028" in line
    assert log.count("FORGED") == 4
    assert log.count("Invalid HTTP request") <= 6


def test_formatter_escapes_messages_and_marks_traceback_lines():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "path %s", ("/a\nFORGED\u2028\x1b",), None)
    try:
        raise ValueError("bad\nFORGED line")
    except ValueError:
        record.exc_info = sys.exc_info()
    text = logs.SafeFormatter(logs.FORMAT).format(record)
    first, *rest = text.splitlines()
    assert "\\x0aFORGED\\u2028\\x1b" in first
    assert rest and all(line.startswith("| ") for line in rest)
    assert any("FORGED line" in line for line in rest)


def test_repeated_warnings_are_held_back_then_counted():
    now = [0.0]
    limiter = logs.RepeatLimiter(burst=5, window_s=60, clock=lambda: now[0])

    def record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("asyncio", level, __file__, 1, msg, None, None)

    passed = [limiter.filter(record("socket.accept() out of system resource")) for _ in range(1000)]
    assert sum(passed) == 6  # five, then one saying more are held back
    assert limiter.filter(record("something else"))
    assert all(limiter.filter(record("GET / 200", logging.INFO)) for _ in range(100))  # requests are not limited
    now[0] = 61
    summary = record("socket.accept() out of system resource")
    assert limiter.filter(summary) and "994 more like it" in summary.getMessage()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _answer_within(s: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bytes, float]:
    """Send `trickle` a byte every 0.2 s until the server answers or closes; return what it said."""
    began = time.monotonic()
    s.settimeout(0.2)
    i = 0
    while time.monotonic() - began < seconds:
        if i < len(trickle):
            with suppress(OSError):
                s.send(trickle[i:i + 1])
            i += 1
        try:
            return s.recv(4096), time.monotonic() - began
        except TimeoutError:
            continue
    return b"(still open)", time.monotonic() - began


def test_deadlines_cover_headers_keep_alive_requests_and_bodies(predictor):
    settings = load_settings(env={}, overrides={"server": {"header_timeout_s": 1, "body_timeout_s": 1}})
    app = create_app(build_services(settings, predictor=predictor, env={}))
    with running(app, settings) as url:
        with _connect(url) as s:  # request line and headers, a byte at a time
            answer, took = _answer_within(s, 5, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * 50)
            assert answer.startswith(b"HTTP/1.1 408") and took < 2.5, (answer, took)
        with _connect(url) as s:  # the second request on a kept-alive connection
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while not first.endswith(b'{"status":"ok"}'):
                first += s.recv(4096)
            assert first.startswith(b"HTTP/1.1 200")
            answer, took = _answer_within(s, 5, b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 50)
            assert answer.startswith(b"HTTP/1.1 408") and took < 2.5, (answer, took)
        with _connect(url) as s:  # a body that trickles in
            s.sendall(b"POST /image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
            answer, took = _answer_within(s, 5, b"\xff" * 100)
            assert answer.startswith(b"HTTP/1.1 408") and took < 2.5, (answer, took)
        with _connect(url) as s:  # an answered request whose body keeps trickling
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
            answer, took = _answer_within(s, 5, b"x" * 100)
            while not answer.endswith(b'{"status":"ok"}'):
                answer += s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            rest, took = _answer_within(s, 5, b"x" * 100)
            assert rest == b"" and took < 2.5, (rest, took)
        assert httpx.post(f"{url}/image", content=COFFEE).status_code == 200


def test_connection_cap_closes_the_oldest_waiting_connection(predictor):
    settings = load_settings(env={}, overrides={"server": {"max_connections": 8, "header_timeout_s": 60}})
    app = create_app(build_services(settings, predictor=predictor, env={}))
    with running(app, settings) as url:
        idle = [_connect(url) for _ in range(20)]
        for s in idle:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(5):
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert wait_for(lambda: sum(closed_by_server(s) for s in idle) >= 12, timeout=5)
        assert not closed_by_server(idle[-1])  # the newest ones stay
        for s in idle:
            s.close()


# --- metrics -----------------------------------------------------------------------------------


def test_hostile_methods_and_paths_cannot_grow_the_metrics(predictor):
    with running(make_app(predictor)) as url, httpx.Client(base_url=url) as client:
        for i in range(300):
            method = ["X" * (i % 50 + 1) + str(i), f"get{i}", "PROPFIND", f"M{i}"][i % 4]
            client.request(method, ["/image", f"/nope/{i}", "/healthz", f"/{i}%0a"][i % 4])
        client.post("/image", content=b"junk")
        text = client.get("/metrics").text
    series = [line for line in text.splitlines() if line.startswith("edge_http_requests_total")]
    assert len(series) <= 12, series
    methods = {re.search(r'method="([^"]*)"', line).group(1) for line in series}  # type: ignore[union-attr]
    routes = {re.search(r'route="([^"]*)"', line).group(1) for line in series}  # type: ignore[union-attr]
    assert methods <= {"GET", "POST", "other"} and "other" in methods
    assert routes <= {"/image", "/healthz", "unmatched", "/metrics"} and "unmatched" in routes


# --- POST /url ---------------------------------------------------------------------------------


def _probe_script() -> ModuleType:
    """scripts/probe_http.py, which runs the same hostile upstream against any checkout."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "probe_http.py"
    spec = importlib.util.spec_from_file_location("probe_http", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _probe_script().Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()


def _closed_port() -> int:
    return free_port()


class _Silent(socketserver.BaseRequestHandler):
    def handle(self) -> None:  # accepts and never answers
        time.sleep(10)


@pytest.mark.adversarial
def test_url_fetches_have_one_deadline_and_cannot_starve_uploads(predictor, upstream):
    app = make_app(predictor, url={"enabled": True, "allow_hosts": [upstream], "timeout_s": 2, "max_concurrent": 2})
    with running(app) as url:
        began = time.monotonic()
        r = httpx.post(f"{url}/url", json={"url": f"http://{upstream}/slow.jpg"}, timeout=30)
        assert one_line_error(r, 502) and time.monotonic() - began < 3.5  # not 30 reads of 1 s
        with concurrent.futures.ThreadPoolExecutor(45) as pool:
            slow = [pool.submit(httpx.post, f"{url}/url", json={"url": f"http://{upstream}/slow.jpg"}, timeout=30)
                    for _ in range(45)]
            fetcher = app.state.url_fetcher
            assert wait_for(lambda: fetcher.in_flight == fetcher.workers, timeout=10)  # both slots held
            began = time.monotonic()
            upload = httpx.post(f"{url}/image", content=COFFEE, timeout=30)
            upload_s = time.monotonic() - began
            statuses = sorted(f.result().status_code for f in slow)
        assert upload.status_code == 200 and upload_s < 5.0, upload_s  # not the 30 s a slow fetch holds
        assert set(statuses) <= {502, 503} and statuses.count(503) >= 40, statuses
        assert wait_for(lambda: httpx.post(f"{url}/url", json={"url": f"http://{upstream}/coffee.jpg"},
                                           timeout=10).status_code == 200, timeout=5)


def test_url_failures_look_alike_and_bad_urls_are_400(predictor, upstream):
    silent = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Silent)
    silent.daemon_threads = True
    threading.Thread(target=silent.serve_forever, daemon=True).start()
    closed = _closed_port()
    silent_host = f"127.0.0.1:{silent.server_address[1]}"
    allow = [upstream, f"127.0.0.1:{closed}", silent_host, "localhost"]
    app = make_app(predictor, url={"enabled": True, "allow_hosts": allow, "timeout_s": 1})
    try:
        with running(app) as url:
            def post(target: str) -> httpx.Response:
                return httpx.post(f"{url}/url", json={"url": target}, timeout=10)

            assert post(f"http://{upstream}/coffee.jpg").status_code == 200
            failures = [f"http://{upstream}/missing", f"http://{upstream}/error", f"http://{upstream}/moved",
                        f"http://{upstream}/garbage", f"https://{upstream}/coffee.jpg", f"http://127.0.0.1:{closed}/",
                        f"http://{silent_host}/", "http://localhost/x.jpg"]
            texts = {one_line_error(post(f), 502) for f in failures}
            assert len(texts) == 1, texts  # the same words whatever is (or is not) listening
            other_port = upstream.rsplit(":", 1)[0] + ":1"
            for refused in (f"http://{other_port}/", f"http://127.0.0.2:{upstream.rsplit(':', 1)[1]}/",
                            "http://localhost:8080/", "https://localhost:80/", "http://169.254.169.254/"):
                one_line_error(post(refused), 403)
            for bad in (f"http://{upstream}/a\nb", f"http://{upstream}/\r\nX: y", f"http://{upstream}\\@evil/",
                        f"http://evil\\@{upstream}/", f"http://{upstream}/a b", f"http://{upstream}/\x00",
                        f"http://{upstream}/\x7f", "http://[::1/x", f"http://{upstream}:99999/",
                        "http://127.0.0.1:abc/", f"http://user:pw@{upstream}/coffee.jpg", "ftp://x/",
                        "file:///etc/passwd", "gopher://127.0.0.1/", "http://", "//x/", f"http://{upstream}/é",
                        "http://" + "a" * 3000):
                one_line_error(post(bad), 400)
            assert httpx.post(f"{url}/image", content=COFFEE).status_code == 200  # still serving
    finally:
        silent.shutdown()


# --- authentication ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def protected(predictor) -> Iterator[str]:
    with running(make_app(predictor, token=TOKEN)) as url:
        yield url


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_docs_are_protected_and_work_offline(protected):
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(protected + path).status_code == 401, path
        assert TOKEN not in httpx.get(protected + path).text
    spec = httpx.get(f"{protected}/openapi.json", headers=BEARER).json()
    assert "/image" in spec["paths"]
    for path in ("/docs", "/redoc"):
        page = httpx.get(protected + path, headers=BEARER)
        assert page.status_code == 200
        assert "http://" not in page.text and "https://" not in page.text, path  # nothing from the internet
        for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text) + re.findall(
                r"url: '(/[^']+)'", page.text):
            r = httpx.get(protected + asset, headers=BEARER)
            assert r.status_code == 200 and len(r.content) > 1000, asset
    assert httpx.get(f"{protected}/docs/assets/..%2f..%2fauth.py").status_code == 404


def test_the_token_in_the_query_works_only_on_the_live_page(protected):
    for path in ("/model", "/metrics", "/cameras", "/events", "/snapshot.jpg", "/stream.mjpg", "/openapi.json",
                 "/predictions/latest"):
        assert httpx.get(f"{protected}{path}?token={TOKEN}").status_code == 401, path
    assert httpx.post(f"{protected}/image?token={TOKEN}", content=COFFEE).status_code == 401
    for empty in ("", " ", "%20", "x"):
        r = httpx.get(f"{protected}/?token={empty}", follow_redirects=False)
        assert r.status_code == 401 and "<form" in r.text and "set-cookie" not in r.headers


def test_sign_in_form_trades_the_token_for_a_signed_expiring_session(protected):
    page = httpx.get(f"{protected}/")
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert 'action="/signin"' in page.text and 'name="token"' in page.text and "http" not in page.text
    with httpx.Client(base_url=protected) as browser:
        wrong = browser.post("/signin", data={"token": "nope", "next": "/"})
        assert wrong.status_code == 401 and "not right" in wrong.text and SESSION_COOKIE not in browser.cookies
        ok = browser.post("/signin", data={"token": TOKEN, "next": "/docs"}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/docs"
        cookie = ok.headers["set-cookie"]
        assert TOKEN not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Max-Age=86400" in cookie and "Secure" not in cookie  # plain http: no Secure flag
        assert browser.get("/docs").status_code == 200 and browser.get("/model").status_code == 200
        with browser.stream("GET", "/events") as events:  # EventSource from the page: the cookie is enough
            assert events.status_code == 200
        session = browser.cookies[SESSION_COOKIE]
    for tampered in (session[:-1] + ("0" if session[-1] != "0" else "1"), "9" + session, "", TOKEN):
        assert httpx.get(f"{protected}/model", cookies={SESSION_COOKIE: tampered}).status_code == 401
    expired = Auth(TOKEN, session_ttl_s=60, clock=lambda: time.time() - 3600).issue()
    assert httpx.get(f"{protected}/model", cookies={SESSION_COOKIE: expired}).status_code == 401
    other_token = Auth("another-token-0123456789", session_ttl_s=3600).issue()
    assert httpx.get(f"{protected}/model", cookies={SESSION_COOKIE: other_token}).status_code == 401
    away = httpx.post(f"{protected}/signin", data={"token": TOKEN, "next": "https://evil.example/"})
    assert away.status_code == 303 and away.headers["location"] == "/"
    over_https = httpx.get(f"{protected}/?token={TOKEN}", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in over_https.headers["set-cookie"]  # a TLS proxy on this host said https


def test_sessions_expire():
    now = [1000.0]
    auth = Auth(TOKEN, session_ttl_s=60, clock=lambda: now[0])
    session = auth.issue()
    assert auth.session_ok(session)
    now[0] += 61
    assert not auth.session_ok(session)


# --- DNS rebinding and cross-site requests -----------------------------------------------------


def test_loopback_server_answers_only_to_loopback_names_and_its_own_origin(predictor):
    with running(make_app(predictor)) as url:
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            assert httpx.get(f"{url}/model", headers={"Host": host}).status_code == 200, host
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "", "[::1"):
            for method, path in (("GET", "/model"), ("GET", "/"), ("POST", "/image"), ("GET", "/docs")):
                body = COFFEE if method == "POST" else None
                r = httpx.request(method, url + path, headers={"Host": host}, content=body)
                one_line_error(r, 403)
        assert httpx.get(f"{url}/healthz", headers={"Host": "evil.example"}).status_code == 200  # probes
        for origin in ("http://evil.example", "null", f"http://localhost.evil.example:{port}",
                       f"http://127.0.0.1:{int(port) + 1}", "file://", f"ftp://127.0.0.1:{port}"):
            r = httpx.post(f"{url}/image", content=COFFEE, headers={"Origin": origin})
            one_line_error(r, 403)
        same = httpx.post(f"{url}/image", content=COFFEE, headers={"Origin": f"http://127.0.0.1:{port}"})
        assert same.status_code == 200


def test_allowed_hosts_apply_beyond_loopback(predictor):
    app = make_app(predictor, token=TOKEN, host="0.0.0.0", allowed_hosts=["cam.example", "10.0.0.8"])
    with running(app) as url:
        assert httpx.get(f"{url}/model", headers={**BEARER, "Host": "cam.example:8080"}).status_code == 200
        assert httpx.get(f"{url}/model", headers={**BEARER, "Host": "10.0.0.8"}).status_code == 200
        one_line_error(httpx.get(f"{url}/model", headers={**BEARER, "Host": "evil.example"}), 403)


def test_systemd_unit_allows_the_connection_cap():
    unit = (ROOT / "deploy" / "systemd" / "edge-runtime.service").read_text()
    nofile = int(re.search(r"^LimitNOFILE=(\d+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert nofile >= load_settings(env={}).server.max_connections + FD_RESERVE


def test_accept_running_out_of_descriptors_is_one_line_without_a_traceback():
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.SafeFormatter(logs.FORMAT))
    handler.addFilter(logs.ExpectedFailures())
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.error("socket.accept() out of system resource\nsocket: <fd=6>", exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("\n") == 1 and "Too many open files" in text and "Traceback" not in text

"""Try hostile clients against `edge-runtime serve` and print, per class, the cases tried and
how many misbehaved (the figures in docs/security.md).

    PYTHONPATH=. python scripts/probe_http.py          # this checkout
    PYTHONPATH=/path/to/older/checkout python scripts/probe_http.py

It starts the server itself (on free loopback ports, the built-in demo model, no camera,
`ulimit -n 256`) and talks to it only over HTTP, so it runs against any revision.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

DEMO = Path(__file__).resolve().parent.parent / "edge_runtime" / "demo"
COFFEE = (DEMO / "samples" / "coffee.jpg").read_bytes()
TOKEN = "probe-token-0123456789abcdef"
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
rows: list[tuple[str, int, int]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(log: Path, *args: str, nofile: int = 256, **env: str) -> Iterator[str]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
    full_env.update(env)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", str(DEMO), "--port", str(port),
                                 *args], env=full_env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while healthz(url) is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def healthz(url: str, timeout: float = 3.0) -> float | None:
    try:
        return 0.0 if httpx.get(f"{url}/healthz", timeout=timeout).status_code == 200 else None
    except httpx.HTTPError:
        return None


def record(name: str, tried: int, bad: int) -> None:
    rows.append((name, tried, bad))
    print(f"  {name}: {bad} of {tried} misbehaved", file=sys.stderr, flush=True)


def probe_log_forging(url: str, log: Path) -> None:
    paths = ["/x%0a2026-01-01 00:00:00,000 ERROR edge_runtime: FORGED", "/y%0d%0aFORGED%1b[31m",
             "/z%e2%80%a8FORGED", "/%00FORGED%7f"]
    for path in paths:
        httpx.get(url + path)
    time.sleep(0.5)
    text = log.read_text(errors="replace")
    bad = sum(1 for line in re.split(r"\n|\r|\u2028", text) if line.startswith(("FORGED", "2026-01-01")))
    bad += sum(1 for c in ("\x1b", "\x00", "\x7f") if c in text)
    record("log forging (control characters in the path)", len(paths), min(bad, len(paths)))


def probe_metrics(url: str, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=url) as client:
        for i in range(300):
            method = ["X" * (i % 50 + 1) + str(i), f"get{i}", "PROPFIND", f"M{i}"][i % 4]
            client.request(method, ["/image", f"/nope/{i}", "/healthz", f"/{i}"][i % 4])
        text = client.get("/metrics", headers=headers).text
    series = [line for line in text.splitlines() if line.startswith("edge_http_requests_total")]
    bad = sum(1 for line in series if re.search(r'method="([^"]*)"', line).group(1) not in KNOWN_METHODS | {"other"})
    record("hostile methods in Prometheus series", 300, bad)


class Upstream(http.server.BaseHTTPRequestHandler):
    """A hostile upstream for POST /url (tests/test_adversarial_http.py uses it too)."""

    def do_GET(self) -> None:
        if self.path == "/coffee.jpg":
            self._send(200, COFFEE)
        elif self.path == "/slow.jpg":  # one byte a second, for as long as the client waits
            self.send_response(200)
            self.send_header("Content-Length", str(len(COFFEE)))
            self.end_headers()
            for b in COFFEE[:30]:
                try:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(1)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
        elif self.path == "/error":
            self._send(500, b"oops")
        elif self.path == "/garbage":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def probe_url(url: str, upstream: str, closed: int, silent: str, timeout_s: float) -> None:
    def post(target: str) -> httpx.Response:
        return httpx.post(f"{url}/url", json={"url": target}, timeout=40)

    def waited(target: str) -> float:
        began = time.monotonic()
        with suppress(httpx.HTTPError):
            post(target)
        return time.monotonic() - began

    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # one at a time per worker, as the issue saw it
        alone = list(pool.map(waited, [f"http://{upstream}/slow.jpg"] * 2))
    print(f"  a slow upstream alone: answered after {max(alone):.1f} s", file=sys.stderr)
    record(f"/url: a slow upstream (1 byte/s) answered after the {timeout_s:.0f} s deadline (+1 s)", len(alone),
           sum(w > timeout_s + 1 for w in alone))
    with concurrent.futures.ThreadPoolExecutor(45) as pool:
        slow = [pool.submit(waited, f"http://{upstream}/slow.jpg") for _ in range(45)]
        time.sleep(0.5)
        t0 = time.monotonic()
        upload_ok = httpx.post(f"{url}/image", content=COFFEE, timeout=60).status_code == 200
        upload_s = time.monotonic() - t0
        [f.result() for f in slow]
    print(f"  upload behind 45 slow fetches: {upload_s:.1f} s", file=sys.stderr)
    record("/url: an upload behind 45 slow upstreams waits over 5 s", 1, int(not upload_ok or upload_s > 5))
    failures = [f"http://{upstream}/missing", f"http://{upstream}/error", f"http://{upstream}/moved",
                f"http://{upstream}/garbage", f"https://{upstream}/coffee.jpg", f"http://127.0.0.1:{closed}/",
                f"http://{silent}/", "http://nonexistent.invalid/"]
    answers = [post(f) for f in failures]
    texts = Counter(f"{r.status_code} {r.text}" for r in answers if r.status_code != 403)
    common = texts.most_common(1)[0][1] if texts else 0
    record("/url: upstream failures that are told apart", len(failures), sum(texts.values()) - common)
    bad_urls = [f"http://{upstream}/a\nb", f"http://{upstream}/\r\nX: y", f"http://{upstream}\\@evil/",
                f"http://evil\\@{upstream}/", f"http://{upstream}/a b", f"http://{upstream}/\x00",
                f"http://{upstream}/\x7f", "http://[::1/x", f"http://{upstream}:99999/", "http://127.0.0.1:abc/",
                f"http://user:pw@{upstream}/coffee.jpg", "ftp://x/", "file:///etc/passwd", "gopher://127.0.0.1/",
                "http://", "//x/", f"http://{upstream}/é", "http://" + "a" * 3000]
    record("/url: malformed URLs not answered 400", len(bad_urls), sum(post(u).status_code != 400 for u in bad_urls))
    other = [f"http://127.0.0.1:{closed}/", f"http://127.0.0.1:{int(upstream.rsplit(':', 1)[1]) + 1}/",
             f"http://localhost:{upstream.rsplit(':', 1)[1]}/", "http://127.0.0.1:22/", "http://127.0.0.1:6379/"]
    record("/url: ports outside the allow-list reached", len(other), sum(post(u).status_code != 403 for u in other))


def probe_tokens(tmp: Path) -> None:
    values = ["", "   ", "\t\n", "abc123", "0123456789 abcdef"]
    bad = 0
    for value in values:
        for how in ("env", "file"):
            env = {"EDGE_RUNTIME_TOKEN": value}
            if how == "file":
                (tmp / "token").write_text(value)
                env = {"EDGE_RUNTIME_TOKEN_FILE": str(tmp / "token")}
            try:
                with serve(tmp / "token.log", **env):
                    bad += 1  # it started
            except RuntimeError as exc:
                bad += "Traceback" in str(exc)
    record("unusable tokens accepted (or refused with a traceback)", 2 * len(values), bad)


def probe_protected(url: str) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    routes = ["/model", "/metrics", "/cameras", "/snapshot.jpg", "/predictions/latest", "/openapi.json", "/docs",
              "/redoc", "/events"]
    bad = 0
    for route in routes:
        with httpx.stream("GET", f"{url}{route}?token={TOKEN}", timeout=5) as r:
            bad += r.status_code == 200
    for empty in ("", " ", "%20", "x"):
        bad += httpx.get(f"{url}/?token={empty}", follow_redirects=False).status_code in (200, 303)
    record("?token= accepted beyond the live page's first visit", len(routes) + 4, bad)
    docs = sum(httpx.get(url + r).status_code == 200 for r in ("/openapi.json", "/docs", "/redoc"))
    page = httpx.get(f"{url}/docs", headers=bearer).text
    docs += "https://" in page or "http://" in page
    record("docs open without the token, or loading from a CDN", 4, docs)
    login = httpx.get(f"{url}/?token={TOKEN}", follow_redirects=False, headers={"X-Forwarded-Proto": "https"})
    cookie = login.headers.get("set-cookie", "")
    name, _, value = cookie.partition(";")[0].partition("=")
    tampered = httpx.get(f"{url}/model", cookies={name: value[:-1] + ("0" if value[-1:] != "0" else "1")})
    bad = int(TOKEN in cookie) + int("Secure" not in cookie) + int(tampered.status_code == 200)
    bad += int(httpx.get(url + "/", follow_redirects=False).headers.get("content-type", "").startswith("application"))
    record("sessions: raw token, no Secure over https, tampering accepted, no sign-in form", 4, bad)


def probe_browsers(url: str) -> None:
    port = url.rsplit(":", 1)[1]
    bad, tried = 0, 0
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "[::1"):
        for method, path in (("GET", "/model"), ("GET", "/predictions/latest"), ("POST", "/image"), ("GET", "/")):
            r = httpx.request(method, url + path, headers={"Host": host}, content=COFFEE if method == "POST" else None)
            tried, bad = tried + 1, bad + (r.status_code == 200)
    for origin in ("http://evil.example", "null", f"http://localhost.evil.example:{port}",
                   f"http://127.0.0.1:{int(port) + 1}", "file://", f"ftp://127.0.0.1:{port}"):
        r = httpx.post(f"{url}/image", content=COFFEE, headers={"Origin": origin})
        tried, bad = tried + 1, bad + (r.status_code == 200)
    record("DNS rebinding (foreign Host) and foreign Origin answered", tried, bad)


def probe_slow_clients(url: str, log: Path) -> None:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    size_before = log.stat().st_size
    socks = []
    for i in range(400):
        with suppress(OSError):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " if i % 2 else
                      b"POST /image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4194304\r\n\r\n" + b"\xff" * 1024)
            socks.append(s)
    missed = 0
    for _ in range(10):
        for s in socks[1::2][:50]:
            with suppress(OSError):
                s.send(b"a")
        missed += healthz(url) is None
        time.sleep(0.5)
    time.sleep(8)  # past the 10 s header deadline
    still_open = 0
    for s in socks[1::2]:
        s.setblocking(False)
        try:
            answer = s.recv(4096)
            still_open += not (answer == b"" or answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503")))
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        s.close()
    for s in socks[::2]:
        s.close()
    grown = log.stat().st_size - size_before
    record("slow clients under ulimit -n 256: missed health checks, slowloris open after 13 s, log over 1 MB",
           10 + len(socks[1::2]) + 1, missed + still_open + int(grown > 1 << 20))


def start_thread(server: Callable[[], None]) -> None:
    threading.Thread(target=server, daemon=True).start()


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    start_thread(upstream.serve_forever)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (in the kernel) and never answers
    up = f"127.0.0.1:{upstream.server_port}"
    timeout_s = 2.0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log = tmp / "open.log"
        allow = f"[127.0.0.1, '{up}']"  # a bare host (older revisions) and host:port
        with serve(log, EDGE_RUNTIME_SERVER__URL__ENABLED="true", EDGE_RUNTIME_SERVER__URL__ALLOW_HOSTS=allow,
                   EDGE_RUNTIME_SERVER__URL__TIMEOUT_S=str(timeout_s)) as url:
            probe_log_forging(url, log)
            probe_metrics(url, {})
            probe_url(url, up, free_port(), f"127.0.0.1:{silent.getsockname()[1]}", timeout_s)
            probe_browsers(url)
            probe_slow_clients(url, log)
        with serve(tmp / "protected.log", EDGE_RUNTIME_TOKEN=TOKEN) as url:
            probe_protected(url)
        probe_tokens(tmp)
    print("| class | cases tried | misbehaved |\n|---|---|---|")
    for name, tried, bad in rows:
        print(f"| {name} | {tried} | {bad} |")


if __name__ == "__main__":
    main()

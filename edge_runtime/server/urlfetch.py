"""Fetching the image for POST /url, without letting an upstream hurt the server.

- Only `server.url.allow_hosts` entries (host or host:port; a bare host means the scheme's
  own port), over http or https, with no user name, backslash, blank or control character
  in the URL: anything else is a 400 or 403 before a socket opens.
- One deadline for the whole fetch (connect, headers and body): every socket read waits at
  most what is left of it, so an upstream sending a byte a second ends on time.
- Its own small pool of threads, and a 503 when they are all busy, so slow upstreams never
  hold the threads that POST /image needs.
- Every failure of the upstream (refused, reset, slow, a redirect, an error status) gives
  the same 502 text, which tells a prober nothing about what is listening where.

    target = check_url("http://cam.local:8080/a.jpg", ["cam.local:8080"])
    data = await fetcher.get(target, limit=4 << 20, timeout_s=5)
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import Request

from .errors import BadRequest, Busy, Forbidden, PayloadTooLarge, UpstreamError

FAILED = "could not fetch an image from that URL"
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


def check_url(url: str, allow_hosts: list[str]) -> Target:
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(not 0x20 < ord(c) < 0x7F for c in url):
        raise BadRequest("url must be printable ASCII, without spaces or control characters")
    if "\\" in url:
        raise BadRequest("url must not contain a backslash")
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise BadRequest("url has a malformed host or port") from exc
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        raise BadRequest("url must be an http:// or https:// address")
    if "@" in parts.netloc:
        raise BadRequest("url must not carry a user name or password")
    if not host:
        raise BadRequest("url has no host")
    port = port or DEFAULT_PORTS[parts.scheme]
    name = f"[{host}]" if ":" in host else host
    allowed = set(allow_hosts)
    if f"{name}:{port}" not in allowed and not (name in allowed and port == DEFAULT_PORTS[parts.scheme]):
        raise Forbidden(f"{name}:{port} is not in server.url.allow_hosts")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path)


def fetch(target: Target, limit: int, deadline: float) -> bytes:
    """GET the target (no redirects) and return at most `limit` bytes, all by `deadline`."""
    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=left(),
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=left())
    try:
        conn.connect()
        sock = conn.sock
        conn.request("GET", target.path, headers={"User-Agent": "edge-runtime", "Accept": "image/*"})
        sock.settimeout(left())
        response = conn.getresponse()
        if response.status != 200:
            raise UpstreamError(FAILED)
        declared = response.getheader("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the image at that URL is over the {limit}-byte limit")
        data = bytearray()
        while True:
            sock.settimeout(left())
            chunk = response.read1(READ_CHUNK)
            if not chunk:
                return bytes(data)
            data += chunk
            if len(data) > limit:
                raise PayloadTooLarge(f"the image at that URL is over the {limit}-byte limit")
    except (OSError, http.client.HTTPException, ValueError) as exc:  # TimeoutError is an OSError
        raise UpstreamError(FAILED) from exc
    finally:
        conn.close()


class UrlFetcher:
    """At most `workers` fetches at once, each in a thread of this pool."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="url-fetch")
        self.in_flight = 0

    async def get(self, target: Target, limit: int, timeout_s: float) -> bytes:
        if self.in_flight >= self.workers:
            raise Busy(f"POST /url is busy ({self.workers} fetches in progress); try again shortly")
        deadline = time.monotonic() + timeout_s
        future = asyncio.get_running_loop().run_in_executor(self.pool, fetch, target, limit, deadline)
        self.in_flight += 1  # freed when the thread ends, not when the client stops waiting
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s + 0.5)
        except asyncio.TimeoutError as exc:
            raise UpstreamError(FAILED) from exc

    def _done(self, future: asyncio.Future[bytes]) -> None:
        self.in_flight -= 1
        if not future.cancelled():
            future.exception()  # retrieved, so an abandoned fetch's error is not logged as unhandled

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def url_fetcher(request: Request) -> UrlFetcher:
    fetcher: UrlFetcher = request.app.state.url_fetcher
    return fetcher

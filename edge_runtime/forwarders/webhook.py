"""HTTP webhook: one JSON POST per item; any 2xx answer acknowledges it.

Headers:
    Content-Type: application/json
    Idempotency-Key: <id>:<type>        e.g. 01J...:event-end (an event's start and end share the id)
    X-Signature: sha256=<hex>           HMAC-SHA256 of the raw body with the secret from secret_file

A receiver checks the signature over the bytes it received, before parsing them:

    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    hmac.compare_digest(expected, request.headers["X-Signature"])

Anything but 2xx (and any connection error or timeout) is retried with backoff until the
item's time-to-live runs out, so a receiver that fails for a while loses nothing.

Each delivery has one deadline, `timeout_s`, for all of it: connecting, the TLS handshake,
sending, and the whole answer. requests' own timeout bounds each read, so a receiver that
sends a byte every few seconds would hold a delivery for ever; past the deadline the
connection's socket is shut down instead, and the delivery fails and is retried. Of the
answer, at most REPLY_BYTES are read (for the error message); the rest is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error

from .. import __version__
from ..errors import ConfigError, first_line
from . import payload
from .base import DeliveryError, read_secret
from .protocols import Item

if TYPE_CHECKING:
    from .config import WebhookForwarderConfig

SIGNATURE_HEADER = "X-Signature"
REPLY_BYTES = 4096  # of an answer, read for the error message; a 200 MB answer costs no more
EXCERPT_CHARS = 200  # of that, shown in the error
CUT_EVERY_S = 0.05  # past the deadline, how often the socket is shut down again (it may not exist yet)
_running = threading.local()  # .deadline: the Deadline of the request this thread is making


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _shut(conn: HTTPConnection | None) -> None:
    """Shut the connection's socket down, which wakes a read blocked on it in another thread.
    socket.socket's own method, so that a TLS socket is cut without a TLS goodbye."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """One deadline at a time over one transport's requests, kept by a thread of its own:
    past it, the socket the request runs on is shut down, again every CUT_EVERY_S until
    the request gives up (during a connect there is no socket yet to shut)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._until: float | None = None
        self._conn: HTTPConnection | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self.expired = False

    @contextlib.contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        with self._cond:
            self._until, self._conn, self.expired = time.monotonic() + seconds, None, False
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="webhook-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()
        _running.deadline = self
        try:
            yield
        finally:
            _running.deadline = None
            with self._cond:
                self._until = self._conn = None

    def track(self, conn: HTTPConnection) -> None:
        """The connection the current request runs on (new, or reused from the pool)."""
        with self._cond:
            if self._until is not None:
                self._conn = conn

    def close(self) -> None:
        """Cut the request in flight now, and end the thread."""
        with self._cond:
            self._closed = True
            _shut(self._conn)
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                left = None if self._until is None else self._until - time.monotonic()
                if left is None or left > 0:
                    self._cond.wait(left)
                    continue
                self.expired = True
                _shut(self._conn)
                self._cond.wait(CUT_EVERY_S)


def _track(conn: HTTPConnection) -> None:
    deadline = getattr(_running, "deadline", None)
    if deadline is not None:
        deadline.track(conn)


class _Connection(HTTPConnection):
    def connect(self) -> None:
        _track(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track(self)  # a connection reused from the pool does not connect again
        super().request(*args, **kwargs)


class _TlsConnection(HTTPSConnection):
    def connect(self) -> None:
        _track(self)  # self.sock is the plain socket during the handshake: a stuck one is cut too
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track(self)
        super().request(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


POOLS = {"http": _Pool, "https": _TlsPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections that tell the thread's Deadline which socket a
    request runs on (through an HTTP proxy too; a SOCKS proxy keeps only the per-read timeout)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = POOLS
        return manager


def excerpt(head: bytes) -> str:
    """The first line of an answer's body, printable and short, for an error message."""
    text = head.decode("utf-8", "replace").strip()
    line = "".join(c if c.isprintable() else "?" for c in (text.splitlines() or [""])[0])
    return line if len(line) <= EXCERPT_CHARS else line[:EXCERPT_CHARS] + "..."


def check_ca_file(path: str, key: str) -> str:
    """The ca_file as requests takes it, once ssl has loaded it (a folder of hashed certs too)."""
    try:
        if Path(path).is_dir():
            ssl.create_default_context(capath=path)
        else:
            ssl.create_default_context(cafile=path)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"forwarder {key}: ca_file {path}: {getattr(exc, 'strerror', None) or first_line(exc)}") \
            from None
    return path


class WebhookTransport:
    def __init__(self, url: str, secret: bytes | None, timeout_s: float, session: requests.Session,
                 verify: str | bool = True) -> None:
        self.url, self.secret, self.timeout_s = url, secret, timeout_s
        self.session, self.verify = session, verify
        for prefix in ("http://", "https://"):
            session.mount(prefix, DeadlineAdapter())
        self.deadline = Deadline()
        self._closed = False
        parts = urllib.parse.urlsplit(url)  # errors name the receiver without any credentials in its URL
        self.where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    @classmethod
    def from_config(cls, cfg: WebhookForwarderConfig, device: str, connect: bool = True) -> WebhookTransport:
        """Reads the secret and checks ca_file (ConfigError, one line); it connects per delivery."""
        secret = read_secret(cfg.secret_file, "webhook secret_file").encode() if cfg.secret_file else None
        verify: str | bool = check_ca_file(str(cfg.ca_file), cfg.key) if cfg.ca_file else True
        session = requests.Session()
        session.headers["User-Agent"] = f"edge-runtime/{__version__} ({device})"
        return cls(cfg.url, secret, cfg.timeout_s, session, verify)

    def send(self, item: Item, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": payload.idempotency_key(item),
                   "Accept-Encoding": "identity"}  # what little of an answer is read, is read as sent
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        if self._closed:
            raise DeliveryError(f"POST {self.where}: the forwarder is stopping")
        try:
            with self.deadline.within(self.timeout_s):
                status, head = self._post(body, headers)
        except (requests.RequestException, Urllib3Error, OSError) as exc:
            if self.deadline.expired or self._closed:
                raise DeliveryError(self._late()) from exc
            raise DeliveryError(f"POST {self.where}: {type(exc).__name__}") from exc
        if self.deadline.expired:  # the socket was cut under a read that then ended quietly
            raise DeliveryError(self._late())
        if not 200 <= status < 300:
            why = excerpt(head)
            raise DeliveryError(f"POST {self.where}: HTTP {status}{f': {why}' if why else ''}")

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, at most REPLY_BYTES of the body). A connection whose answer was read whole
        goes back to the pool; one with more to come is closed with it unread."""
        response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout_s,
                                     verify=self.verify, allow_redirects=False, stream=True)
        try:
            head = response.raw.read(REPLY_BYTES, decode_content=False)
        except BaseException:
            response.close()
            raise
        if response.raw.closed:
            response.raw.release_conn()
        else:
            response.close()
        return response.status_code, head

    def _late(self) -> str:
        if self._closed:
            return f"POST {self.where}: cut short, the forwarder is stopping"
        return f"POST {self.where}: no complete answer within {self.timeout_s:g} s"

    def close(self) -> None:
        self._closed = True
        self.deadline.close()
        self.session.close()

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
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from typing import TYPE_CHECKING

import requests

from .. import __version__
from . import payload
from .base import DeliveryError, Item, read_secret

if TYPE_CHECKING:
    from .config import WebhookForwarderConfig

SIGNATURE_HEADER = "X-Signature"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookTransport:
    def __init__(self, url: str, secret: bytes | None, timeout_s: float, session: requests.Session,
                 verify: str | bool = True) -> None:
        self.url, self.secret, self.timeout_s = url, secret, timeout_s
        self.session, self.verify = session, verify
        parts = urllib.parse.urlsplit(url)  # errors name the receiver without any credentials in its URL
        self.where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    @classmethod
    def from_config(cls, cfg: WebhookForwarderConfig, device: str) -> WebhookTransport:
        secret = read_secret(cfg.secret_file, "webhook secret_file").encode() if cfg.secret_file else None
        verify: str | bool = str(cfg.ca_file) if cfg.ca_file else True
        session = requests.Session()
        session.headers["User-Agent"] = f"edge-runtime/{__version__} ({device})"
        return cls(cfg.url, secret, cfg.timeout_s, session, verify)

    def send(self, item: Item, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": payload.idempotency_key(item)}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        try:
            response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout_s,
                                         verify=self.verify, allow_redirects=False)
        except requests.RequestException as exc:
            raise DeliveryError(f"POST {self.where}: {type(exc).__name__}") from exc
        response.close()
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"POST {self.where}: HTTP {response.status_code}")

    def close(self) -> None:
        self.session.close()

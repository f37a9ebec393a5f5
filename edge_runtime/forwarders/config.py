"""Forwarder settings: a list, each entry picked by its `type` (mqtt or webhook).

Secrets never sit in the config: passwords and signing secrets are read from files.

    forwarders:
      - type: mqtt
        name: uplink
        host: broker.example.com
        port: 8883
        username: kiosk-7
        password_file: /etc/edge-runtime/mqtt-password
        tls: {ca_file: /etc/edge-runtime/ca.pem}
        ttl_s: 86400
      - type: webhook
        url: https://example.com/hooks/edge
        secret_file: /etc/edge-runtime/webhook-secret
        thumbnail: true
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..settings_base import Strict, require_unique

NAME = r"^[A-Za-z0-9_.-]{1,64}$"
DEFAULT_TTL_S = 7 * 86400.0  # also how long the outbox keeps rows while no forwarder is configured


class BackoffConfig(Strict):
    initial_s: float = Field(1.0, gt=0, le=3600, description="first wait after a failed delivery")
    max_s: float = Field(60.0, gt=0, le=86400, description="the wait doubles up to this")
    jitter: float = Field(0.5, ge=0, le=1, description="each wait is shortened by a random fraction up to this")

    @model_validator(mode="after")
    def _ordered(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must not be below initial_s")
        return self


class TlsConfig(Strict):
    ca_file: Path | None = Field(None, description="CA bundle that signed the server; default: the system's")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="the client certificate's private key")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class _Forwarder(Strict):
    name: str = Field("", pattern=r"^$|" + NAME, description="names its cursor and metrics; default: the type")
    ttl_s: float = Field(DEFAULT_TTL_S, gt=0, description="undelivered items older than this are dropped and counted")
    backoff: BackoffConfig = BackoffConfig()
    thumbnail: bool = Field(False, description="add the event's thumbnail as base64 (thumbnailJpeg)")
    results_every_s: float | None = Field(None, gt=0, le=86400,
                                          description="also forward each camera's result at most this often")
    poll_s: float = Field(0.5, gt=0, le=60, description="how often an idle forwarder looks for new items")
    timeout_s: float = Field(10.0, gt=0, le=300, description="one deadline for each delivery: connecting, "
                             "sending and the whole answer (headers, body, PUBACK)")

    @property
    def key(self) -> str:
        return self.name or str(getattr(self, "type", "forwarder"))


class MqttForwarderConfig(_Forwarder):
    type: Literal["mqtt"]
    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("edge-runtime", pattern=r"^[^#+]*$", description="topics are {prefix}/{device}/...")
    client_id: str = Field("", description="default: edge-runtime-{device}-{name}")
    username: str | None = None
    password_file: Path | None = Field(None, description="file holding the password (never in the config)")
    tls: TlsConfig | None = Field(None, description="connect with TLS; {} uses the system's CAs")
    keepalive_s: int = Field(30, ge=5, le=3600)

    @model_validator(mode="after")
    def _password_needs_user(self) -> MqttForwarderConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        return self


class WebhookForwarderConfig(_Forwarder):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://", description="receives one JSON POST per item")
    secret_file: Path | None = Field(None, description="file holding the HMAC-SHA256 key for X-Signature")
    ca_file: Path | None = Field(None, description="CA bundle for https; default: the system's")


ForwarderConfig = Annotated[MqttForwarderConfig | WebhookForwarderConfig, Field(discriminator="type")]


def unique_names(forwarders: list[ForwarderConfig]) -> list[ForwarderConfig]:
    """Each forwarder keeps a cursor under its name, so two may not share one."""
    require_unique((f.key for f in forwarders), "forwarder names", " (set `name`)")
    return forwarders

"""MQTT with paho-mqtt: QoS 1, and an item counts as delivered only once its PUBACK is in.

Topics:
    {prefix}/{device}/{camera}/events    event-start and event-end (see docs/event-payload.schema.json)
    {prefix}/{device}/{camera}/results   results, for a forwarder with results_every_s
    {prefix}/{device}/models/{name}/changes
                                         model changes (docs/model-change.schema.json), retained
                                         but for refusals: a subscriber that joins later still
                                         learns which version of each name the device runs
    {prefix}/{device}/status             "online" / "offline", retained; "offline" is also the
                                         last will, so the broker says it when the link dies

A camera or model name is one topic level, percent-encoded: whatever the store holds, a
'/', '+' or '#' in it can neither add a level nor become a wildcard. (The model topics have
one level more than the camera ones, so a camera named "models" cannot meet them.)

paho's network thread keeps reconnecting on its own; while it is down, `send` fails fast and
the delivery loop backs off. The password comes from password_file, never from the config
or the command line.

`timeout_s` bounds each delivery: the wait for the connection, then for the PUBACK. paho
gives up on a connection only after a keepalive without a byte from the broker, so a broker
that takes the connection and never answers CONNECT (or drips bytes), or never PUBACKs,
would hold it for good; past `timeout_s` the socket is shut down instead, paho connects
again after its backoff, and the message it still holds goes again (QoS 1, marked DUP).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..errors import ConfigError, first_line
from . import payload
from .base import DeliveryError, read_secret
from .protocols import Item

if TYPE_CHECKING:
    from .config import MqttForwarderConfig

log = logging.getLogger(__name__)
ONLINE, OFFLINE = "online", "offline"


def topics(prefix: str, device: str) -> tuple[str, str]:
    """(the status topic, the base every other topic starts with)."""
    base = f"{prefix}/{device}" if prefix else device
    return f"{base}/status", base


def level(text: str) -> str:
    """`text` as one topic level: percent-encoded but for letters, digits and "_.-~", so
    that no '/', '+', '#' (nor a leading '$') gets through; "unknown" when empty."""
    return urllib.parse.quote(text, safe="") or "unknown"


class MqttTransport:
    def __init__(self, client: mqtt.Client, status_topic: str, base: str, timeout_s: float) -> None:
        self.client, self.status_topic, self.base, self.timeout_s = client, status_topic, base, timeout_s
        self.last_refusal = ""
        self._connected = threading.Event()
        self._closed = False
        self._opened_at: float | None = None  # when paho's current socket opened (monotonic)
        self._pending: tuple[int, mqtt.MQTTMessageInfo] | None = None
        client.will_set(status_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close

    @classmethod
    def from_config(cls, cfg: MqttForwarderConfig, device: str, connect: bool = True) -> MqttTransport:
        """Builds the client (reading the password and TLS files: ConfigError, one line) and,
        with `connect`, starts connecting in the background (it never blocks on the network)."""
        if any(c in device for c in "+#/"):
            raise ConfigError(f"forwarder {cfg.key}: events.device {device!r} cannot name an MQTT topic level "
                              "(no '+', '#' or '/')")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id or f"edge-runtime-{device}-{cfg.key}")
        if cfg.username is not None:
            password = read_secret(cfg.password_file, "mqtt password_file") if cfg.password_file else None
            client.username_pw_set(cfg.username, password)
        if cfg.tls is not None:
            t = cfg.tls
            for what, path in (("ca_file", t.ca_file), ("cert_file", t.cert_file), ("key_file", t.key_file)):
                if path is not None and not path.is_file():
                    raise ConfigError(f"forwarder {cfg.key}: tls.{what} {path}: not a file")
            try:
                client.tls_set(ca_certs=str(t.ca_file) if t.ca_file else None,
                               certfile=str(t.cert_file) if t.cert_file else None,
                               keyfile=str(t.key_file) if t.key_file else None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a file that is no PEM
                raise ConfigError(f"forwarder {cfg.key}: tls: {getattr(exc, 'strerror', None) or first_line(exc)}") \
                    from None
        client.reconnect_delay_set(max(1, int(cfg.backoff.initial_s)), max(1, int(cfg.backoff.max_s)))
        client.connect_timeout = min(cfg.timeout_s, client.connect_timeout)
        status, base = topics(cfg.prefix, device)
        transport = cls(client, status, base, cfg.timeout_s)
        if connect:
            client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
            client.loop_start()
        return transport

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if not self.last_refusal:
                log.warning("mqtt %s: broker refused the connection: %s", self.status_topic, reason)
            self.last_refusal = f"broker refused the connection: {reason}"
            return
        self.last_refusal = ""
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._opened_at = time.monotonic()

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._opened_at = None

    def _cut(self) -> None:
        """Shut paho's socket down: its network thread sees the connection lost and connects
        again (after its backoff), resending what it holds unacknowledged."""
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # type: ignore[arg-type]

    def topic(self, item: Item) -> str:
        if item.kind == payload.MODEL_CHANGE:
            return f"{self.base}/models/{level(str(item.payload.get('name') or ''))}/changes"
        kind = "results" if item.kind == "result" else "events"
        return f"{self.base}/{level(str(item.payload.get('camera') or ''))}/{kind}"

    @staticmethod
    def retained(item: Item) -> bool:
        """A model change stays on the broker as the name's latest, unless it was a refusal
        (which changed nothing the device runs)."""
        return item.kind == payload.MODEL_CHANGE and item.payload.get("reason") != "refused"

    def send(self, item: Item, body: bytes) -> None:
        # The same item after a timeout: wait for the message paho still holds (it resends it
        # on reconnect) rather than queueing a second copy.
        if self._pending is None or self._pending[0] != item.seq:
            if not self._connected.wait(self.timeout_s) or self._closed:
                raise DeliveryError(self._not_connected())
            self._pending = (item.seq, self.client.publish(self.topic(item), body, qos=1, retain=self.retained(item)))
        info = self._pending[1]
        try:
            info.wait_for_publish(self.timeout_s)
            published = info.is_published()
        except (RuntimeError, ValueError) as exc:
            self._pending = None
            raise DeliveryError(f"publish failed: {exc}") from exc
        if not published:
            if self._connected.is_set():  # connected, yet no answer: the link or the broker is stuck
                self._cut()
                raise DeliveryError(f"no PUBACK within {self.timeout_s:g} s; connecting again")
            raise DeliveryError(self._not_connected())
        self._pending = None

    def _not_connected(self) -> str:
        """Why there is no connection; one that opened but got no CONNACK in time is cut."""
        if self._closed:
            return "the forwarder is stopping"
        opened = self._opened_at
        if not self._connected.is_set() and opened is not None and time.monotonic() - opened >= self.timeout_s:
            self._cut()
            return f"the broker took the connection but sent no CONNACK within {self.timeout_s:g} s"
        return self.last_refusal or "not connected to the broker"

    def close(self) -> None:
        self._closed = True
        if self._connected.is_set():  # a clean disconnect sends no will: say offline ourselves
            with contextlib.suppress(RuntimeError, ValueError):
                self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True).wait_for_publish(2.0)
        self._connected.set()  # wakes a send waiting for the connection; it sees _closed
        self.client.disconnect()
        self.client.loop_stop()

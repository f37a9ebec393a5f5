"""Store-and-forward: each configured forwarder sends the event store's outbox upstream.

    check(settings)                                 # at start-up: bad settings fail in one line
    running = start_all(settings, store, metrics)   # one thread per forwarder
    running.status()                                # for /readyz: [{"name": ..., "healthy": ...}]
    running.stop(timeout=5.0)

Adding a forwarder is one file with a transport (see base.py), one config model in
config.py and one line in TRANSPORTS. Transports are imported only when configured, so
paho-mqtt is needed only by those who use MQTT.
"""

from __future__ import annotations

import importlib
import socket
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import Backoff, Forwarder
from .protocols import Outbox, Transport

if TYPE_CHECKING:
    from ..config import Settings
    from ..metrics import Metrics
    from .config import ForwarderConfig
    from .metrics import ForwarderCollector

__all__ = ["Forwarder", "Running", "build", "check", "start_all"]

# type -> (module, transport class); the class has from_config(cfg, device, connect=True)
TRANSPORTS = {"mqtt": ("mqtt", "MqttTransport"), "webhook": ("webhook", "WebhookTransport")}


def device_name(settings: Settings) -> str:
    return settings.events.device or socket.gethostname()


def make_transport(cfg: ForwarderConfig, device: str, connect: bool = True) -> Transport:
    """The transport, its secret and certificate files read; with `connect`, linking up."""
    module, cls = TRANSPORTS[cfg.type]
    try:
        transport_cls = getattr(importlib.import_module(f".{module}", __name__), cls)
    except ImportError as exc:
        raise ConfigError(f"forwarder {cfg.key}: type {cfg.type} needs {exc.name}: "
                          "pip install 'edge-runtime[events]'") from None
    return transport_cls.from_config(cfg, device, connect=connect)  # type: ignore[no-any-return]


def check(settings: Settings) -> None:
    """Build every forwarder's transport without touching the network, and close it: a
    missing, empty or unreadable secret or certificate file, or a missing extra, is a
    ConfigError (one line) before the server starts rather than a failed start-up."""
    device = device_name(settings)
    for cfg in settings.forwarders:
        make_transport(cfg, device, connect=False).close()


def build(cfg: ForwarderConfig, outbox: Outbox, device: str) -> Forwarder:
    b = cfg.backoff
    return Forwarder(cfg.key, cfg.type, make_transport(cfg, device), outbox, ttl_s=cfg.ttl_s,
                     backoff=Backoff(b.initial_s, b.max_s, b.jitter), poll_s=cfg.poll_s,
                     thumbnail=cfg.thumbnail, results_every_s=cfg.results_every_s)


class Running:
    """The started forwarders; stop() ends their threads and unregisters their metrics."""

    def __init__(self, forwarders: list[Forwarder], metrics: Metrics | None = None) -> None:
        self.forwarders = forwarders
        self._metrics = metrics
        self._collector: ForwarderCollector | None = None
        if metrics is not None and forwarders:
            from .metrics import ForwarderCollector

            self._collector = ForwarderCollector(forwarders)
            metrics.registry.register(self._collector)

    def status(self) -> list[dict[str, Any]]:
        out = []
        for f in self.forwarders:
            try:
                out.append(f.status())
            except Exception as exc:  # the store is unreadable: still say how the link is doing
                out.append({"name": f.name, "type": f.kind, "healthy": f.healthy, "lastError": str(exc)})
        return out

    @property
    def healthy(self) -> bool:
        return all(f.healthy for f in self.forwarders)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every forwarder, waiting at most `timeout` in all; undelivered items stay queued."""
        for f in self.forwarders:
            f.halt()
        deadline = time.monotonic() + timeout
        for f in self.forwarders:
            f.join(max(0.0, deadline - time.monotonic()))
        if self._collector is not None and self._metrics is not None:
            self._metrics.registry.unregister(self._collector)
            self._collector = None


def start_all(settings: Settings, store: Outbox, metrics: Metrics | None = None) -> Running:
    """Build and start every configured forwarder; ConfigError (one line) if one cannot be built."""
    device = device_name(settings)
    configs = settings.forwarders
    built: list[Forwarder] = []
    try:
        for cfg in configs:
            built.append(build(cfg, store, device))
    except Exception:
        for f in built:
            f.stop(0)
        raise
    for f in built:
        f.start()
    return Running(built, metrics)

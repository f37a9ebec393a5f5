"""Store-and-forward: each configured forwarder sends the event store's outbox upstream.

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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import ConfigError
from .base import Backoff, Forwarder, Outbox, Transport

if TYPE_CHECKING:
    from ..config import Settings
    from ..metrics import Metrics
    from .config import ForwarderConfig

__all__ = ["Forwarder", "Running", "build", "start_all"]

# type -> (module, transport class); the class has from_config(cfg, device)
TRANSPORTS = {"mqtt": ("mqtt", "MqttTransport"), "webhook": ("webhook", "WebhookTransport")}


def device_name(settings: Settings) -> str:
    return settings.events.device or socket.gethostname()


def make_transport(cfg: ForwarderConfig, device: str) -> Transport:
    module, cls = TRANSPORTS[cfg.type]
    try:
        transport_cls = getattr(importlib.import_module(f".{module}", __name__), cls)
    except ImportError as exc:
        raise ConfigError(f"forwarder {cfg.key}: type {cfg.type} needs {exc.name}: "
                          "pip install 'edge-runtime[events]'") from None
    return transport_cls.from_config(cfg, device)  # type: ignore[no-any-return]


def build(cfg: ForwarderConfig, outbox: Outbox, device: str) -> Forwarder:
    b = cfg.backoff
    return Forwarder(cfg.key, cfg.type, make_transport(cfg, device), outbox, ttl_s=cfg.ttl_s,
                     backoff=Backoff(b.initial_s, b.max_s, b.jitter), poll_s=cfg.poll_s,
                     thumbnail=cfg.thumbnail, results_every_s=cfg.results_every_s)


class _Collector(Collector):
    """Reads the forwarders' own counters and the store's queue at scrape time."""

    def __init__(self, forwarders: list[Forwarder]) -> None:
        self.forwarders = forwarders

    def collect(self) -> Iterable[Metric]:
        labels = ["forwarder"]
        depth = GaugeMetricFamily("edge_forwarder_queue_depth", "Outbox items after the forwarder's cursor",
                                  labels=labels)
        age = GaugeMetricFamily("edge_forwarder_oldest_age_seconds", "Age of the oldest undelivered item",
                                labels=labels)
        failing = GaugeMetricFamily("edge_forwarder_failing_seconds", "How long deliveries have been failing (0: ok)",
                                    labels=labels)
        delivered = CounterMetricFamily("edge_forwarder_delivered", "Items acknowledged by the receiver", labels=labels)
        retried = CounterMetricFamily("edge_forwarder_retried", "Failed deliveries, each retried", labels=labels)
        dropped = CounterMetricFamily("edge_forwarder_dropped", "Items dropped undelivered after the time-to-live",
                                      labels=labels)
        for f in self.forwarders:
            try:
                queued, oldest = f.queue()
            except Exception:  # the store is unreadable right now: report the rest
                queued, oldest = 0, 0.0
            depth.add_metric([f.name], queued)
            age.add_metric([f.name], oldest)
            failing.add_metric([f.name], f.failing_for())
            delivered.add_metric([f.name], f.delivered)
            retried.add_metric([f.name], f.retried)
            dropped.add_metric([f.name], f.dropped)
        yield from (depth, age, failing, delivered, retried, dropped)


class Running:
    """The started forwarders; stop() ends their threads and unregisters their metrics."""

    def __init__(self, forwarders: list[Forwarder], metrics: Metrics | None = None) -> None:
        self.forwarders = forwarders
        self._metrics = metrics
        self._collector: _Collector | None = None
        if metrics is not None and forwarders:
            self._collector = _Collector(forwarders)
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

"""Store-and-forward: each configured forwarder sends the event store's outbox upstream.

    plan = Plan(settings.forwarders, device="kiosk-3")   # serve.forwarding(settings) makes it
    check(plan)                                 # at start-up: bad settings fail in one line
    running = start_all(plan, store, registry)  # one thread per forwarder
    running.status()                            # for /readyz: [{"name": ..., "healthy": ...}]
    running.stop(timeout=5.0)
    consumers, max_ttl_s = plan.retention()     # what the store's janitor must keep

Adding a forwarder is one file with a transport (see base.py), one config model in
config.py and one line in TRANSPORTS. Transports are imported only when configured, so
paho-mqtt is needed only by those who use MQTT.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..service.backoff import Backoff
from .base import Forwarder
from .config import DEFAULT_TTL_S
from .protocols import Outbox, Transport

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .config import ForwarderConfig
    from .metrics import ForwarderCollector

__all__ = ["Forwarder", "Plan", "Running", "build", "check", "start_all"]

# type -> (module, transport class); the class has from_config(cfg, device, connect=True)
TRANSPORTS = {"mqtt": ("mqtt", "MqttTransport"), "webhook": ("webhook", "WebhookTransport")}


@dataclass(frozen=True)
class Plan:
    """The configured forwarders and the device name they send."""

    configs: Sequence[ForwarderConfig]
    device: str

    def retention(self) -> tuple[list[str], float]:
        """The store's outbox consumers, and how long a row waits for them at most: the
        longest TTL configured, or with none configured the default TTL, so that a forwarder
        added back within it still gets the rows."""
        ttls = [c.ttl_s for c in self.configs]
        return [c.key for c in self.configs], max(ttls) if ttls else DEFAULT_TTL_S


def make_transport(cfg: ForwarderConfig, device: str, connect: bool = True) -> Transport:
    """The transport, its secret and certificate files read; with `connect`, linking up."""
    module, cls = TRANSPORTS[cfg.type]
    try:
        transport_cls = getattr(importlib.import_module(f".{module}", __name__), cls)
    except ImportError as exc:
        raise ConfigError(f"forwarder {cfg.key}: type {cfg.type} needs {exc.name}: "
                          "pip install 'edge-runtime[events]'") from None
    return transport_cls.from_config(cfg, device, connect=connect)  # type: ignore[no-any-return]


def check(plan: Plan) -> None:
    """Build every forwarder's transport without touching the network, and close it: a
    missing, empty or unreadable secret or certificate file, or a missing extra, is a
    ConfigError (one line) before the server starts rather than a failed start-up."""
    for cfg in plan.configs:
        make_transport(cfg, plan.device, connect=False).close()


def build(cfg: ForwarderConfig, outbox: Outbox, device: str) -> Forwarder:
    b = cfg.backoff
    return Forwarder(cfg.key, cfg.type, make_transport(cfg, device), outbox, ttl_s=cfg.ttl_s,
                     backoff=Backoff(b.initial_s, b.max_s, b.jitter), poll_s=cfg.poll_s,
                     thumbnail=cfg.thumbnail, results_every_s=cfg.results_every_s)


class Running:
    """The started forwarders; stop() ends their threads and unregisters their metrics."""

    def __init__(self, forwarders: list[Forwarder], registry: CollectorRegistry | None = None) -> None:
        self.forwarders = forwarders
        self._registry = registry
        self._collector: ForwarderCollector | None = None
        if registry is not None and forwarders:
            from .metrics import ForwarderCollector

            self._collector = ForwarderCollector(forwarders)
            registry.register(self._collector)

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
        if self._collector is not None and self._registry is not None:
            self._registry.unregister(self._collector)
            self._collector = None


def start_all(plan: Plan, store: Outbox, registry: CollectorRegistry | None = None) -> Running:
    """Build and start every configured forwarder, their figures in `registry`; ConfigError
    (one line) if one cannot be built."""
    built: list[Forwarder] = []
    try:
        for cfg in plan.configs:
            built.append(build(cfg, store, plan.device))
    except Exception:
        for f in built:
            f.stop(0)
        raise
    for f in built:
        f.start()
    return Running(built, registry)

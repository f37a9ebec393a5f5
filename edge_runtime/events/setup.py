"""Opening the store and its janitor from settings (once per process, by serve)."""

from __future__ import annotations

from ..config import Settings
from ..forwarders.config import DEFAULT_TTL_S
from .retention import Janitor
from .store import Budget, EventStore


def store_wanted(settings: Settings) -> bool:
    """Whether anything records into or reads from the store: rules, forwarders or samplers."""
    samples = getattr(settings, "samples", None)
    return bool(settings.events.rules or getattr(settings, "forwarders", None)
                or getattr(samples, "samplers", None))


def budget(settings: Settings) -> Budget:
    s = settings.events.store
    return Budget(max_bytes=int(s.max_mb * (1 << 20)),
                  max_age_s=s.max_age_days * 86400 if s.max_age_days is not None else None,
                  min_free_bytes=int(s.min_free_mb * (1 << 20)))


def open_store(settings: Settings) -> EventStore:
    return EventStore.open(settings.events.store.path, budget(settings))


def janitor(settings: Settings, store: EventStore) -> Janitor:
    """Retention, keeping outbox rows until every configured forwarder passed them or they
    outlived the longest TTL. With no forwarder configured they are kept for the default TTL
    (a week), so that one added back within it still gets them; a forwarder no longer
    configured holds no rows, whatever its old cursor."""
    forwarders = list(getattr(settings, "forwarders", None) or [])
    consumers = [str(getattr(f, "key", "")) for f in forwarders]
    ttls = [float(getattr(f, "ttl_s", DEFAULT_TTL_S)) for f in forwarders]
    return Janitor(store, consumers=consumers, max_ttl_s=max(ttls) if ttls else DEFAULT_TTL_S)

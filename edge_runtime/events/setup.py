"""Opening the store from its settings (once per process, by serve).

    store = open_store(settings.events.store)
"""

from __future__ import annotations

from .config import StoreConfig
from .store import Budget, EventStore


def budget(config: StoreConfig) -> Budget:
    return Budget(max_bytes=int(config.max_mb * (1 << 20)),
                  max_age_s=config.max_age_days * 86400 if config.max_age_days is not None else None,
                  min_free_bytes=int(config.min_free_mb * (1 << 20)))


def open_store(config: StoreConfig) -> EventStore:
    return EventStore.open(config.path, budget(config))

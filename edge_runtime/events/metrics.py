"""The store's and recorder's counters for /metrics, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .store import EventStore


class StoreCollector(Collector):
    def __init__(self, store: EventStore) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        s = self.store.stats
        yield GaugeMetricFamily("edge_events_store_bytes", "Bytes of records and media in the event store",
                                value=self.store.usage_bytes())
        yield GaugeMetricFamily("edge_events_store_budget_bytes", "events.store.max_mb in bytes",
                                value=self.store.budget.max_bytes)
        yield GaugeMetricFamily("edge_events_disk_free_bytes", "Free bytes on the store's disk",
                                value=self.store.free_bytes())
        yield GaugeMetricFamily("edge_events_disk_full", "1 while the store has no room (disk or budget)",
                                value=1.0 if s.disk_full else 0.0)
        for name, help_, value in (
            ("edge_events_started", "Events started", s.started),
            ("edge_events_ended", "Events ended", s.ended),
            ("edge_events_refused", "Writes refused for lack of space", s.refused),
            ("edge_events_dropped_results", "Results the recorder had no time for", s.dropped_results),
            ("edge_events_evicted_media", "Media deleted by retention", s.evicted_media),
            ("edge_events_evicted_records", "Event records deleted by retention", s.evicted_records),
        ):
            yield CounterMetricFamily(name, help_, value=value)
        errors = CounterMetricFamily("edge_events_store_errors", "Failed store operations", labels=["operation"])
        for operation, count in sorted(s.errors.items()):
            errors.add_metric([operation], count)
        yield errors

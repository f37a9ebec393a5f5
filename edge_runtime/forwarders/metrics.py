"""The forwarders' figures for /metrics, read at scrape time (prometheus-client comes with
the server; the settings that import this package do not need it)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .base import Forwarder


class ForwarderCollector(Collector):
    """Reads the forwarders' own counters and the store's queue at scrape time."""

    def __init__(self, forwarders: list[Forwarder]) -> None:
        self.forwarders = forwarders

    def collect(self) -> Iterable[Metric]:
        labels = ["forwarder"]
        depth = GaugeMetricFamily("edge_forwarder_queue_depth", "Outbox items stored after the forwarder's cursor",
                                  labels=labels)
        age = GaugeMetricFamily("edge_forwarder_oldest_age_seconds", "Age of the oldest undelivered item",
                                labels=labels)
        failing = GaugeMetricFamily("edge_forwarder_failing_seconds", "How long deliveries have been failing (0: ok)",
                                    labels=labels)
        delivered = CounterMetricFamily("edge_forwarder_delivered", "Items acknowledged by the receiver", labels=labels)
        retried = CounterMetricFamily("edge_forwarder_retried", "Failed deliveries, each retried", labels=labels)
        dropped = CounterMetricFamily("edge_forwarder_dropped",
                                      "Items dropped undelivered (expired, or removed before their turn)",
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

"""Resident memory of the server and its worker processes, for /metrics.

    metrics.registry.register(MemoryCollector(lambda: {"server": os.getpid(), "worker-0": 4243}))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..service.rss import rss_bytes

__all__ = ["MemoryCollector", "rss_bytes"]

class MemoryCollector(Collector):
    def __init__(self, processes: Callable[[], dict[str, int | None]]) -> None:
        self.processes = processes  # label -> pid (None: not running now)

    def collect(self) -> Iterable[Metric]:
        each = GaugeMetricFamily("edge_process_rss_bytes", "Resident memory of each process", labels=["process"])
        total = 0
        for name, pid in self.processes().items():
            rss = rss_bytes(pid) if pid else None
            if rss is not None:
                each.add_metric([name], rss)
                total += rss
        yield each
        yield GaugeMetricFamily("edge_rss_bytes", "Resident memory of the server and its workers together",
                                value=total)

"""Prometheus metrics of one OpenAMI process, in a registry of its own.

A registry per Platform (not the global default) keeps tests and several platforms in one process from
sharing counters. Gauges that mirror state owned elsewhere (bus queue depths, ingest buffer) are read at
scrape time through callbacks instead of being pushed, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector


class _CallbackCounters(Collector):
    """Counters owned by another object (listener, bus), read at scrape time instead of mirrored."""

    def __init__(self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]):
        self._name, self._doc, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for key, value in self._read().items():
            family.add_metric([key], value)
        yield family


class _CallbackGauges(Collector):
    """Gauges owned by another object (connections held, sessions in use), read at scrape time."""

    def __init__(self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]):
        self._name, self._doc, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self._name, self._doc, labels=[self._label])
        for key, value in self._read().items():
            family.add_metric([key], value)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.readings = Counter(
            "openami_readings_ingested",
            "Readings handled by the ingest service, by outcome (inserted, revised, unchanged, rejected).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "openami_events_ingested", "Meter events stored (duplicates excluded).", registry=self.registry
        )
        self.jobs = Counter(
            "openami_jobs", "Finished jobs by kind and outcome.", ["kind", "outcome"], registry=self.registry
        )
        self.write_seconds = Histogram(
            "openami_ingest_write_seconds",
            "Time to write one ingest flush to the store.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "openami_queue_depth", "Messages waiting per queue.", ["queue"], registry=self.registry
        )

    def track_queue(self, queue: str, depth: Callable[[], float]) -> None:
        """Report ``depth()`` as the queue's depth at every scrape."""
        self._queue_depth.labels(queue=queue).set_function(depth)

    def track_counters(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]
    ) -> None:
        """Expose ``read()`` (label value -> running total) as the counter ``name``."""
        self.registry.register(_CallbackCounters(name, documentation, label, read))

    def track_gauges(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]
    ) -> None:
        """Expose ``read()`` (label value -> current value) as the gauge ``name``."""
        self.registry.register(_CallbackGauges(name, documentation, label, read))

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

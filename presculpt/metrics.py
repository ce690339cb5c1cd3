"""The Prometheus endpoint both daemons serve with ``--metrics-listen HOST:PORT``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP endpoint; ``port`` is the one bound (useful with port 0)."""

    host: str
    port: int
    _server: Any
    _thread: Any

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(listen: str, registry: CollectorRegistry) -> MetricsEndpoint:
    """Serve ``registry`` at http://HOST:PORT/metrics from a background thread."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    server, thread = start_http_server(int(port), addr=host, registry=registry)
    bound = server.server_address[1]
    log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return MetricsEndpoint(host, bound, server, thread)


class SnapshotGauge:
    """A gauge family whose series are replaced a part at a time, read at scrape time.

    ``replace(values, part)`` sets every series of ``part`` (a host, say) at once: series missing from
    the new values disappear, so a removed VM's series go with it, and a scrape never sees a part
    half-updated. Thread-safe; registered in ``registry`` like any collector.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._parts: dict[str, dict[tuple[str, ...], float]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def replace(self, values: Mapping[tuple[str, ...], float], part: str = "") -> None:
        """The series of ``part`` are now exactly ``values`` (label values in ``labelnames`` order)."""
        for labels in values:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {labels} do not match {self.labelnames}")
        fresh = {tuple(str(v) for v in labels): float(value) for labels, value in values.items()}
        with self._lock:
            if fresh:
                self._parts[part] = fresh
            else:
                self._parts.pop(part, None)

    def value(self, *labels: str) -> float | None:
        """The value of one series (None when absent), for tests and callers."""
        with self._lock:
            for series in self._parts.values():
                if labels in series:
                    return series[labels]
        return None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            series = [item for part in self._parts.values() for item in part.items()]
        for labels, value in sorted(series):
            family.add_metric(labels, value)
        yield family

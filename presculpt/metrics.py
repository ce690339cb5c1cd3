"""The Prometheus endpoint both daemons serve with ``--metrics-listen HOST:PORT``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

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

"""Prometheus metrics (GET /metrics, text format): requests and errors by route and code, latency,
model batch sizes, the admission queue, faces per group.

One registry per app, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from facecore.errors import Busy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)


class _Live(Collector):
    """Values read at scrape time: queue depth, requests running, faces per group."""

    def __init__(
        self, admission: Callable[[], tuple[int, int]], groups: Callable[[], dict[str, int]]
    ) -> None:
        self.admission = admission
        self.groups = groups

    def collect(self) -> Iterator[Any]:
        waiting, running = self.admission()
        yield GaugeMetricFamily("facecore_queue_depth", "requests waiting for a worker", waiting)
        yield GaugeMetricFamily("facecore_requests_running", "requests on a worker", running)
        faces = GaugeMetricFamily(
            "facecore_group_faces", "faces per group", labels=["appid", "group"]
        )
        for key, n in self.groups().items():
            appid, group = key.split("/", 1)
            faces.add_metric([appid, group], n)
        yield faces


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "facecore_requests",
            "API requests by route and error_code",
            ["route", "error_code"],
            registry=r,
        )
        self.latency = Histogram(
            "facecore_request_seconds",
            "API request latency by route",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_items = Histogram(
            "facecore_batch_items",
            "items per model run",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
            registry=r,
        )
        self.batch_calls = Histogram(
            "facecore_batch_calls",
            "requests' calls merged per model run",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8),
            registry=r,
        )
        self.busy = Counter("facecore_rejected_busy", f"requests answered {Busy.code}", registry=r)
        self.up = Gauge("facecore_up", "1 while the server runs", registry=r)
        self.up.set(1)
        self.admission: Callable[[], tuple[int, int]] | None = None

    def watch(
        self, admission: Callable[[], tuple[int, int]], groups: Callable[[], dict[str, int]]
    ) -> None:
        self.admission = admission
        self.registry.register(_Live(admission, groups))

    def observe(self, route: str, error_code: int | str, seconds: float) -> None:
        self.requests.labels(route, str(error_code)).inc()
        self.latency.labels(route).observe(seconds)

    def on_model_run(self, model: str, calls: int, items: int) -> None:
        self.batch_items.labels(model).observe(items)
        self.batch_calls.labels(model).observe(calls)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON, for the console's charts: requests by route and code, each
        route's cumulative latency buckets (upper bounds in seconds, the last +Inf as null),
        the queue, requests running and refusals when busy. No appid or group label in it."""
        requests: dict[str, dict[str, int]] = {}
        for family in self.requests.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    route, code = s.labels["route"], s.labels["error_code"]
                    requests.setdefault(route, {})[code] = int(s.value)
        latency: dict[str, list[int]] = {}
        for family in self.latency.collect():
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    latency.setdefault(s.labels["route"], []).append(int(s.value))
        waiting, running = self.admission() if self.admission is not None else (0, 0)
        return {
            "time": time.time(),
            "requests": requests,
            "latency_buckets": [*_LATENCY, None],
            "latency": latency,
            "queue_depth": waiting,
            "running": running,
            "busy_code": Busy.code,
            "busy": sum(
                int(s.value)
                for family in self.busy.collect()
                for s in family.samples
                if s.name.endswith("_total")
            ),
        }

"""Prometheus metrics of ``distilkit serve``: requests by route and status, latency,
forward batch sizes and seconds, queue wait and depth, tokens, disconnects, failures."""

from __future__ import annotations

from collections.abc import Callable

from distilkit.deploy.batcher import BatchStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Prometheus metrics in a registry of their own (one per app)."""

    def __init__(self, batcher_depth: Callable[[], float], max_batch_size: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "distilkit_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "distilkit_request_duration_seconds",
            "request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        sizes = sorted({1, *(2**i for i in range(12) if 2**i <= max_batch_size), max_batch_size})
        self.batch_size = Histogram(
            "distilkit_batch_size", "texts per forward batch", buckets=sizes, registry=registry
        )
        self.batch_seconds = Histogram(
            "distilkit_batch_duration_seconds",
            "seconds per forward batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "distilkit_queue_wait_seconds",
            "time a request waited in the queue",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter("distilkit_tokens", "input tokens run", registry=registry)
        self.padded_tokens = Counter(
            "distilkit_padded_tokens", "token slots run, padding included", registry=registry
        )
        self.disconnects = Counter(
            "distilkit_client_disconnects", "clients gone before their answer", registry=registry
        )
        self.batch_failures = Counter(
            "distilkit_batch_failures",
            "requests failed by their forward batch",
            registry=registry,
        )
        depth = Gauge("distilkit_queue_depth", "texts waiting for a batch", registry=registry)
        depth.set_function(batcher_depth)
        self._children: dict[tuple[str, int], tuple] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """One answered request (its labelled children looked up once per route/status)."""
        children = self._children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.rows)
        self.batch_seconds.observe(stats.seconds)
        self.tokens.inc(stats.tokens)
        self.padded_tokens.inc(stats.padded_tokens)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

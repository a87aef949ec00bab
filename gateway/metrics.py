"""Prometheus counters for requests, webhook deliveries and job runs (one registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "gateway_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.webhook_deliveries = Counter(
            "gateway_webhook_deliveries",
            "Webhook deliveries by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.job_runs = Counter(
            "gateway_job_runs",
            "Scheduled job runs by job and outcome (success, partial, error, skipped)",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.job_user_failures = Counter(
            "gateway_job_user_failures",
            "Per-user failures inside job runs",
            ["job"],
            registry=self.registry,
        )
        self.outbound_requests = Counter(
            "gateway_outbound_requests",
            "Calls to providers by service and outcome",
            ["service", "outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

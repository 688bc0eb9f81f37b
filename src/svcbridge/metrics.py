"""Prometheus metrics, in a registry of our own so tests and several apps in one process don't clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES = Counter(
    "svcbridge_messages_total",
    "Journaled messages by channel and pipeline outcome",
    ["channel", "outcome"],
    registry=REGISTRY,
)
INTAKE = Counter(
    "svcbridge_intake_total", "Raw messages submitted by sources", ["source", "new"], registry=REGISTRY
)
QUEUE = Gauge(
    "svcbridge_queue_depth", "Rows waiting, by queue and status", ["queue", "status"], registry=REGISTRY
)
DELIVERY_LATENCY = Histogram(
    "svcbridge_delivery_seconds",
    "Time from outbox row creation to successful delivery",
    ["target"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "svcbridge_deliveries_total",
    "Outbox attempts by target and result",
    ["target", "result"],
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "svcbridge_source_last_success_timestamp",
    "Unix time of the last good poll",
    ["source"],
    registry=REGISTRY,
)
SOURCE_UP = Gauge(
    "svcbridge_source_up", "1 when the last poll of the source succeeded", ["source"], registry=REGISTRY
)
BREAKER_OPEN = Gauge(
    "svcbridge_circuit_open", "1 while a target's circuit breaker is open", ["target"], registry=REGISTRY
)
JOBS = Counter(
    "svcbridge_jobs_total",
    "Durable job runs by kind and outcome (done, retry, dead, parked): a vendor that fails shows here",
    ["kind", "outcome"],
    registry=REGISTRY,
)

"""Each park is seen: a Prometheus series per upstream and tier, a log line, a cmn.telemetry event."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from gateway.events import RequestParked, RequestReceived
from gateway.telemetry.logging import RequestLog
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.service import TelemetryService
from gateway.testing import FakeClock, MemoryTransport
from tests.fixtures.logs import Captured

PARKED = RequestParked(
    request_id="r1", upstream="payments", method="GET", tier=1, delay=5, park_count=2, attempts=4,
    reason="circuit_open", remaining=41.5, transport="rabbitmq", principal="billing",
)  # fmt: skip


def test_a_park_is_counted_per_upstream_and_tier_and_leaves_the_in_flight_gauge() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, upstreams=["payments"])
    metrics.on_event(RequestReceived("rabbitmq"))
    metrics.on_event(PARKED)
    assert registry.get_sample_value("cmn_requests_parked_total", {"upstream": "payments", "tier": "1"}) == 1.0
    assert registry.get_sample_value("cmn_requests_in_flight", {"transport": "rabbitmq"}) == 0.0


def test_a_park_is_one_log_line(captured: Captured) -> None:
    RequestLog().on_event(PARKED)
    (line,) = [line for line in captured.lines() if line["event"] == "request.parked"]
    assert (line["upstream"], line["tier"], line["delay_s"], line["park_count"], line["reason"]) == (
        "payments", 1, 5, 2, "circuit_open",
    )  # fmt: skip


async def test_a_park_is_a_request_parked_event_on_the_stream() -> None:
    transport = MemoryTransport()
    service = TelemetryService(clock=FakeClock(), instance="gw-1", publishers=[transport])
    await service.publish(PARKED, {"traceparent": "00-a-b-01"}, via=transport)
    ((kind, body, headers),) = transport.telemetry
    document = orjson.loads(body)
    assert kind == document["type"] == "request.parked"
    assert document["data"]["park_count"] == 2 and document["data"]["principal"] == "billing"
    assert document["traceparent"] == headers["traceparent"] == "00-a-b-01"

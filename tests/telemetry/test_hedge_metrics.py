"""``cmn_hedges_total{upstream, outcome}`` from the hedge events."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.events import HedgeSent, HedgeWon
from gateway.telemetry.metrics import Metrics


def test_hedges_sent_and_won_are_counted_per_upstream() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, upstreams=["payments"])
    for attempt in (2, 2, 2):
        metrics.on_event(HedgeSent("payments", "https://pay-b:8443", attempt))
    metrics.on_event(HedgeWon("payments", "https://pay-b:8443"))

    def value(outcome: str) -> float | None:
        return registry.get_sample_value("cmn_hedges_total", {"upstream": "payments", "outcome": outcome})

    assert (value("sent"), value("won")) == (3.0, 1.0)
    labels = {s.labels.get("endpoint") for m in registry.collect() if m.name == "cmn_hedges" for s in m.samples}
    assert labels == {None}  # per upstream only: an endpoint label would multiply the series

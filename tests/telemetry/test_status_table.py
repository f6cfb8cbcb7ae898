"""The status table: every line fits 80 columns, whatever the names, and says what the document says."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.telemetry.status_table import duration, keep_end, render_status
from gateway.upstream.snapshot import (
    BreakerSnapshot,
    BucketSnapshot,
    BulkheadSnapshot,
    EndpointSnapshot,
    HealthSnapshot,
    InstanceSnapshot,
    OutlierSnapshot,
    PoolSnapshot,
    RateLimitSnapshot,
    TenantBucketSnapshot,
    TransportSnapshot,
    UpstreamSnapshot,
)

NOW = 1_800_000_000.0


def endpoint(url: str, *, state: str = "closed", ejected_for: float | None = None) -> EndpointSnapshot:
    return EndpointSnapshot(
        url=url,
        weight=1,
        active=0,
        breaker=BreakerSnapshot(state, "count:50", 12, 66.7, 0.0, NOW + 8 if state == "open" else None),  # type: ignore[arg-type]  # a state from the parameters
        outlier=OutlierSnapshot(NOW + ejected_for if ejected_for is not None else None, 1, 0),
        pool=PoolSnapshot(size=10, in_use=3, idle=2, waiting=0),
        health=HealthSnapshot(True, "passed", 4, 0, NOW - 1),
    )


def instance(name: str = "gw-a", urls: tuple[str, ...] = ("http://10.0.0.5:8080",), **kw: Any) -> dict[str, Any]:
    limit = RateLimitSnapshot(
        "shared", False, BucketSnapshot(7.0, 10.0, 5.0), (TenantBucketSnapshot("acme", 0.5, 3.0, 1.0),), 3
    )
    upstream = UpstreamSnapshot(
        "payments",
        tuple(endpoint(u, **kw) for u in urls),
        rate_limit=limit,
        bulkhead=BulkheadSnapshot(10, 5, 2, 0),
    )
    snapshot = InstanceSnapshot(
        instance=name,
        version="0.1.0",
        time=NOW,
        uptime=3725.0,
        transports=(TransportSnapshot("rabbitmq", True, 2), TransportSnapshot("kafka", False, 1)),
        in_flight=3,
        drain="consuming",
        upstreams=(upstream,),
    )
    document: dict[str, Any] = json.loads(json.dumps(snapshot.to_json()))  # what travels
    return document


def test_the_table_says_what_the_document_says() -> None:
    table = render_status([instance(state="open", ejected_for=12.4)])
    lines = table.splitlines()
    assert lines[0] == "gw-a 0.1.0  up 1h02m  consuming  in flight 3"
    assert lines[1] == "  transports: rabbitmq ready, kafka NOT READY"
    assert lines[2].split() == [
        "UPSTREAM",
        "/",
        "ENDPOINT",
        "BREAKER",
        "FAIL%",
        "SLOW%",
        "EJECTED",
        "POOL",
        "u/i/w",
        "HEALTH",
    ]
    assert lines[3:5] == [
        "payments  rate 7/10 shared, local view  tenants 3, emptiest acme 0.5/3",
        "    bulkhead 2/10 +0/5",
    ]
    assert lines[-1].split() == ["http://10.0.0.5:8080", "open", "66.7", "0.0", "12s", "3/2/0", "ok", "4"]


def test_every_line_fits_80_columns() -> None:
    long_name = "cmn-gateway-7f9c6d5b8-x2x9q-" + "z" * 60
    urls = ("https://payments-primary.eu-west-1.internal.example.com:8443", "https://payments-b.internal:8443")
    table = render_status([instance(long_name, urls, state="half_open", ejected_for=86400 * 3), instance()])
    widths = [len(line) for line in table.splitlines()]
    assert max(widths) <= 80, table
    assert "  …nternal.example.com:8443 half_open" in table  # the end of a long URL is kept
    assert "half_open" in table and "3d00h" in table


@settings(max_examples=50, deadline=None)
@given(name=st.text(min_size=1, max_size=200), url=st.text(min_size=1, max_size=200))
def test_any_names_fit(name: str, url: str) -> None:
    table = render_status([instance(name, (url,))])
    assert max(len(line) for line in table.splitlines()) <= 80


def test_endpoint_without_breaker_outlier_or_health() -> None:
    document = instance()
    document["upstreams"][0]["endpoints"][0].update(breaker=None, outlier=None, health=None)
    document["upstreams"][0]["rate_limit"] = None
    document["upstreams"][0]["bulkhead"] = None
    lines = render_status([document]).splitlines()
    assert lines[3] == "payments"
    assert lines[4].split() == ["http://10.0.0.5:8080", "-", "-", "-", "-", "3/2/0", "-"]


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (59, "59s"), (245, "4m05s"), (7380, "2h03m"), (273600, "3d04h"), (-5, "0s")]
)
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_keep_end() -> None:
    assert keep_end("http://a:1", 20) == "http://a:1"
    assert keep_end("http://very-long-host:8080", 10) == "…host:8080"


def test_an_endpoint_the_fleet_says_is_down_shows_the_quorum() -> None:
    document = instance(urls=("http://10.0.0.5:8080", "http://10.0.0.6:8080"))
    endpoints = document["upstreams"][0]["endpoints"]
    endpoints[0]["peers"] = {"votes": 2, "quorum": 2, "live": 3, "down": True}
    endpoints[1]["peers"] = {"votes": 1, "quorum": 2, "live": 3, "down": False}
    lines = render_status([document]).splitlines()
    assert "    down by peers (2/3, quorum 2)" in lines
    assert "    1/3 replicas say down (quorum 2)" in lines
    assert all(len(line) <= 80 for line in lines)
    assert "peers" not in render_status([instance()])  # none said down: no line

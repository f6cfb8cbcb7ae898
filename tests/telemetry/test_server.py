"""MetricsServer over real HTTP on loopback: exposition formats, liveness, readiness."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.events import RequestCompleted
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.server import MetricsServer


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Metrics(registry).on_event(RequestCompleted("r", "payments", "GET", 200, 0.01, transport="kafka"))
    return registry


async def test_metrics_are_served_in_the_prometheus_text_format(registry: CollectorRegistry) -> None:
    async with (
        MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: True) as server,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = [s for s in families["cmn_requests"].samples if s.name == "cmn_requests_total"]
    assert sample.value == 1
    assert sample.labels["upstream"] == "payments"


async def test_openmetrics_is_negotiated_when_asked_for(registry: CollectorRegistry) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    async with (
        MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: True) as server,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/metrics", headers={"Accept": accept}) as response,
    ):
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).rstrip().endswith("# EOF")


async def test_healthz_is_always_ok_and_readyz_follows_readiness(registry: CollectorRegistry) -> None:
    state = {"ready": False}
    async with (
        MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: state["ready"]) as server,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}") as http,
    ):
        async with http.get("/healthz") as live, http.get("/readyz") as ready:
            assert (live.status, ready.status) == (200, 503)
        state["ready"] = True
        async with http.get("/readyz") as ready:
            assert ready.status == 200


async def test_a_raising_readiness_check_means_not_ready(registry: CollectorRegistry) -> None:
    def broken() -> bool:
        raise ConnectionError("broker gone")

    async with (
        MetricsServer(registry, host="127.0.0.1", port=0, readiness=broken) as server,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/readyz") as response,
    ):
        assert response.status == 503


async def test_port_is_known_after_start_and_released_after_close(registry: CollectorRegistry) -> None:
    server = MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: True)
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    port = server.port
    assert repr(server) == f"<MetricsServer 127.0.0.1:{port}>"
    await server.aclose()
    again = MetricsServer(registry, host="127.0.0.1", port=port, readiness=lambda: True)
    await again.start()  # the same port binds again: the first server let it go
    await again.aclose()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.1:{port}/healthz")


def fake_status(upstream: str | None) -> dict[str, Any] | None:
    upstreams = {"pay": {"name": "pay"}, "ship": {"name": "ship"}}
    if upstream is None:
        return {"instance": "gw-1", "upstreams": list(upstreams.values())}
    if upstream not in upstreams:
        return None
    return {"instance": "gw-1", "upstreams": [upstreams[upstream]]}


async def test_admin_upstreams_serves_the_status_document_narrowed_by_upstream(registry: CollectorRegistry) -> None:
    async with (
        MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: True, status=fake_status) as server,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}") as http,
    ):
        async with http.get("/admin/upstreams") as every:
            assert (every.status, every.content_type) == (200, "application/json")
            assert every.headers["Cache-Control"] == "no-store"
            assert [u["name"] for u in (await every.json())["upstreams"]] == ["pay", "ship"]
        async with http.get("/admin/upstreams", params={"upstream": "ship"}) as one:
            assert (await one.json())["upstreams"] == [{"name": "ship"}]
        async with http.get("/admin/upstreams", params={"upstream": "<nope>"}) as unknown:
            assert unknown.status == 404
            assert "<nope>" not in await unknown.text()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD"])
async def test_admin_upstreams_is_read_only(registry: CollectorRegistry, method: str) -> None:
    async with (
        MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: True, status=fake_status) as server,
        aiohttp.ClientSession() as http,
        http.request(method, f"http://127.0.0.1:{server.port}/admin/upstreams", json={"state": "open"}) as response,
    ):
        assert response.status == 405
        assert response.headers["Allow"] == "GET"


async def test_admin_upstreams_is_absent_without_a_status_source(registry: CollectorRegistry) -> None:
    async with (
        MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: True) as server,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/admin/upstreams") as response,
    ):
        assert response.status == 404

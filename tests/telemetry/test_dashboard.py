"""The Grafana dashboard: well-formed, wired to the provisioned datasource, every query real PromQL over
metrics the gateway exposes, and every topic the issue names on a panel."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.fixtures.prometheus import StartPrometheus
from tests.telemetry.promql import DEPLOY, exposed_sample_names, metric_names

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cmn-gateway.json"
# Grafana's own variables, replaced the way Grafana would before sending the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s", "$upstream": ".*"}
# Each topic the issue asks the dashboard to show, and a metric whose presence shows it.
TOPICS = {
    "throughput": "cmn_requests_total",
    "error rate by code": "cmn_requests_total",
    "latency percentiles": "cmn_request_duration_seconds_bucket",
    "in-flight": "cmn_requests_in_flight",
    "breaker states": "cmn_breaker_state",
    "ejections": "cmn_endpoint_ejections_total",
    "pool usage": "cmn_pool_connections",
    "retries": "cmn_retries_total",
    "rate limiting": "cmn_rate_limited_total",
    "dead letters": "cmn_messages_dead_lettered_total",
    "consumer lag": "cmn_kafka_consumer_lag",
    "certificate expiry": "cmn_certificate_expiry_timestamp_seconds",
    "security refusals": "cmn_security_events_total",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in query_panels(dashboard) for t in p["targets"]]


def as_prometheus_sees_it(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unhandled Grafana variable in {expr}"
    return expr


def test_panels_are_well_formed_and_laid_out_without_overlap(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "cmn-gateway"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    for panel in query_panels(dashboard):
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_every_panel_uses_the_datasource_input_so_the_dashboard_imports_anywhere(dashboard: dict[str, Any]) -> None:
    # Imported by hand, Grafana asks for DS_PROMETHEUS (``__inputs``); provisioned (compose), the
    # datasource variable of the same name resolves it to the provisioned Prometheus.
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    [wanted_input] = dashboard["__inputs"]
    assert wanted_input["name"] == "DS_PROMETHEUS" and wanted_input["pluginId"] == "prometheus"
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in query_panels(dashboard):
        assert panel["datasource"] == wanted, panel["title"]
        assert all(t["datasource"] == wanted for t in panel["targets"]), panel["title"]
    assert '"uid": "prometheus"' not in DASHBOARD.read_text()  # no hard-coded uid left anywhere


def upstream_labelled() -> set[str]:
    """Sample names the gateway exposes with an ``upstream`` label."""
    from prometheus_client import CollectorRegistry

    from gateway.telemetry.metrics import Metrics
    from tests.telemetry.promql import ONE_OF_EACH

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for event in ONE_OF_EACH:
        metrics.on_event(event)
    return {s.name for family in registry.collect() for s in family.samples if "upstream" in s.labels}


def test_every_query_over_a_per_upstream_metric_honours_the_upstream_variable(dashboard: dict[str, Any]) -> None:
    per_upstream = upstream_labelled()
    assert {"cmn_breaker_state", "cmn_requests_total", "cmn_pool_connections"} <= per_upstream
    for expr in expressions(dashboard):
        for name, selector in re.findall(r"(cmn_[a-z_]+)(\{[^}]*\})?", expr):
            if name in per_upstream:
                assert 'upstream=~"$upstream"' in selector, f"{name} ignores $upstream in {expr}"


def test_dashboards_provider_points_at_the_mounted_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cmn.yml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file"
    assert only["options"]["path"] == "/var/lib/grafana/dashboards"


def test_queries_refer_only_to_metrics_the_gateway_exposes(dashboard: dict[str, Any]) -> None:
    exposed = exposed_sample_names()
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    queries = [*expressions(dashboard), *variables]
    for expr in queries:
        used = metric_names(expr)
        assert used, f"no cmn_ metric in {expr}"
        assert used <= exposed, f"{sorted(used - exposed)} not exposed, in {expr}"


def test_every_topic_the_issue_names_has_a_panel(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(e) for e in expressions(dashboard)))
    missing = {topic for topic, metric in TOPICS.items() if metric not in used}
    assert not missing
    quantiles = " ".join(expressions(dashboard))
    assert all(f"histogram_quantile({q}," in quantiles for q in ("0.5", "0.95", "0.99"))


def test_a_security_row_shows_refusals_by_kind(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    (row,) = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Security"]
    following = next((i for i in range(row + 1, len(panels)) if panels[i]["type"] == "row"), len(panels))
    in_row = panels[row + 1 : following]
    by_kind = [
        t["expr"]
        for p in in_row
        for t in p["targets"]
        if "cmn_security_events_total" in t["expr"] and "by (kind)" in t["expr"]
    ]
    assert any("rate(cmn_security_events_total[$__rate_interval])" in e for e in by_kind), by_kind
    assert all(panel["gridPos"]["y"] > panels[row]["gridPos"]["y"] for panel in in_row)


async def test_every_query_is_valid_promql_for_a_real_prometheus(
    dashboard: dict[str, Any], prometheus_server: StartPrometheus
) -> None:
    prometheus = await prometheus_server([])
    for expr in expressions(dashboard):
        await prometheus.query(as_prometheus_sees_it(expr))  # fails the test on a parse or evaluation error

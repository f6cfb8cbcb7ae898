"""A forced breaker as operators see it: a log line naming the principal, the cmn_breaker_forced gauge,
and the status table's mark and line (within 80 columns)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from gateway.events import BreakerForced
from gateway.telemetry.logging import RequestLog, configure_logging
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.status_table import render_status
from tests.telemetry.test_status_table import NOW, instance

UPSTREAM, ENDPOINT = "payments", "10.0.0.1:443"
WHERE = {"upstream": UPSTREAM, "endpoint": ENDPOINT}


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    yield out
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_forcing_change_is_a_warning_line_naming_the_principal(log_lines: io.StringIO) -> None:
    log = RequestLog()
    log.on_event(BreakerForced(UPSTREAM, ENDPOINT, state="open", principal="alice", until=NOW + 3600))
    log.on_event(BreakerForced(UPSTREAM, ENDPOINT, state="automatic", principal="bob", until=None))
    log.on_event(BreakerForced(UPSTREAM, ENDPOINT, state="automatic", principal="alice", until=None, expired=True))
    lines = parsed(log_lines)
    assert [(line["event"], line["level"], line["state"], line["principal"]) for line in lines] == [
        ("breaker.forced", "warning", "open", "alice"),
        ("breaker.forced", "warning", "automatic", "bob"),
        ("breaker.forced", "warning", "automatic", "alice"),
    ]
    assert (lines[0]["upstream"], lines[0]["endpoint"], lines[0]["until"]) == ("payments", "10.0.0.1:443", NOW + 3600)
    assert [line["expired"] for line in lines] == [False, False, True]


def test_the_forced_gauge_says_which_state_is_forced_and_clears_on_reset() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="1.2.3")

    def forced(state: str) -> float | None:
        return registry.get_sample_value("cmn_breaker_forced", {**WHERE, "state": state})

    metrics.on_event(BreakerForced(UPSTREAM, ENDPOINT, state="open", principal="ops", until=NOW))
    assert (forced("open"), forced("closed")) == (1.0, 0.0)
    metrics.on_event(BreakerForced(UPSTREAM, ENDPOINT, state="closed", principal="ops", until=NOW))
    assert (forced("open"), forced("closed")) == (0.0, 1.0)
    metrics.on_event(BreakerForced(UPSTREAM, ENDPOINT, state="automatic", principal="ops", until=None))
    assert (forced("open"), forced("closed")) == (0.0, 0.0)


def test_the_table_marks_a_forced_breaker_and_says_who_and_how_long() -> None:
    urls = ("http://10.0.0.5:8080", "https://payments-primary.eu-west-1.internal.example.com:8443")
    document = instance(urls=urls)
    first, second = document["upstreams"][0]["endpoints"]
    first["breaker"]["forced"] = {"state": "open", "by": "ops", "until": NOW + 3552}
    second["breaker"]["forced"] = {"state": "closed", "by": "x" * 120, "until": NOW + 30}
    lines = render_status([document]).splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[5].split()[:2] == ["http://10.0.0.5:8080", "open*"]  # "closed" underneath, forced open
    assert lines[6] == "    forced open by ops, 59m12s left"
    assert lines[7].split()[1] == "closed*"
    assert lines[8].startswith("    forced closed by xxx")
    assert "30s left" in " ".join(lines[8:])


def test_documents_without_forced_still_render() -> None:
    document = instance()
    del document["upstreams"][0]["endpoints"][0]["breaker"]["forced"]  # from a replica older than forcing
    lines = render_status([document]).splitlines()
    assert lines[-1].split()[1] == "closed" and "forced" not in lines[-1]

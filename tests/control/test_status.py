"""`cmn status`'s gathering against a real gateway on Tansu: signed commands, the table, the warnings."""

from __future__ import annotations

import uuid

import pytest
from aiohttp import web

from gateway.app import Gateway, load_config
from gateway.clock import SystemClock
from gateway.control.status import Format, StatusReport, gather_status, render
from gateway.envelope.control import Answer
from gateway.settings import load_settings
from tests.fixtures.upstreams import StartUpstream


async def test_a_gateway_requiring_identity_answers_signed_status_commands_only(
    kafka_bootstrap: str, start_upstream: StartUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMN_TEST_OPS_KEY", "0123456789abcdef0123456789abcdef")
    app = web.Application()
    upstream = await start_upstream(app)
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    instance = f"gw-signed-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, CMN_REQUESTS_QUEUE=queue, KAFKA_GROUP_ID=f"g.{queue}",
        KAFKA_SESSION_TIMEOUT_MS=1000, REQUIRE_IDENTITY=True, CMN_INSTANCE=instance,
    )  # fmt: skip
    document = {
        "upstreams": {"payments": {"endpoints": [upstream.url]}},
        "security": {"keys": {"k1": {"principal": "ops", "secret": {"env": "CMN_TEST_OPS_KEY"}}}},
    }
    clock = SystemClock()
    async with Gateway(load_config(settings, document)) as gateway:
        assert len(gateway.control) == 1
        unsigned = await gather_status(settings, upstream=None, wait=1.0, clock=clock)
        signed = await gather_status(
            settings, upstream=None, wait=1.0, clock=clock, key_id="k1", secret="0123456789abcdef0123456789abcdef"
        )
        forged = await gather_status(settings, upstream=None, wait=1.0, clock=clock, key_id="k1", secret="wrong")
    assert [(a.instance, a.error) for a in unsigned.answers] == [(instance, "unauthenticated")]
    assert unsigned.documents == [] and unsigned.warnings == []  # identity is configured here
    assert [(a.instance, a.ok, a.principal) for a in signed.answers] == [(instance, True, "ops")]
    assert [(a.instance, a.error) for a in forged.answers] == [(instance, "unauthenticated")]
    [doc] = signed.documents
    assert doc["instance"] == instance and [u["name"] for u in doc["upstreams"]] == ["payments"]
    table = render(signed, Format.table)
    assert instance in table and "payments" in table
    assert max(len(line) for line in table.splitlines()) <= 80


def test_the_report_warns_when_a_replica_has_no_identity_configured() -> None:
    guarded = Answer(instance="a", type="status", ok=True, result={"instance": "a"}, identity="configured")
    open_one = Answer(instance="b", type="status", ok=True, result={"instance": "b"}, identity="not configured")
    report = StatusReport((guarded, open_one))
    [warning] = report.warnings
    assert "identity is not configured on b:" in warning
    assert StatusReport((guarded,)).warnings == []
    assert render(StatusReport(()), Format.table) == "no replica answered"

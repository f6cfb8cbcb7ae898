"""Upstream credentials and TLS verification through a whole gateway on RabbitMQ: what the caller sees."""

from __future__ import annotations

import json

import pytest

from gateway.events import SecurityRefused
from tests.fixtures.certs import StartTlsUpstream
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import StackFactory
from tests.upstream.helpers import events_of

pytestmark = pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)  # broker-independent behaviour

TOKEN = "tok-through-the-bus-77f1"


async def test_the_gateway_sends_its_credential_not_the_callers(
    make_stack: StackFactory, echo_upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMN_TEST_UPSTREAM_TOKEN", TOKEN)
    stack = await make_stack(
        {"echo": {"endpoints": [echo_upstream.url], "auth": {"bearer": {"env": "CMN_TEST_UPSTREAM_TOKEN"}}}}
    )
    reply = await stack.client.request("echo", "GET", "/who", headers={"Authorization": "Bearer forged"})
    assert reply.status == 200 and reply.error is None
    seen = reply.json_ if reply.json_ is not None else json.loads(reply.body or "{}")
    assert seen["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert "forged" not in json.dumps(seen)
    assert TOKEN not in repr(stack.gateway.forwarder)
    assert not [e for e in stack.events.events if TOKEN in repr(e)]


async def test_an_untrusted_upstream_certificate_is_upstream_unavailable_and_a_security_event(
    make_stack: StackFactory, start_tls_upstream: StartTlsUpstream
) -> None:
    upstream = await start_tls_upstream()  # signed by the test's dev CA, which the gateway does not trust
    stack = await make_stack({"partner": {"endpoints": [upstream.url], "retry": {"attempts": 1}}})
    reply = await stack.client.request("partner", "GET", "/")
    assert reply.status is None and reply.error is not None
    assert reply.error.code == "upstream_unavailable"
    assert reply.error.message == f"TLS verification of {upstream.url} failed: unable to get local issuer certificate"
    [event] = [e for e in events_of(stack.events, SecurityRefused) if e.kind == "tls_verification_failed"]
    assert event.upstream == "partner" and event.reason == reply.error.message
    assert upstream.client_serials == []

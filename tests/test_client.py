"""The SDK refuses, before publishing, what the gateway would refuse; replies raise what they stand for."""

from __future__ import annotations

import pytest

from gateway.client import GatewayClient
from gateway.envelope.models import ReplyEnvelope
from gateway.errors import ERROR_TYPES, CircuitOpenError, UpstreamStatusError, UpstreamTimeoutError
from gateway.testing import MemoryRequester, MemoryTransport


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "/x", "json": {"a": 1}, "body": "text"}, "json= or body=, not both"),
        ({"path": "https://evil.example.com/x"}, "path"),
        ({"path": "/a/../admin"}, "path"),
        ({"path": "/x", "headers": {"Bad Name": "v"}}, "headers"),
        ({"path": "/x", "json": {"n": 2**70}}, "cannot be encoded as application/json"),
        ({"path": "/x", "method": "CONNECT"}, "method"),
    ],
)
async def test_a_request_the_gateway_would_refuse_raises_before_anything_is_published(
    kwargs: dict[str, object], message: str
) -> None:
    transport = MemoryTransport()
    async with GatewayClient(MemoryRequester(transport)) as client:
        method = str(kwargs.pop("method", "POST"))
        with pytest.raises(ValueError, match=message):
            await client.request("payments", method, timeout=1, **kwargs)  # type: ignore[arg-type]
    assert transport.waiting == 0 and transport.published == []


async def test_msgpack_refuses_an_integer_it_cannot_carry_too() -> None:
    async with GatewayClient(MemoryRequester(MemoryTransport()), codec="application/msgpack") as client:
        with pytest.raises(ValueError, match="cannot be encoded as application/msgpack"):
            await client.request("payments", "POST", "/x", json={"n": 2**70}, timeout=1)


def reply(**fields: object) -> ReplyEnvelope:
    return ReplyEnvelope.model_validate({"id": "r-1", "status": None, **fields})


def test_raise_for_error_maps_each_wire_code_to_its_exception() -> None:
    assert reply(status=200).raise_for_error().status == 200
    with pytest.raises(UpstreamTimeoutError, match="slow") as timed_out:
        reply(error={"code": "timeout", "message": "slow"}, attempts=3).raise_for_error()
    assert timed_out.value.attempts == 3
    with pytest.raises(CircuitOpenError):
        reply(error={"code": "circuit_open", "message": "open"}).raise_for_error()
    with pytest.raises(UpstreamStatusError, match="payments answered 503") as answered:
        reply(status=503, upstream="payments").raise_for_error()
    assert answered.value.status == 503
    for code, kind in ERROR_TYPES.items():
        with pytest.raises(kind):
            reply(error={"code": code, "message": "m"}).raise_for_error()


def test_the_factories_take_named_parameters_only() -> None:
    with pytest.raises(TypeError):
        GatewayClient.rabbitmq("amqp://guest:guest@127.0.0.1/", queuee="typo")  # type: ignore[call-arg]
    client = GatewayClient.kafka("127.0.0.1:9", topic="t.requests", reply_topic="cmn.replies.mine")
    assert "kafka" in repr(client)

"""Replies go to reply addresses only, never to the gateway's own queues and topics."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from gateway.access.reply_address import ReplyAddresses
from gateway.app import load_config
from gateway.errors import ReplyToRefusedError
from gateway.secrets import SecretResolver
from gateway.settings import load_settings
from gateway.testing import FakeClock
from gateway.wiring import build_guard

ADDRESSES = ReplyAddresses(
    queue_pattern="cmn.replies.*",
    topic_pattern="cmn.replies.*",
    reserved=("cmn.requests", "cmn.telemetry", "cmn.requests.dlq"),
)


@pytest.mark.parametrize(
    ("transport", "address"),
    [
        ("rabbitmq", "amq.rabbitmq.reply-to"),
        ("rabbitmq", "amq.rabbitmq.reply-to.g1h2AA5yZXBseQ==.x"),
        ("rabbitmq", "amq.gen-JzTY20BRgKO-HjmUJj0wLg"),
        ("rabbitmq", "cmn.replies.billing"),
        ("kafka", "cmn.replies.0f3c"),
    ],
)
def test_reply_addresses_are_allowed(transport: str, address: str) -> None:
    ADDRESSES.check(transport, address)


@pytest.mark.parametrize(
    ("transport", "address"),
    [
        ("rabbitmq", "cmn.requests"),
        ("rabbitmq", "cmn.requests.dlq"),
        ("rabbitmq", "cmn.telemetry"),
        ("rabbitmq", "orders.work"),
        ("rabbitmq", "amq.direct"),
        ("rabbitmq", "cmn.replies" + "x" * 300),
        ("kafka", "cmn.telemetry"),
        ("kafka", "cmn.requests.dlq"),
        ("kafka", "amq.gen-abc"),
        ("kafka", "orders"),
        ("kafka", "cmn.replies.bad/name"),
    ],
)
def test_everything_else_is_refused(transport: str, address: str) -> None:
    with pytest.raises(ReplyToRefusedError) as refused:
        ADDRESSES.check(transport, address)
    assert (refused.value.code, refused.value.dead_letter, refused.value.security_kind) == (
        "reply_to_refused",
        True,
        "reply_to_refused",
    )


def test_reserved_names_win_over_a_permissive_pattern() -> None:
    wide = ReplyAddresses(queue_pattern="*", topic_pattern="*", reserved=("cmn.requests", "cmn.telemetry"))
    wide.check("kafka", "anything")
    for name in ("cmn.telemetry", "cmn.requests.park.5s", "__consumer_offsets", "__transaction_state"):
        with pytest.raises(ReplyToRefusedError):
            wide.check("kafka", name)


async def test_the_gateway_reads_its_patterns_and_reserves_its_own_names_whatever_they_say() -> None:
    """REPLY_QUEUE_PATTERN / REPLY_TOPIC_PATTERN as `cmn serve` reads them (gateway.wiring.build_guard),
    opened as wide as they go: the requests queue (here a custom CMN_REQUESTS_QUEUE), the telemetry
    stream and the dead letters stay refused; a pattern that does not match is refused too."""
    settings = load_settings(
        ENABLE_METRICS=False, REPLY_QUEUE_PATTERN="*", REPLY_TOPIC_PATTERN="team.*", CMN_REQUESTS_QUEUE="orders.gw"
    )
    config = load_config(settings, {"upstreams": {"svc": {"endpoints": ["http://127.0.0.1:9"]}}})
    async with AsyncExitStack() as resources:
        guard = await build_guard(
            settings, config.upstreams, config.security, SecretResolver({}), FakeClock(), resources
        )
    guard.reply_to("rabbitmq", "anything.at.all")
    guard.reply_to("kafka", "team.replies")
    refused = [
        ("rabbitmq", "orders.gw"),
        ("rabbitmq", "orders.gw.dlq"),
        ("rabbitmq", "cmn.requests"),
        ("rabbitmq", "cmn.requests.dlq"),
        ("rabbitmq", "cmn.telemetry"),
        ("kafka", "cmn.replies.x"),  # the default pattern no longer applies
        ("kafka", "orders.gw"),
    ]
    for transport, address in refused:
        with pytest.raises(ReplyToRefusedError):
            guard.reply_to(transport, address)

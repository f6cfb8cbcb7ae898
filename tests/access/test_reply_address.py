"""Replies go to reply addresses only, never to the gateway's own queues and topics."""

from __future__ import annotations

import pytest

from gateway.access.reply_address import ReplyAddresses
from gateway.errors import ReplyToRefusedError

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

"""The lean publish encoding matches pamqp's marshalling byte for byte, and declines what it cannot do."""

from __future__ import annotations

import asyncio
import datetime
from typing import cast

import aio_pika
import aiormq
import pamqp.frame
from hypothesis import given
from hypothesis import strategies as st
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.common import FieldTable
from pamqp.header import ContentHeader

from gateway.bus.rabbitmq.aiormq_internals.wire import (
    FRAME_HEADER,
    FRAME_METHOD,
    LeanPublisher,
    ack_method,
    body_frames,
    content_header,
    frame,
    lean_shape,
    publish_method,
    try_ack,
)
from gateway.bus.rabbitmq.connection import underlay

short_text = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
optional_short = st.one_of(st.none(), short_text.filter(bool))
header_names = st.text(max_size=30).filter(lambda s: len(s.encode()) <= 128)
text_headers = st.one_of(st.none(), st.dictionaries(header_names, st.text(max_size=80), max_size=6))


@given(
    content_type=optional_short,
    correlation_id=optional_short,
    reply_to=optional_short,
    message_id=optional_short,
    headers=text_headers,
    delivery_mode=st.sampled_from([None, 1, 2]),
    body_size=st.integers(min_value=0, max_value=2**40),
    channel=st.integers(min_value=1, max_value=2047),
)
def test_content_header_matches_pamqp(
    content_type: str | None,
    correlation_id: str | None,
    reply_to: str | None,
    message_id: str | None,
    headers: FieldTable | None,
    delivery_mode: int | None,
    body_size: int,
    channel: int,
) -> None:
    props = Basic.Properties(
        content_type=content_type,
        correlation_id=correlation_id,
        reply_to=reply_to,
        message_id=message_id,
        headers=headers or None,
        delivery_mode=delivery_mode,
    )
    encoded = content_header(props, body_size)
    assert encoded is not None
    expected = pamqp.frame.marshal(ContentHeader(properties=props, body_size=body_size), channel)
    assert frame(FRAME_HEADER, channel, encoded) == expected


@given(
    exchange=st.from_regex(r"[a-zA-Z0-9._:-]{0,40}", fullmatch=True),
    routing_key=short_text,
    channel=st.integers(min_value=1, max_value=2047),
    mandatory=st.booleans(),
)
def test_publish_method_matches_pamqp(exchange: str, routing_key: str, channel: int, mandatory: bool) -> None:
    publish = Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    expected = pamqp.frame.marshal(publish, channel)
    assert frame(FRAME_METHOD, channel, publish_method(exchange, routing_key, mandatory=mandatory)) == expected


@given(tag=st.integers(min_value=1, max_value=2**63 - 1), channel=st.integers(min_value=1, max_value=2047))
def test_ack_matches_pamqp(tag: int, channel: int) -> None:
    expected = pamqp.frame.marshal(Basic.Ack(delivery_tag=tag), channel)
    assert frame(FRAME_METHOD, channel, ack_method(tag)) == expected


def test_bodies_are_split_at_the_frame_size() -> None:
    body = bytes(range(256)) * 10
    frames = body_frames(5, body, 1000)
    expected = [pamqp.frame.marshal(ContentBody(body[at : at + 1000]), 5) for at in (0, 1000, 2000)]
    assert frames == expected
    assert body_frames(5, b"", 1000) == []


def test_properties_outside_the_lean_shape_are_declined() -> None:
    assert content_header(Basic.Properties(expiration="1000"), 1) is None
    assert content_header(Basic.Properties(timestamp=datetime.datetime.now(datetime.UTC)), 1) is None
    assert content_header(Basic.Properties(headers={"attempt": 3}), 1) is None  # not text
    assert content_header(Basic.Properties(correlation_id="x" * 256), 1) is None  # too long a short string


class OtherChannel:
    """A channel as another aiormq might make it: no ``confirmations`` or ``delivery_tag`` to write to."""

    def __init__(self) -> None:
        self.number = 1
        self.publisher_confirms = True
        self.is_closed = False
        self.write_queue: asyncio.Queue[object] = asyncio.Queue()


async def test_a_channel_of_another_shape_takes_aiormqs_path_for_publishes_and_acks() -> None:
    other = OtherChannel()
    channel = cast("aiormq.Channel", other)
    publisher = LeanPublisher()
    props = Basic.Properties(content_type="application/json", delivery_mode=2)

    assert not lean_shape(other)
    assert publisher.try_publish(channel, "", "q", b"{}", props) is None
    assert not try_ack(channel, 1)
    assert (publisher.lean, publisher.general) == (0, 1)
    assert other.write_queue.empty()  # nothing half-written on a channel it does not know


async def test_aiormqs_own_channel_has_the_lean_shape(amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        assert lean_shape(await underlay(channel))

"""A lean confirmed publish for the common message shape, beside aiormq's general ``basic_publish``.

Per message, aiormq's ``basic_publish`` builds pamqp frame objects and marshals them by
reflection, generates a message id, and enters a timeout scope and the channel lock: profiling
put about a third of a gateway publish there. Replies and telemetry events all have one shape
(content type, text headers, delivery mode, correlation id, reply-to, message id), so their content header is
encoded here directly with ``struct``, and the method frame, the same for every message to one
destination, is encoded once per destination.

The publish itself mirrors what ``basic_publish`` does on a confirm-mode channel: take the next
delivery tag, register a confirmation future under it, queue the frames on the connection's writer,
with no await in between. Anything outside that shape goes through aiormq as before
(``try_publish`` returns None). The caller must not use this path while one of its own
``basic_publish`` calls on the channel is under way: that one may hold a tag whose frames are not
queued yet (``ConfirmedPublisher`` counts them). Tests check the bytes against pamqp's marshalling.
``lean_shape`` checks, once per channel, that it has the attributes used here; a channel of another
shape (another aiormq) takes aiormq's path for every publish and ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import OrderedDict
from collections.abc import Mapping

import aiormq
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic

log = logging.getLogger(__name__)

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_END = 1, 2, 3, b"\xce"
BASIC_CLASS, PUBLISH_METHOD, ACK_METHOD = 60, 40, 80
# Property flags, most significant bit first, in the order AMQP 0-9-1 lists the properties.
FLAG_CONTENT_TYPE, FLAG_HEADERS, FLAG_DELIVERY_MODE = 0x8000, 0x2000, 0x1000
FLAG_CORRELATION_ID, FLAG_REPLY_TO, FLAG_MESSAGE_ID = 0x0400, 0x0200, 0x0080
MANDATORY = 0x01  # Basic.Publish bit: the broker returns a message no queue takes
# Properties this encoder does not write: a message with any of them takes aiormq's path.
_OTHER_PROPERTIES = (
    "content_encoding",
    "priority",
    "expiration",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
)
METHOD_CACHE_SIZE = 1024
MAX_SHORT_STR, MAX_FIELD_NAME = 255, 128
_SHAPE = "_cmn_lean_shape"


class LeanPublisher:
    """Encodes and queues confirmed publishes on aiormq channels; see the module docstring."""

    def __init__(self) -> None:
        self._methods: OrderedDict[tuple[int, str, str, bool], bytes] = OrderedDict()
        self.lean = 0
        self.general = 0

    def __repr__(self) -> str:
        return f"<LeanPublisher lean={self.lean} general={self.general} destinations={len(self._methods)}>"

    def try_publish(
        self,
        channel: aiormq.Channel,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: Basic.Properties,
        *,
        mandatory: bool = False,
    ) -> asyncio.Future[object] | None:
        """The broker's confirmation to await, or None when this message must go through aiormq.

        A ``mandatory`` message needs a ``message_id``: aiormq finds the publish a returned message
        belongs to by it, hands the message to the channel's return callbacks and resolves the
        confirmation with it.
        """
        header = content_header(props, len(body))
        too_long = len(routing_key.encode()) > MAX_SHORT_STR or len(exchange.encode()) > MAX_SHORT_STR
        unmatched = mandatory and not props.message_id
        if header is None or too_long or unmatched or not lean_shape(channel) or not _ready(channel):
            self.general += 1
            return None
        number = channel.number
        head = (self._method(number, exchange, routing_key, mandatory), frame(FRAME_HEADER, number, header))
        payloads = _payloads(channel, head, number, body)
        channel.delivery_tag += 1
        tag = channel.delivery_tag
        confirmation = channel.create_future()
        channel.confirmations[tag] = confirmation
        if mandatory and props.message_id:
            _match_returns(channel, props.message_id, tag, confirmation)
        # No await between taking the tag and queueing the frames: confirms match tags in order.
        for payload in payloads:
            channel.write_queue.put_nowait(ChannelFrame(payload=payload, should_close=False))
        self.lean += 1
        return confirmation

    def _method(self, number: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
        key = (number, exchange, routing_key, mandatory)
        encoded = self._methods.get(key)
        if encoded is None:
            encoded = frame(FRAME_METHOD, number, publish_method(exchange, routing_key, mandatory=mandatory))
            self._methods[key] = encoded
            if len(self._methods) > METHOD_CACHE_SIZE:
                self._methods.popitem(last=False)
        return encoded


def _match_returns(channel: aiormq.Channel, message_id: str, tag: int, confirmation: asyncio.Future[object]) -> None:
    """What aiormq's own mandatory publish registers, so its reader can match a Basic.Return to it."""
    channel.message_id_delivery_tag[message_id] = tag

    def forget(_: asyncio.Future[object]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]

    confirmation.add_done_callback(forget)


def try_ack(channel: aiormq.Channel, delivery_tag: int) -> bool:
    """Queue a Basic.Ack without aiormq's per-call marshalling and awaits; False: use basic_ack."""
    if not lean_shape(channel) or channel.is_closed or channel.write_queue.full():
        return False
    payload = frame(FRAME_METHOD, channel.number, ack_method(delivery_tag))
    channel.write_queue.put_nowait(ChannelFrame(payload=payload, should_close=False))
    return True


def lean_shape(channel: object) -> bool:
    """Has ``channel`` the aiormq 7.x attributes this module reads and writes? Checked once per channel."""
    known = getattr(channel, _SHAPE, None)
    if isinstance(known, bool):
        return known
    fits = (
        isinstance(getattr(channel, "number", None), int)
        and isinstance(getattr(channel, "delivery_tag", None), int)
        and isinstance(getattr(channel, "confirmations", None), dict)
        and isinstance(getattr(channel, "message_id_delivery_tag", None), dict)
        and isinstance(getattr(channel, "max_content_size", None), int)
        and isinstance(getattr(channel, "write_queue", None), asyncio.Queue)
        and isinstance(getattr(channel, "publisher_confirms", None), bool)
        and callable(getattr(channel, "create_future", None))
    )
    if not fits:
        log.info("aiormq channel has another shape here; publishes and acks go through aiormq")
    with contextlib.suppress(AttributeError):  # a channel that cannot be marked is checked again next time
        setattr(channel, _SHAPE, fits)
    return fits


def ack_method(delivery_tag: int) -> bytes:
    """Basic.Ack for one delivery (never ``multiple``: deliveries finish out of order)."""
    return struct.pack(">HHQB", BASIC_CLASS, ACK_METHOD, delivery_tag, 0)


def _ready(channel: aiormq.Channel) -> bool:
    # A full queue would need an await between taking the tag and queueing the frames.
    return channel.publisher_confirms and not channel.is_closed and not channel.write_queue.full()


def frame(kind: int, channel_number: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel_number, len(payload)) + payload + FRAME_END


def publish_method(exchange: str, routing_key: str, *, mandatory: bool = False) -> bytes:
    """Basic.Publish, immediate off (RabbitMQ refuses it)."""
    bits = struct.pack(">B", MANDATORY if mandatory else 0)
    return b"".join(
        (struct.pack(">HHH", BASIC_CLASS, PUBLISH_METHOD, 0), short_str(exchange), short_str(routing_key), bits)
    )


# A body this large is queued frame by frame rather than joined into one payload: joining holds the
# frames and their concatenation at once, twice the body (a 10 MiB dead-letter copy of a refused
# request raised peak RSS by 2x its size; frame by frame, the frames only move from the write queue
# to the socket's buffer).
LARGE_BODY = 256 * 1024


def _payloads(channel: aiormq.Channel, head: tuple[bytes, bytes], number: int, body: bytes) -> list[bytes]:
    frames = body_frames(number, body, channel.max_content_size)
    queue = channel.write_queue
    room = queue.maxsize - queue.qsize() if queue.maxsize else len(frames) + 1
    if len(body) < LARGE_BODY or room < len(frames) + 1:
        return [b"".join((*head, *frames))]
    return [b"".join(head), *frames]


def body_frames(channel_number: int, body: bytes, max_size: int) -> list[bytes]:
    if not body:
        return []
    return [frame(FRAME_BODY, channel_number, body[at : at + max_size]) for at in range(0, len(body), max_size)]


def content_header(props: Basic.Properties, body_size: int) -> bytes | None:
    """The content header payload, or None when ``props`` is outside the shape encoded here."""
    if any(getattr(props, name) for name in _OTHER_PROPERTIES):
        return None
    flags, parts = 0, []
    for flag, value in (
        (FLAG_CONTENT_TYPE, props.content_type),
        (FLAG_HEADERS, props.headers),
        (FLAG_DELIVERY_MODE, props.delivery_mode),
        (FLAG_CORRELATION_ID, props.correlation_id),
        (FLAG_REPLY_TO, props.reply_to),
        (FLAG_MESSAGE_ID, props.message_id),
    ):
        if value is None or value == "":
            continue
        encoded = _encode(flag, value)
        if encoded is None:
            return None
        flags |= flag
        parts.append(encoded)
    return struct.pack(">HHQH", BASIC_CLASS, 0, body_size, flags) + b"".join(parts)


def _encode(flag: int, value: object) -> bytes | None:
    if flag == FLAG_DELIVERY_MODE:
        return struct.pack(">B", value) if isinstance(value, int) else None
    if flag == FLAG_HEADERS:
        return text_table(value) if isinstance(value, Mapping) else None
    if not isinstance(value, str) or len(value.encode()) > MAX_SHORT_STR:
        return None
    return short_str(value)


def text_table(headers: Mapping[object, object]) -> bytes | None:
    """A field table whose values are all text ('S' long strings), or None for anything else.

    Keys sorted, as pamqp writes them (the order means nothing to AMQP, but equal bytes are easy to test).
    """
    items: list[tuple[str, str]] = []
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key.encode()) > MAX_FIELD_NAME:
            return None
        items.append((key, value))
    entries = []
    for key, value in sorted(items):
        data = value.encode()
        entries.append(short_str(key) + b"S" + struct.pack(">I", len(data)) + data)
    table = b"".join(entries)
    return struct.pack(">I", len(table)) + table


def short_str(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">B", len(data)) + data

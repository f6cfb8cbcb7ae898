"""AMQP message properties: what the gateway and the requester write, and how they read headers.

Replies, requests and telemetry events share one shape (content type, text headers, persistent,
correlation id, reply-to, message id), the shape ``aiormq_internals.wire`` encodes without aiormq.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pamqp.commands import Basic
from pamqp.common import FieldTable

from gateway.bus.base import Delivery

DEFAULT_CONTENT_TYPE = "application/json"
PERSISTENT = 2


def text_headers(raw: Mapping[str, Any] | None) -> dict[str, str]:
    """AMQP header values as text: bytes decoded (UTF-8, replaced), everything else via ``str``."""
    if not raw:
        return {}
    return {
        key: value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
        for key, value in raw.items()
    }


def timestamp_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def properties(
    *,
    content_type: str,
    correlation_id: str | None,
    headers: Mapping[str, Any],
    reply_to: str | None = None,
    message_id: str | None = None,
) -> Basic.Properties:
    return Basic.Properties(
        content_type=content_type,
        correlation_id=correlation_id,
        headers=dict(headers) if headers else None,
        reply_to=reply_to,
        message_id=message_id,
        delivery_mode=PERSISTENT,
    )


def dead_letter_properties(original: Basic.Properties, header: str, reason: str) -> Basic.Properties:
    """The original properties plus the error header; made persistent and without expiry.

    ``user_id`` is dropped: the broker rejects a publish whose user_id is not the connection's user.
    """
    return _copied(original, {**(original.headers or {}), header: reason})


def _copied(original: Basic.Properties, headers: FieldTable) -> Basic.Properties:
    """``original`` republished by the gateway with ``headers``: persistent, no per-message expiry, no
    ``user_id`` (only the connection's own may be published)."""
    return Basic.Properties(
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        headers=headers,
        delivery_mode=PERSISTENT,
        priority=original.priority,
        correlation_id=original.correlation_id,
        reply_to=original.reply_to,
        message_id=original.message_id,
        timestamp=original.timestamp,
        message_type=original.message_type,
        app_id=original.app_id,
    )


# What RabbitMQ writes when it dead-letters a message (from a park tier, say): bookkeeping of the trip
# just made, not part of the request; dropped from a parked copy so that it does not grow per park.
DEATH_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


def park_properties(
    original: Basic.Properties | None, fallback: Delivery, park_headers: Mapping[str, str]
) -> Basic.Properties:
    """The original properties (reply_to, correlation id, timestamp...) with the park headers set over
    its headers; persistent, no per-message expiry (the tier's queue holds the delay). ``user_id`` is
    dropped, as for a dead letter: the park seal carries the caller instead (gateway.parking.ticket)."""
    if original is None:  # not a message off this broker (tests hand a Delivery): its fields, as given
        return properties(
            content_type=fallback.content_type,
            correlation_id=fallback.correlation_id,
            headers={**fallback.headers, **park_headers},
            reply_to=fallback.reply_to,
        )
    headers = {k: v for k, v in (original.headers or {}).items() if k not in DEATH_HEADERS}
    headers.update(park_headers)
    return _copied(original, headers)

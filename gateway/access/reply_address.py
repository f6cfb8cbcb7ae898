"""Where a reply may be published: reply addresses only, never the gateway's own queues and topics.

Without this, a ``reply_to`` naming any queue or topic (``cmn.telemetry``, another service's work
queue) makes the gateway write there with its own credentials.

RabbitMQ: direct reply-to (``amq.rabbitmq.reply-to*``), server-named queues (``amq.gen-*``) and
names matching REPLY_QUEUE_PATTERN. Kafka: topics matching REPLY_TOPIC_PATTERN. The requests queue,
the telemetry stream and their derivatives (dead letters, ...) are refused whatever the pattern says.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from gateway.errors import ReplyToRefusedError

_RABBIT_ALWAYS = ("amq.rabbitmq.reply-to", "amq.gen-")
_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's own rule for topic names
_MAX_QUEUE_BYTES = 255  # AMQP 0-9-1 shortstr


class ReplyAddresses:
    def __init__(self, *, queue_pattern: str, topic_pattern: str, reserved: tuple[str, ...]) -> None:
        """``reserved`` are name prefixes never replied to (cmn.requests, cmn.telemetry, ...)."""
        self._queue_pattern = queue_pattern
        self._topic_pattern = topic_pattern
        self._reserved = reserved

    def check(self, transport: str, address: str) -> None:
        """Raise ReplyToRefusedError unless ``address`` is a reply address on ``transport``."""
        if address.startswith(self._reserved):
            raise ReplyToRefusedError("reply_to names one of the gateway's own queues or topics")
        if transport == "kafka":
            # "__" topics are Kafka's own (__consumer_offsets, __transaction_state), whatever the pattern.
            allowed = (
                _KAFKA_TOPIC.match(address) is not None
                and not address.startswith("__")
                and fnmatchcase(address, self._topic_pattern)
            )
        else:
            allowed = len(address.encode()) <= _MAX_QUEUE_BYTES and (
                address.startswith(_RABBIT_ALWAYS) or fnmatchcase(address, self._queue_pattern)
            )
        if not allowed:
            pattern = self._topic_pattern if transport == "kafka" else self._queue_pattern
            raise ReplyToRefusedError(f"reply_to is not a reply address (allowed: {pattern})")

    def __repr__(self) -> str:
        return f"<ReplyAddresses queues={self._queue_pattern} topics={self._topic_pattern}>"

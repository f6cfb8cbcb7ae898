"""RabbitMQ names and declarations shared by the gateway and the requester.

Both sides declare the same queues with the same arguments: RabbitMQ refuses a re-declaration
whose arguments differ (PRECONDITION_FAILED), so the arguments live here and nowhere else.
Declarations go through a throwaway channel so that such a refusal never closes a channel that
consumes or publishes; a queue that already exists with other arguments is used as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiormq
from aiormq.abc import AbstractConnection

from gateway.bus.base import REQUESTS, TELEMETRY, park_destination
from gateway.bus.rabbitmq.connection import BROKER_ERRORS

log = logging.getLogger(__name__)

TRANSPORT_NAME = "rabbitmq"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# A stream is append-only and kept by retention, so operators and late clients can replay telemetry;
# without a retention limit it would grow for ever. Seven days or 5 GB, whichever comes first.
STREAM_ARGUMENTS: Mapping[str, Any] = {
    "x-queue-type": "stream",
    "x-max-age": "7D",
    "x-max-length-bytes": 5_000_000_000,
}


@dataclass(frozen=True, slots=True)
class Topology:
    """The queue and exchange names one gateway deployment uses (tests override ``requests``)."""

    requests: str = REQUESTS
    telemetry: str = TELEMETRY
    park_delays: tuple[int, ...] = ()  # one park tier per delay (seconds), when some upstream parks

    @property
    def dead_letters(self) -> str:
        # For the default queue this is exactly DEAD_LETTERS ("cmn.requests.dlq").
        return f"{self.requests}.dlq"

    def park_arguments(self, delay: int) -> dict[str, Any]:
        """A park tier holds each message ``delay`` seconds (a queue-wide TTL, so the head always
        expires first), then the broker dead-letters it back onto the requests queue."""
        return {
            "x-message-ttl": delay * 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.requests,
        }


async def declare_topology(connection: AbstractConnection, topology: Topology) -> None:
    """Declare requests, dead letters, the park tiers, and the telemetry exchange bound to its stream queue."""
    await declare_requests(connection, topology)
    await _declare(connection, "queue", topology.dead_letters, durable=True)
    for delay in topology.park_delays:
        name = park_destination(topology.requests, delay)
        await _declare(connection, "queue", name, durable=True, arguments=topology.park_arguments(delay))
    await declare_telemetry(connection, topology)


async def declare_requests(connection: AbstractConnection, topology: Topology) -> None:
    """The requester's share: the request queue must exist, else the default exchange drops requests."""
    await _declare(connection, "queue", topology.requests, durable=True)


async def declare_telemetry(connection: AbstractConnection, topology: Topology) -> None:
    await _declare(connection, "exchange", topology.telemetry, exchange_type="topic", durable=True)
    await _declare(connection, "queue", topology.telemetry, durable=True, arguments=dict(STREAM_ARGUMENTS))
    channel = await connection.channel()
    try:
        await channel.queue_bind(topology.telemetry, topology.telemetry, routing_key="#")
    finally:
        await _close_quietly(channel)


async def _declare(connection: AbstractConnection, kind: str, name: str, **options: Any) -> None:
    channel = await connection.channel()
    try:
        if kind == "queue":
            await channel.queue_declare(name, **options)
        else:
            await channel.exchange_declare(name, **options)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        # It exists, declared elsewhere with other settings: usable, and not ours to change.
        log.warning("%s %r exists with other arguments, using it as it is: %s", kind, name, exc)
    finally:
        await _close_quietly(channel)


async def _close_quietly(channel: aiormq.abc.AbstractChannel) -> None:
    if not channel.is_closed:
        try:
            await channel.close()
        except BROKER_ERRORS as exc:
            log.debug("closing a declaration channel failed: %s", exc)

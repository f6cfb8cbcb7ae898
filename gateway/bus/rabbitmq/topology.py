"""RabbitMQ names, queue arguments and AMQP property helpers shared by the gateway and the requester.

Both sides declare the same queues with the same arguments: RabbitMQ refuses a re-declaration
whose arguments differ (PRECONDITION_FAILED), so the arguments live here and nowhere else.
Declarations go through a throwaway channel so that such a refusal never closes a channel that
consumes or publishes; a queue that already exists with other arguments is used as it is.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import AbstractConnection
from pamqp.commands import Basic
from yarl import URL

from gateway.bus.base import REQUESTS, TELEMETRY
from gateway.bus.rabbitmq_coalesce import CoalesceStats, coalesce_writes
from gateway.errors import BusUnavailableError, CertificateError, ConfigError
from gateway.tls import TlsSettings, client_context

log = logging.getLogger(__name__)

TRANSPORT_NAME = "rabbitmq"
DEFAULT_CONTENT_TYPE = "application/json"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
PERSISTENT = 2
# What broker calls raise when the connection or channel is lost, or the broker refuses a call
# (ChannelInvalidStateError is a RuntimeError, not an AMQPError).
BROKER_ERRORS: tuple[type[Exception], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
)
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

    @property
    def dead_letters(self) -> str:
        # For the default queue this is exactly DEAD_LETTERS ("cmn.requests.dlq").
        return f"{self.requests}.dlq"


async def connect(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    reconnect_interval: float,
    name: str,
    write_stats: CoalesceStats | None = None,
) -> AbstractRobustConnection:
    """A robust connection (reconnects on loss, reopens its channels) writing frames coalesced.

    ``amqps://`` without a context gets one from ``amqps_context``, never aiormq's own.
    """
    options: dict[str, Any] = {"reconnect_interval": reconnect_interval}
    if ssl_context is None:
        ssl_context = amqps_context(url)
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
        options["ssl"] = True
    try:
        connection: AbstractRobustConnection = await aio_pika.connect_robust(
            url, client_properties={"connection_name": name}, **options
        )
    except BROKER_ERRORS as exc:
        raise BusUnavailableError(f"cannot connect to RabbitMQ at {_safe(url)}: {exc}") from exc

    def coalesce(*_: object) -> None:
        # Every reconnect brings a new aiormq connection with a write queue of its own.
        if connection.transport is not None:
            coalesce_writes(connection.transport.connection, write_stats)

    coalesce()
    connection.reconnect_callbacks.add(coalesce)
    return connection


_AMQPS_REFUSED = ("no_verify_ssl", "capath", "cadata")


def amqps_context(url: str) -> ssl.SSLContext | None:
    """An ``amqps://`` URL's TLS through the one builder (``gateway.tls``), None for ``amqp://``.

    The URL's ``cafile`` is trusted (else the system store) and ``certfile``/``keyfile`` presented,
    as aiormq reads them; the minimum version and verification are every other TLS connection's.
    ``no_verify_ssl``, ``capath`` and ``cadata`` are refused rather than quietly ignored.
    """
    parsed = URL(url)
    if parsed.scheme != "amqps":
        return None
    refused = [name for name in _AMQPS_REFUSED if name in parsed.query]
    if refused:
        raise ConfigError(f"amqps URL option {', '.join(refused)} is not supported: trust the broker with cafile=")
    context = client_context(TlsSettings(ca_file=parsed.query.get("cafile")))
    certfile = parsed.query.get("certfile")
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, parsed.query.get("keyfile"))
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"amqps certfile {certfile} cannot be used for TLS: {exc}") from exc
    return context


async def underlay(channel: AbstractRobustChannel) -> aiormq.Channel:
    """The aiormq channel under an aio-pika one (the abstract type lacks ``consumers`` and ``wait=``)."""
    current = await channel.get_underlay_channel()
    if not isinstance(current, aiormq.Channel):
        raise TypeError(f"unexpected underlying channel {current!r}")
    return current


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else str(parsed)


async def declare_topology(connection: AbstractConnection, topology: Topology) -> None:
    """Declare requests, dead letters, and the telemetry exchange bound to its stream queue."""
    await declare_requests(connection, topology)
    await _declare(connection, "queue", topology.dead_letters, durable=True)
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
    headers = dict(original.headers or {})
    headers[header] = reason
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

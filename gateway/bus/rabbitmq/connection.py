"""Connecting to RabbitMQ: one robust connection per owner, its TLS, and what a lost one raises.

``connect`` opens an aio-pika robust connection (it reconnects on loss and reopens its channels)
and has every aiormq connection under it write its frames coalesced (``aiormq_internals.coalesce``).
The gateway's transport and the SDK's requester (and its telemetry streams) all connect here, and
the SDK keeps the coalesced writes on purpose. A client with many requests in flight queues frames
the way the gateway does: 20,000 confirmed sends at 256 in flight through ``RabbitRequester``
(uvloop, loopback broker, three runs each) took 43-44 us of CPU per send coalesced against
112-143 us frame by frame, 8.0-8.7k sends/s against 3.2-4.5k; one send at a time had the same
median latency either way (0.45-0.58 ms). The widened write queue holds no more memory than
aiormq's bound of 10 would: each queued frame is a send its caller is awaiting anyway. The patch
leaves a connection it does not recognise alone (only slower), and one way of connecting keeps
one behaviour to test.

``amqps_context`` builds an ``amqps://`` URL's TLS through the one builder (``gateway.tls``), and
``try_login`` is the bare login ``cmn audit --live`` tries (no transport, no patch).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from yarl import URL

from gateway.bus.rabbitmq.aiormq_internals.coalesce import CoalesceStats, coalesce_writes
from gateway.errors import BusUnavailableError, CertificateError, ConfigError
from gateway.tls import TlsSettings, client_context

# What broker calls raise when the connection or channel is lost, or the broker refuses a call
# (ChannelInvalidStateError is a RuntimeError, not an AMQPError).
BROKER_ERRORS: tuple[type[Exception], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
)


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


async def try_login(url: str, *, timeout: float) -> bool | str:
    """True when the broker accepted the login, False when it refused it, else why it was not tried.

    A bare aiormq connection, closed at once: ``cmn audit --live`` probes for the guest account.
    """
    try:
        async with asyncio.timeout(timeout):
            connection = await aiormq.connect(url)
    except aiormq.exceptions.ProbableAuthenticationError:
        return False
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
        if "ACCESS_REFUSED" in str(exc):
            return False
        return type(exc).__name__
    await connection.close()
    return True

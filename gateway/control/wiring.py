"""Building the control channels and their responders, for the composition root (app.py)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from gateway.access.guard import Guard
from gateway.bus.base import ControlChannel, Handler
from gateway.clock import Clock
from gateway.control.breaker import ForceBreakers, ForcedBreakers, register_breaker
from gateway.control.registry import StatusSource, default_registry
from gateway.control.responder import ControlResponder
from gateway.settings import Settings


async def build_control_channels(
    settings: Settings,
    transports: Sequence[str],
    *,
    bootstrap: str | None,
    certificates: Mapping[str, Any],
    clock: Clock,
    resources: AsyncExitStack,
) -> list[ControlChannel]:
    """One control channel per transport the gateway built (``rabbitmq``, ``kafka``), on the same broker."""
    channels: list[ControlChannel] = []
    if "rabbitmq" in transports and settings.amqp_url:
        from gateway.bus.rabbitmq.control import RabbitControlChannel

        channels.append(RabbitControlChannel(settings.amqp_url, clock=clock))
    if "kafka" in transports and bootstrap:
        from gateway.bus.kafka.control import KafkaControlChannel
        from gateway.bus.kafka.security import security_from_settings

        security = security_from_settings(settings)
        if security.tls:
            from gateway.certs.wiring import broker_tls_context

            context, manager = await broker_tls_context(
                certificates, ca_file=settings.kafka_ssl_ca_file, client_certificate=settings.kafka_ssl_certificate,
                settings=settings, clock=clock,
            )  # fmt: skip
            if manager is not None:
                resources.push_async_callback(manager.aclose)
            security = security.with_ssl_context(context)
        channels.append(KafkaControlChannel(bootstrap, clock=clock, security=security))
    return channels


async def start_responders(
    channels: Sequence[ControlChannel],
    *,
    status: StatusSource,
    guard: Guard,
    principals: Collection[str],
    identity_configured: bool,
    instance: str,
    resources: AsyncExitStack,
    breakers: ForceBreakers | None = None,
    forced_breakers: ForcedBreakers | None = None,
    notices: Mapping[str, Handler] | None = None,
) -> list[ControlResponder]:
    """A responder on each channel, started; each is closed with the gateway (``resources``).
    ``breakers`` (``Gateway.force_breakers``) adds the ``breaker`` command, ``forced_breakers``
    (``Gateway.forced_breakers``) the read-only ``breaker.forced`` a late starter asks its peers;
    ``notices`` handle messages that are not commands (``health.verdicts``), by their x-cmn-notice."""
    registry = default_registry(status)
    if breakers is not None:
        register_breaker(registry, breakers, forced_breakers)
    responders = []
    for channel in channels:
        responder = ControlResponder(
            channel, registry, guard=guard, principals=principals,
            identity_configured=identity_configured, instance=instance, notices=notices,
        )  # fmt: skip
        resources.push_async_callback(responder.aclose)
        await responder.start()
        responders.append(responder)
    return responders

"""Building the control channels and their responders, for the composition root (app.py)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack

from gateway.access.guard import Guard
from gateway.bus.base import ControlChannel, Handler
from gateway.bus.kafka.security import PLAINTEXT, KafkaSecurity
from gateway.clock import Clock
from gateway.control.breaker import ForceBreakers, ForcedBreakers, register_breaker
from gateway.control.keeper import ChannelKeeper
from gateway.control.registry import StatusSource, default_registry
from gateway.control.responder import ControlResponder
from gateway.events import Observer
from gateway.settings import Settings


async def build_control_channels(
    settings: Settings,
    transports: Sequence[str],
    *,
    bootstrap: str | None,
    kafka_security: KafkaSecurity | None,
    clock: Clock,
) -> list[ControlChannel]:
    """One control channel per transport the gateway built (``rabbitmq``, ``kafka``), on the same broker;
    Kafka's with the transport's own ``kafka_security`` (gateway.wiring.build_kafka_security)."""
    channels: list[ControlChannel] = []
    if "rabbitmq" in transports and settings.amqp_url:
        from gateway.bus.rabbitmq.control import RabbitControlChannel

        channels.append(RabbitControlChannel(settings.amqp_url, clock=clock))
    if "kafka" in transports and bootstrap:
        from gateway.bus.kafka.control import KafkaControlChannel

        channels.append(KafkaControlChannel(bootstrap, clock=clock, security=kafka_security or PLAINTEXT))
    return channels


async def start_responders(
    channels: Sequence[ControlChannel],
    *,
    clock: Clock,
    observer: Observer,
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
    """A responder on each channel, started (or, when the broker refuses or cannot be reached, retried
    in the background by a ``ChannelKeeper`` while requests are served); each is closed with the
    gateway (``resources``).
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
        keeper = ChannelKeeper(responder.start, transport=channel.name, clock=clock, observer=observer)
        resources.push_async_callback(responder.aclose)
        resources.push_async_callback(keeper.aclose)  # first out: no retry may reopen a closed channel
        await keeper.start()
        responders.append(responder)
    return responders

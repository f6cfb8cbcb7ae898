"""`cmn status`: every live replica's state document, gathered over ``cmn.control``.

The broker is the configured one (AMQP_URL, else Kafka: KAFKA_BOOTSTRAP_SERVERS or the embedded
broker's address), as for `cmn request`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from gateway.bus.base import ControlChannel, Requester
from gateway.bus.kafka.security import KafkaSecurity
from gateway.clock import Clock
from gateway.control.gather import Signer, gather
from gateway.envelope.control import Answer, StatusCommand
from gateway.settings import Settings
from gateway.telemetry.status_table import render_status

NOT_CONFIGURED = (
    "identity is not configured on {instances}: no signing keys and REQUIRE_IDENTITY off, so any "
    "caller is anonymous (see the README, Security)"
)


class Format(StrEnum):
    table = "table"
    json = "json"


@dataclass(frozen=True, slots=True)
class StatusReport:
    answers: tuple[Answer, ...]

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [a.result for a in self.answers if a.ok and a.result is not None]

    @property
    def errors(self) -> list[str]:
        return [f"{a.instance}: {a.error}: {a.message}" for a in self.answers if not a.ok]

    @property
    def warnings(self) -> list[str]:
        unguarded = [a.instance for a in self.answers if a.identity == "not configured"]
        return [NOT_CONFIGURED.format(instances=", ".join(unguarded))] if unguarded else []

    def to_json(self) -> bytes:
        document = {"replicas": self.documents, "errors": self.errors, "warnings": self.warnings}
        return orjson.dumps(document, option=orjson.OPT_INDENT_2)

    def to_table(self, width: int = 80) -> str:
        if not self.documents:
            return "no replica answered"
        return render_status(self.documents, width)


def connect(
    settings: Settings, *, clock: Clock, security: KafkaSecurity | None = None
) -> tuple[ControlChannel, Requester]:
    """The control channel and a requester (for its reply address) on the configured broker."""
    if settings.amqp_url:
        from gateway.bus.rabbitmq.control import RabbitControlChannel
        from gateway.bus.rabbitmq.requester import RabbitRequester

        # An exclusive reply queue, not direct reply-to: the command leaves on the control
        # channel's own channel, and direct reply-to only answers the channel that consumes it.
        requester = RabbitRequester(
            settings.amqp_url, use_direct_reply_to=False, queue=settings.requests_queue, clock=clock
        )
        return RabbitControlChannel(settings.amqp_url, clock=clock, label="cli"), requester
    from gateway.bus.kafka.control import KafkaControlChannel
    from gateway.bus.kafka.requester import KafkaRequester
    from gateway.bus.kafka.security import PLAINTEXT

    bootstrap = settings.kafka_bootstrap_servers or f"127.0.0.1:{settings.embedded_broker_port}"
    security = security or PLAINTEXT
    return (
        KafkaControlChannel(bootstrap, clock=clock, security=security),
        KafkaRequester(bootstrap, topic=settings.requests_queue, security=security, clock=clock),
    )


async def gather_status(
    settings: Settings,
    *,
    upstream: str | None,
    wait: float,
    clock: Clock,
    security: KafkaSecurity | None = None,
    key_id: str | None = None,
    secret: str | None = None,
) -> StatusReport:
    """``key_id`` and ``secret`` sign the command (a key of the gateways' security.keys)."""
    signer = _signer(key_id, secret.encode(), clock) if key_id is not None and secret is not None else None
    channel, requester = connect(settings, clock=clock, security=security)
    try:
        command = StatusCommand(upstream=upstream)
        answers = await gather(channel, requester, command, wait=wait, clock=clock, signer=signer)
    finally:
        await requester.aclose()
        await channel.aclose()
    return StatusReport(tuple(answers))


def _signer(key_id: str, secret: bytes, clock: Clock) -> Signer:
    from gateway.access.signature import sign

    def signed(correlation_id: str, reply_to: str, body: bytes) -> Mapping[str, str]:
        now_ms = int(clock.time() * 1000)
        return sign(key_id, secret, now_ms=now_ms, correlation_id=correlation_id, reply_to=reply_to, body=body)

    return signed


def render(report: StatusReport, form: Format) -> str:
    """What `cmn status` prints on stdout; warnings and errors are the CLI's to print on stderr."""
    if form is Format.json:
        return report.to_json().decode()
    return report.to_table()

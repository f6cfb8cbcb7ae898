"""Span names and attributes for messages, after the OpenTelemetry messaging semantic conventions.

One owner for both ends of a request's trip over the bus: the SDK's PRODUCER span
(``gateway.client``) and the gateway's CONSUMER span (``gateway.telemetry.tracing``).

    send cmn.requests      PRODUCER   messaging.operation.type = send
    process cmn.requests   CONSUMER   messaging.operation.type = process

``messaging.system`` is the transport's name (``rabbitmq`` or ``kafka``, the conventions' values).
CMN's request id identifies the message, and the SDK sends it as the correlation id too: so
``messaging.message.id`` and ``messaging.message.conversation_id`` carry the same value for an SDK
request. A consumer only knows the correlation id before decoding the envelope, and uses it for both.
No OpenTelemetry import here: the SDK may use it without the tracing SDK.
"""

from __future__ import annotations

from typing import Literal

Operation = Literal["send", "process"]
# The attributes whose value is new with every message (a span encoder gains nothing remembering them).
PER_MESSAGE = frozenset({"messaging.message.id", "messaging.message.conversation_id"})


def messaging_span(
    operation: Operation,
    *,
    system: str,
    destination: str,
    message_id: str | None = None,
    conversation_id: str | None = None,
) -> tuple[str, dict[str, str]]:
    """(span name, attributes) for one message sent to, or processed from, ``destination``."""
    attributes = {
        "messaging.system": system,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    if conversation_id:
        attributes["messaging.message.conversation_id"] = conversation_id
    return f"{operation} {destination}", attributes

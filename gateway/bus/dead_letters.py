"""Dead letters as the operator reads them: the broker-neutral letter and the queue protocol.

``read`` holds every dead letter without removing any (RabbitMQ: basic.get without ack; Kafka: the
``cmn-dlq`` group's committed position, nothing committed). ``republish`` returns once the broker
confirmed the copy on the requests queue/topic; only then may ``remove`` take the letter out.
``aclose`` gives back every letter not removed (RabbitMQ: nack with requeue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DLQ_GROUP = "cmn-dlq"  # the Kafka consumer group whose committed position marks what was replayed


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered request as the broker holds it."""

    ref: str  # the broker's name for it: AMQP message id or a digest; Kafka "partition:offset"
    body: bytes
    content_type: str
    correlation_id: str | None
    reply_to: str | None
    headers: Mapping[str, str]
    timestamp_ms: int | None = None
    user_id: str | None = None  # AMQP user_id, checked by the broker when first published
    key: bytes | None = None  # Kafka record key
    # Letters of one lane leave the queue in order (a Kafka partition: the group commits a position);
    # None: each letter leaves on its own (a RabbitMQ queue acks each one).
    lane: str | None = None
    # The requests queue/topic the letter came from, when the dead-letter queue is shared by several
    # (Kafka: one cmn.requests.dlq per broker); None when the queue is this deployment's alone.
    source: str | None = None
    token: Any = field(default=None, repr=False, compare=False)


class DeadLetterQueue(Protocol):
    requests: str  # where ``republish`` sends a letter: this deployment's requests queue/topic

    async def read(self) -> Sequence[DeadLetter]: ...

    async def republish(self, letter: DeadLetter, headers: Mapping[str, str]) -> None:
        """Publish ``letter`` to the requests queue/topic with ``headers`` (confirmed by the broker)."""
        ...

    async def remove(self, letter: DeadLetter) -> None: ...

    async def keep(self, letter: DeadLetter) -> None:
        """Leave ``letter`` in the queue although a later letter of its lane is removed: the letter
        is copied to the tail (confirmed) and its old place released. Only called for a lane."""
        ...

    async def aclose(self) -> None: ...

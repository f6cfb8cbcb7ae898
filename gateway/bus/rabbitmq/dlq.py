"""The RabbitMQ dead-letter queue as an operator's queue: read, republish, remove, give back.

Letters are taken with basic.get and no auto-ack, so the broker holds each one for this channel
until it is acked (removed, only after its republish is confirmed) or nacked with requeue (every
letter not removed, on ``aclose``). Were the connection to drop, the broker requeues them itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from gateway.bus.dead_letters import DeadLetter
from gateway.bus.rabbitmq.aiormq_internals.text import tolerate_non_utf8
from gateway.bus.rabbitmq.connection import BROKER_ERRORS, connect
from gateway.bus.rabbitmq.properties import DEFAULT_CONTENT_TYPE, text_headers, timestamp_ms
from gateway.errors import BusUnavailableError

READ_LIMIT = 100_000  # letters held at once; a larger queue is worked through in several runs


class RabbitDeadLetters:
    """``DeadLetterQueue`` over ``dead_letters`` (``<requests>.dlq``), republishing to ``requests``."""

    def __init__(self, url: str, *, requests: str, dead_letters: str | None = None, limit: int = READ_LIMIT) -> None:
        self._url = url
        self.requests = requests
        self._dead_letters = dead_letters or f"{requests}.dlq"
        self._limit = limit
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._held: dict[str, AbstractIncomingMessage] = {}

    async def _open(self) -> AbstractChannel:
        if self._channel is None:
            tolerate_non_utf8()  # a letter with a non-UTF-8 header key would close the connection on every run
            self._connection = await connect(self._url, ssl_context=None, reconnect_interval=1.0, name="cmn-dlq")
            self._channel = await self._connection.channel(publisher_confirms=True)
        return self._channel

    async def read(self) -> Sequence[DeadLetter]:
        try:
            channel = await self._open()
            try:
                queue = await channel.get_queue(self._dead_letters, ensure=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return []  # never declared: nothing was ever dead-lettered there
            letters: list[DeadLetter] = []
            while len(letters) < self._limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letter = _letter(message, _ref(message, self._held))
                self._held[letter.ref] = message
                letters.append(letter)
        except BROKER_ERRORS as exc:
            raise BusUnavailableError(f"cannot read {self._dead_letters}: {exc}") from exc
        return letters

    async def republish(self, letter: DeadLetter, headers: Mapping[str, str]) -> None:
        message = aio_pika.Message(
            letter.body,
            headers=dict(headers),
            content_type=letter.content_type,
            correlation_id=letter.correlation_id,
            reply_to=letter.reply_to,
            message_id=self._held[letter.ref].message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            channel = await self._open()
            # Returns once the broker confirmed it; mandatory: an unroutable copy is an error, not lost.
            await channel.default_exchange.publish(message, routing_key=self.requests, mandatory=True)
        except BROKER_ERRORS as exc:
            raise BusUnavailableError(f"republish of {letter.ref} to {self.requests} not confirmed: {exc}") from exc

    async def remove(self, letter: DeadLetter) -> None:
        message = self._held.pop(letter.ref)
        await message.ack()

    async def keep(self, letter: DeadLetter) -> None:
        """Nothing to do: a queue gives a letter back in place (``aclose`` nacks it with requeue)."""

    async def aclose(self) -> None:
        held, self._held = self._held, {}
        try:
            for message in held.values():
                await message.nack(requeue=True)
        except BROKER_ERRORS:
            pass  # the channel is gone: the broker requeues whatever it still held for it
        finally:
            if self._connection is not None:
                await self._connection.close()
                self._connection = self._channel = None

    def __repr__(self) -> str:
        return f"<RabbitDeadLetters {self._dead_letters} -> {self.requests} [{len(self._held)} held]>"


def _letter(message: AbstractIncomingMessage, ref: str) -> DeadLetter:
    return DeadLetter(
        ref=ref,
        body=message.body,
        content_type=message.content_type or DEFAULT_CONTENT_TYPE,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        headers=text_headers(message.headers),
        timestamp_ms=timestamp_ms(message.timestamp),
        user_id=message.user_id,
        token=message,
    )


def _ref(message: AbstractIncomingMessage, taken: Mapping[str, object]) -> str:
    """The message id when it has one, else a digest of the body and correlation id (stable across
    reads); a name already taken in this read gets a suffix."""
    ref = message.message_id
    if not ref:
        digest = hashlib.sha256(message.body)
        digest.update((message.correlation_id or "").encode())
        ref = "m-" + digest.hexdigest()[:12]
    base, n = ref, 1
    while ref in taken:
        n += 1
        ref = f"{base}~{n}"
    return ref

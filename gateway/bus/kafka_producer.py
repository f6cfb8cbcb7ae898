"""One confirmed (acks=all) Kafka producer shared by a transport or requester for every topic it writes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.bus.base import OutboundMessage
from gateway.bus.kafka_records import KafkaOptions, KafkaPublishError, encode_headers, message_headers


class KafkaProducerLink:
    """One confirmed (acks=all) producer. ``send`` returns once the broker has the record."""

    def __init__(self, options: KafkaOptions, *, linger_ms: int = 2) -> None:
        self._options = options
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                # No enable_idempotence: Tansu rejects InitProducerId. linger batches replies, which
                # Tansu's memory store needs (it stalls under many one-record batches).
                producer = AIOKafkaProducer(
                    acks="all",
                    linger_ms=self._linger_ms,
                    enable_idempotence=False,
                    **self._options.client_kwargs(),
                )
                try:
                    await producer.start()
                except KafkaError as exc:
                    await producer.stop()
                    raise KafkaPublishError(f"cannot reach Kafka at {self._options.bootstrap}: {exc}") from exc
                self._producer = producer
            return self._producer

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: Mapping[str, str],
        partition: int | None = None,
    ) -> None:
        producer = self._producer or await self.start()
        try:
            # send() only enqueues; awaiting its future afterwards lets concurrent callers share batches.
            confirmed = await producer.send(topic, value, key=key, headers=encode_headers(headers), partition=partition)
            await confirmed
        except KafkaError as exc:
            raise KafkaPublishError(f"Kafka did not confirm the record for {topic}: {exc}") from exc

    async def send_message(self, message: OutboundMessage) -> None:
        producer = self._producer or await self.start()
        correlation = message.correlation_id
        key = message.key if message.key is not None else (correlation.encode() if correlation else None)
        headers = message_headers(message.content_type, correlation, message.headers)
        try:
            confirmed = await producer.send(message.destination, message.body, key=key, headers=headers)
            await confirmed
        except KafkaError as exc:
            raise KafkaPublishError(f"Kafka did not confirm the record for {message.destination}: {exc}") from exc

    async def partitions_for(self, topic: str) -> set[int]:
        """Partitions of ``topic``; asking for its metadata makes an auto-creating broker create it."""
        producer = self._producer or await self.start()
        return set(await producer.partitions_for(topic))

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def __repr__(self) -> str:
        state = "started" if self._producer is not None else "idle"
        return f"<KafkaProducerLink {self._options.bootstrap} acks=all {state}>"

"""The control channel over Kafka: topic ``cmn.control``, read by every replica with no group.

Each replica reads every partition of the topic directly (no consumer group, so every replica
sees every command), positioned at the end when it starts: commands published before a replica
started are not for it. Records carry ``reply_to`` and ``correlation_id`` headers as requests do;
answers go to the caller's reply topic (a requester's ``cmn.replies.<uuid>``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from gateway.bus.base import CONTROL, Handler
from gateway.bus.kafka.producer import KafkaProducerLink
from gateway.bus.kafka.records import CONTENT_TYPE, CORRELATION_ID, REPLY_TO, KafkaOptions, poll, to_delivery
from gateway.bus.kafka.requester import open_reader
from gateway.bus.kafka.security import PLAINTEXT, KafkaSecurity
from gateway.clock import Clock
from gateway.errors import BusUnavailableError

log = structlog.get_logger("cmn.bus.kafka")
JSON = "application/json"
# Every command carries the same key, so all land on one partition and every replica applies them
# in the order they were sent: ``breaker open`` then ``breaker reset`` must never arrive reversed,
# whatever the topic's partition count.
ORDER_KEY = b"cmn.control"


class KafkaControlChannel:
    """``ControlChannel`` over Kafka (see gateway.bus.base.ControlChannel)."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        *,
        clock: Clock,
        topic: str = CONTROL,
        security: KafkaSecurity = PLAINTEXT,
        fetch_max_wait_ms: int = 50,
    ) -> None:
        self._options = KafkaOptions(bootstrap, security, client_id="cmn-control")
        self._topic = topic
        self._clock = clock
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._producer = KafkaProducerLink(self._options, clock=clock)
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self.received = 0

    def __repr__(self) -> str:
        state = "receiving" if self._reader is not None else "idle"
        return f"<KafkaControlChannel {self._options.bootstrap} {self._topic} [{state}] received={self.received}>"

    async def start(self, handler: Handler) -> None:
        if self._consumer is not None:
            raise RuntimeError(f"{self!r} already started")
        try:
            self._consumer = await open_reader(
                self._options, self._producer, self._topic, fetch_max_wait_ms=self._fetch_max_wait_ms,
                from_beginning=False,
            )  # fmt: skip
        except KafkaError as exc:
            # Refused (no ACL on the topic) or gone while positioning: the caller retries (control/keeper.py).
            raise BusUnavailableError(f"Kafka refused the control channel {self._topic}: {exc!r}") from exc
        self._reader = asyncio.create_task(self._read(self._consumer, handler), name="kafka-control")

    async def _read(self, consumer: AIOKafkaConsumer, handler: Handler) -> None:
        while True:
            batch = await poll(
                consumer, timeout_ms=1000, max_records=16, clock=self._clock, failed="kafka_control_read_failed"
            )
            for records in batch.values():
                for record in records:
                    self.received += 1
                    try:
                        await handler(to_delivery(record))
                    except Exception:  # one bad command must not stop the reader
                        log.exception("kafka_control_handler_failed", position=f"{record.partition}/{record.offset}")

    async def publish(
        self, body: bytes, *, reply_to: str, correlation_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        all_headers = {**(headers or {}), REPLY_TO: reply_to, CORRELATION_ID: correlation_id, CONTENT_TYPE: JSON}
        await self._producer.send(self._topic, body, key=ORDER_KEY, headers=all_headers)

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        headers = {CONTENT_TYPE: JSON, **({CORRELATION_ID: correlation_id} if correlation_id else {})}
        await self._producer.send(reply_to, body, key=None, headers=headers)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        await self._producer.aclose()

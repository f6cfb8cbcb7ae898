"""The Kafka park tiers' relay: each record goes back to the requests topic once its tier's delay passed.

Kafka has no per-message TTL, so a consumer of its own (group ``<KAFKA_GROUP_ID>.park``) reads the
park topics ``cmn.requests.park.<delay>s`` and, for each record, waits until it is due (its
timestamp, the moment it was parked, plus the tier's delay), publishes it to the requests topic
(confirmed) and only then commits it. While it waits on a record it pauses that one partition, so
no further records of it are fetched, and every other partition, tier and the requests topic keep
flowing (the original's offset was committed as soon as its park was confirmed). Records of one
tier fall due in the order they were written, so waiting on the head of a partition is enough.

A relay that stops (drain, crash, rebalance) between the publish and the commit hands the record
back once more; the copy's park seal is accepted once (``Guard.resume``), so the second is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping
from typing import TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from gateway.bus.kafka.producer import KafkaProducerLink
from gateway.bus.kafka.records import KafkaOptions, decode_headers, poll
from gateway.bus.kafka.security import START_ERRORS
from gateway.clock import Clock
from gateway.errors import BusUnavailableError, MessageRejectedError

log = structlog.get_logger("cmn.bus.kafka.park")

Record: TypeAlias = ConsumerRecord[bytes, bytes]

RETRY_MAX = 5.0  # longest wait before publishing a due record again when Kafka did not confirm


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    def __init__(self, relay: ParkRelay) -> None:
        self._relay = relay

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._relay.stop_partitions(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        log.info("park_partitions_assigned", partitions=len(assigned))


class ParkRelay:
    def __init__(
        self,
        options: KafkaOptions,
        producer: KafkaProducerLink,
        *,
        tiers: Mapping[str, int],
        requests: str,
        group_id: str,
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
        fetch_max_wait_ms: int,
        clock: Clock,
    ) -> None:
        self._options = options
        self._producer = producer
        self._tiers = dict(tiers)  # topic -> delay in seconds
        self._requests = requests
        self._group_id = group_id
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._poll: asyncio.Task[None] | None = None
        self._relaying: dict[TopicPartition, asyncio.Task[None]] = {}
        self.relayed = 0

    async def start(self) -> None:
        for topic in self._tiers:
            await self._producer.partitions_for(topic)  # created now, so the subscription finds partitions
        consumer = AIOKafkaConsumer(
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            **self._options.client_kwargs(),
        )
        consumer.subscribe(sorted(self._tiers), listener=_Rebalance(self))
        try:
            await consumer.start()
        except START_ERRORS as exc:
            await consumer.stop()
            raise await self._options.start_error(exc) from exc
        self._consumer = consumer
        self._poll = asyncio.create_task(self._poll_loop(consumer), name="kafka-park-relay")

    async def _poll_loop(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await poll(
                consumer, timeout_ms=250, max_records=None, clock=self._clock, failed="park_relay_poll_failed"
            )
            for tp, records in batch.items():
                if records and tp not in self._relaying:
                    consumer.pause(tp)  # this partition waits on its head record; the others flow
                    self._relaying[tp] = asyncio.create_task(self._relay(consumer, tp, list(records)))

    async def _relay(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[Record]) -> None:
        try:
            delay = self._tiers.get(tp.topic, 0)
            for record in records:
                await self._until_due(record, delay)
                await self._forward(record)
                await self._commit(consumer, tp, record.offset + 1)
                self.relayed += 1
        except Exception:  # a bug here must not stop the tier for good: its records come again
            log.exception("park_relay_failed", topic=tp.topic, partition=tp.partition)
            if tp in consumer.assignment():
                with contextlib.suppress(KafkaError):  # else the next owner starts from the commit anyway
                    await consumer.seek_to_committed(tp)
        finally:
            self._relaying.pop(tp, None)
            if tp in consumer.assignment():
                consumer.resume(tp)

    async def _until_due(self, record: ConsumerRecord[bytes, bytes], delay: int) -> None:
        parked_ms = record.timestamp if record.timestamp is not None and record.timestamp > 0 else None
        now = self._clock.time()
        due = parked_ms / 1000 + delay if parked_ms is not None else now + delay
        if due > now:
            await self._clock.sleep(min(due - now, float(delay)))  # never longer than a tier's delay

    async def _forward(self, record: Record) -> None:
        headers = decode_headers(record.headers)
        wait = 0.1
        while True:
            try:
                await self._producer.send(self._requests, record.value or b"", key=record.key, headers=headers)
                return
            except MessageRejectedError as exc:
                # Refused for good (too large for the requests topic): nothing to hand back; drop it.
                log.error("park_record_refused", topic=record.topic, offset=record.offset, reason=exc.message)
                return
            except BusUnavailableError as exc:
                log.warning("park_relay_publish_failed", error=exc.message, retry_in=wait)
                await self._clock.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: OffsetAndMetadata(offset, "")})
        except KafkaError as exc:
            # The next commit of this partition covers this one; until then a restart relays it again.
            log.warning("park_relay_commit_failed", error=repr(exc), topic=tp.topic, partition=tp.partition)

    async def stop_partitions(self, partitions: Collection[TopicPartition]) -> None:
        """Stop relaying ``partitions`` (revoked): their uncommitted records go to the next owner."""
        tasks = [self._relaying[tp] for tp in partitions if tp in self._relaying]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def aclose(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
            self._poll = None
        await self.stop_partitions(list(self._relaying))
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def __repr__(self) -> str:
        return (
            f"<ParkRelay {sorted(self._tiers)} -> {self._requests} group={self._group_id}"
            f" [{len(self._relaying)} partitions waiting] relayed={self.relayed}>"
        )

"""The Kafka transport: requests from a consumer group, replies/telemetry/dead letters via one producer.

Each record runs its handler as a task, at most ``max_in_flight`` at once: when full, the
assigned partitions are paused, and resumed once a quarter of the slots are free again. Offsets are committed per
partition only up to the oldest unfinished record (``OffsetBook``), every ``commit_interval_ms``,
on partition revocation and on drain, so out-of-order completion never skips a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Collection, Mapping

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from gateway.bus.base import (
    DEAD_LETTERS,
    ERROR_HEADER,
    PUBLISH_TIMEOUT,
    REQUESTS,
    TELEMETRY,
    TOPIC_HEADER,
    Delivery,
    Handler,
    OutboundMessage,
    park_destination,
)
from gateway.bus.kafka.offsets import OffsetBook
from gateway.bus.kafka.park import ParkRelay
from gateway.bus.kafka.producer import DEFAULT_LINGER_MS, DEFAULT_MAX_REQUEST_SIZE, KafkaProducerLink
from gateway.bus.kafka.records import KafkaOptions, KafkaRecordRejectedError, KafkaUnavailableError, to_delivery
from gateway.bus.kafka.security import PLAINTEXT, START_ERRORS, KafkaSecurity
from gateway.clock import Clock

log = structlog.get_logger("cmn.bus.kafka")
# Longest wait before handling an unsettled record again: short enough that a drain (SIGTERM) that
# finds one waiting still finishes well inside a container's grace period.
UNSETTLED_RETRY_MAX = 5.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    def __init__(self, transport: KafkaTransport) -> None:
        self._transport = transport

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._transport._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self._transport._on_assigned(assigned)


class KafkaTransport:
    """``Transport`` over Kafka (any Kafka-protocol broker; tested against Tansu)."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        *,
        group_id: str = "cmn-gateway",
        max_in_flight: int = 256,
        topic: str = REQUESTS,
        session_timeout_ms: int = 10000,
        heartbeat_interval_ms: int = 3000,
        fetch_max_wait_ms: int = 5,
        security: KafkaSecurity = PLAINTEXT,
        commit_interval_ms: int = 75,
        linger_ms: int = DEFAULT_LINGER_MS,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        revoke_wait_ms: int | None = None,
        unsettled_retry_ms: int = 1000,
        publish_timeout: float = PUBLISH_TIMEOUT,
        park_delays: tuple[int, ...] = (),
        clock: Clock,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._options = KafkaOptions(bootstrap, security)
        self._group_id = group_id
        self._max_in_flight = max_in_flight
        self._resume_at = max_in_flight - max(1, max_in_flight // 4)
        self._topic = topic
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._commit_interval = commit_interval_ms / 1000
        # Waiting on revocation holds up the whole group's rebalance, so keep it well inside a session.
        self._revoke_wait = (revoke_wait_ms if revoke_wait_ms is not None else session_timeout_ms // 2) / 1000
        self._unsettled_retry = unsettled_retry_ms / 1000
        self._clock = clock
        self._producer = KafkaProducerLink(
            self._options,
            linger_ms=linger_ms,
            max_request_size=max_request_size,
            publish_timeout=publish_timeout,
            clock=self._clock,
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._handler: Handler | None = None
        self._offsets: OffsetBook[TopicPartition] = OffsetBook()
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._slot_free = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._poll_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._paused = False
        self._consuming = False
        self._joined = False
        self._closed = False
        self._telemetry_partition: int | None = None
        self._park_delays = park_delays
        self.park_relay: ParkRelay | None = None  # when park tiers are configured
        self.peak_in_flight = 0  # the most handlers ever running at once (for tests and metrics)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        if self._consumer is not None:
            raise RuntimeError("KafkaTransport already started")
        self._handler = handler
        if self._options.security.sasl and not self._options.security.tls:
            log.warning("kafka_sasl_without_tls", security=self._options.security.describe(), note="sent unencrypted")
        await self._producer.start()
        await self._producer.partitions_for(self._topic)  # subscribe finds no partitions until it exists
        consumer = AIOKafkaConsumer(
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group must not skip requests published before it joined
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            max_poll_records=self._max_in_flight,
            **self._options.client_kwargs(),
        )
        consumer.subscribe([self._topic], listener=_Rebalance(self))
        try:
            await consumer.start()
        except START_ERRORS as exc:
            await consumer.stop()
            raise await self._options.start_error(exc) from exc
        self._consumer = consumer
        self._consuming = True
        self._poll_task = asyncio.create_task(self._poll_loop(consumer), name="kafka-poll")
        self._commit_task = asyncio.create_task(self._commit_loop(), name="kafka-commit")
        if self._park_delays:
            self.park_relay = ParkRelay(
                self._options, self._producer,
                tiers={park_destination(self._topic, d): d for d in self._park_delays},
                requests=self._topic, group_id=f"{self._group_id}.park",
                session_timeout_ms=self._session_timeout_ms, heartbeat_interval_ms=self._heartbeat_interval_ms,
                fetch_max_wait_ms=self._fetch_max_wait_ms, clock=self._clock,
            )  # fmt: skip
            await self.park_relay.start()

    async def drain(self) -> None:
        """Stop fetching, wait for every handler in flight, commit what they settled."""
        self._consuming = False
        self._joined = False
        await self._stop_relay()
        await _cancel(self._poll_task)
        self._poll_task = None
        self._pause()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self._commit()

    async def aclose(self) -> None:
        """Stop at once: handlers still running are cancelled (their records come again)."""
        if self._closed:
            return
        self._closed = True
        self._consuming = False
        await self._stop_relay()
        await _cancel(self._poll_task)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await _cancel(self._commit_task)
        await self._commit()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        await self._producer.aclose()

    async def _stop_relay(self) -> None:
        relay, self.park_relay = self.park_relay, None
        if relay is not None:
            await relay.aclose()

    async def __aenter__(self) -> KafkaTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def ready(self) -> bool:
        """Consuming and a member of the group (possibly with no partitions: more workers than
        partitions is a healthy state); False while a rebalance is in progress."""
        return self._consuming and self._joined

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def paused(self) -> bool:
        """Fetching is paused because ``max_in_flight`` handlers are running (or draining)."""
        return self._paused

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- publishing -------------------------------------------------------------------------
    async def publish(self, message: OutboundMessage) -> None:
        await self._producer.send_message(message)

    async def publish_telemetry(self, event_type: str, body: bytes, headers: Mapping[str, str]) -> None:
        all_headers = {**headers, "type": event_type, "content-type": "application/json"}
        partition = self._telemetry_partition
        if partition is None:
            partition = self._telemetry_partition = await self._pick_telemetry_partition()
        await self._producer.send(TELEMETRY, body, key=None, headers=all_headers, partition=partition)

    async def _pick_telemetry_partition(self) -> int:
        # One partition per worker: its events stay in order and share batches (keyless records
        # would be spread over every partition in many small batches, which Tansu handles badly).
        partitions = sorted(await self._producer.partitions_for(TELEMETRY))
        return partitions[random.randrange(len(partitions))]  # nosec B311  # spreads load, not a secret

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        headers = {**delivery.headers, ERROR_HEADER: reason, TOPIC_HEADER: delivery.source or self._topic}
        key = delivery.correlation_id.encode() if delivery.correlation_id else None
        await self._producer.send(DEAD_LETTERS, delivery.body, key=key, headers=headers)

    async def park(self, delivery: Delivery, destination: str, headers: Mapping[str, str]) -> None:
        # The record's headers carry its addressing (reply_to, correlation_id, content-type) already.
        key = delivery.correlation_id.encode() if delivery.correlation_id else None
        await self._producer.send(destination, delivery.body, key=key, headers={**delivery.headers, **headers})

    async def settle(self, delivery: Delivery) -> None:
        partition, offset = delivery.token
        self._offsets.settle(partition, offset)

    # -- consuming --------------------------------------------------------------------------
    async def _poll_loop(self, consumer: AIOKafkaConsumer) -> None:
        backoff = 0.05
        while self._consuming:
            try:
                await self._poll_once(consumer)
                backoff = 0.05
            except KafkaError as exc:
                # aiokafka reconnects by itself; the loop only has to outlive the error.
                log.warning("kafka_poll_failed", error=repr(exc), retry_in=backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except UnicodeDecodeError:
                # A record aiokafka cannot decode (a header key that is not UTF-8, which any foreign
                # producer can write) fails every fetch of its partition: walk past it.
                await self._skip_unreadable(consumer)
            except Exception:  # a bug here must not stop consumption for good
                log.exception("kafka_poll_crashed", retry_in=backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _poll_once(self, consumer: AIOKafkaConsumer) -> None:
        if len(self._tasks) >= self._max_in_flight:
            # Pausing stops new fetches but keeps what is buffered, as long as getmany is not
            # called while paused; so wait here instead of polling. Resume only once a quarter
            # of the slots are free: resuming per freed slot would fetch one record at a time.
            self._pause()
            while len(self._tasks) > self._resume_at:
                self._slot_free.clear()
                await self._slot_free.wait()
        self._resume()
        free = self._max_in_flight - len(self._tasks)
        batch = await consumer.getmany(timeout_ms=250, max_records=free)
        for tp, records in batch.items():
            for record in records:
                self._dispatch(record, tp)

    async def _skip_unreadable(self, consumer: AIOKafkaConsumer) -> None:
        """Read each assigned partition one record at a time from its position (the fetch that
        failed is dropped by the seek): readable records are dispatched as usual, the first that
        cannot be decoded is noted in the dead-letter topic, settled and skipped. Bounded by the
        free handler slots; a walk cut short resumes when the next fetch fails again."""
        for tp in consumer.assignment():
            offset = await consumer.position(tp)
            consumer.seek(tp, offset)
            while self._consuming and len(self._tasks) < self._max_in_flight:
                try:
                    batch = await consumer.getmany(tp, timeout_ms=250, max_records=1)
                except UnicodeDecodeError:
                    await self._unreadable(tp, offset)
                    consumer.seek(tp, offset + 1)
                    break
                records = batch.get(tp)
                if not records:
                    break
                self._dispatch(records[0], tp)
                offset = records[0].offset + 1

    async def _unreadable(self, tp: TopicPartition, offset: int) -> None:
        log.error("kafka_record_unreadable", topic=tp.topic, partition=tp.partition, offset=offset)
        note = {
            ERROR_HEADER: "invalid_request: unreadable Kafka record (a header key is not UTF-8)",
            TOPIC_HEADER: tp.topic,
            "x-cmn-partition": str(tp.partition),
            "x-cmn-offset": str(offset),
        }
        try:
            await self._producer.send(DEAD_LETTERS, b"", key=None, headers=note)
        except (KafkaUnavailableError, KafkaRecordRejectedError):
            log.exception("kafka_dead_letter_failed", topic=tp.topic, partition=tp.partition, offset=offset)
        self._offsets.begin(tp, offset)
        self._offsets.settle(tp, offset)

    def _dispatch(self, record: ConsumerRecord[bytes, bytes], tp: TopicPartition) -> None:
        assert self._handler is not None
        delivery = to_delivery(record, tp)
        self._offsets.begin(tp, record.offset)
        task = asyncio.create_task(self._run(self._handler, delivery))
        self._tasks[task] = tp
        self.peak_in_flight = max(self.peak_in_flight, len(self._tasks))
        task.add_done_callback(self._finished)

    async def _run(self, handler: Handler, delivery: Delivery) -> None:
        retry = 0
        while True:
            # The handler is awaited here, not through a helper: a frame fewer on every resume of the
            # request (issue 14).
            try:
                await handler(delivery)
            except Exception:
                # The worker's guard (gateway.worker.guarded) parks a crash in the dead letters; a handler
                # that raises anyway leaves the record unsettled, to be handled again like any other.
                log.exception("kafka_handler_raised", token=repr(delivery.token))
            while self._offsets.is_pending(*delivery.token):
                # Left unsettled on purpose (its reply or telemetry event was not confirmed). Kafka
                # would only deliver it again after a rebalance, and until then this partition's
                # commits could not pass it; so handle it again here, as a redelivery would. When
                # draining, or once the partition is gone (forgotten), its next owner or run does.
                if not self._consuming:
                    log.warning("kafka_delivery_left_unsettled", token=repr(delivery.token))
                    return
                delay = min(self._unsettled_retry * 2**retry, UNSETTLED_RETRY_MAX)
                retry += 1
                log.warning("kafka_delivery_unsettled_again", token=repr(delivery.token), attempt=retry, after=delay)
                await self._clock.sleep(delay)
                if self._consuming and self._offsets.is_pending(*delivery.token):
                    break  # handle it again
            else:
                return  # settled

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._slot_free.set()

    def _pause(self) -> None:
        consumer = self._consumer
        if consumer is not None and not self._paused:
            consumer.pause(*consumer.assignment())
            self._paused = True

    def _resume(self) -> None:
        consumer = self._consumer
        if consumer is not None and self._paused:
            consumer.resume(*consumer.assignment())
            self._paused = False

    # -- committing -------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await self._clock.sleep(self._commit_interval)
            try:
                await self._commit()
            except Exception:  # a bug here must not stop committing for good
                log.exception("kafka_commit_crashed")

    async def _commit(self, only: Collection[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            assigned = consumer.assignment()
            due = {tp: o for tp, o in self._offsets.committable().items() if tp in assigned}
            if only is not None:
                due = {tp: o for tp, o in due.items() if tp in only}
            if not due:
                return
            try:
                await consumer.commit(due)
            except KafkaError as exc:
                # A failed commit only means more redelivery later; the next round tries again.
                log.warning("kafka_commit_failed", error=repr(exc), partitions=len(due))
                return
            self._offsets.mark_committed(due)

    async def _on_revoked(self, revoked: Collection[TopicPartition]) -> None:
        self._joined = False
        revoked = set(revoked)
        running = [task for task, tp in self._tasks.items() if tp in revoked]
        if running:
            await asyncio.wait(running, timeout=self._revoke_wait)
        await self._commit(revoked)
        self._offsets.forget(revoked)

    def _on_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self._joined = True
        consumer = self._consumer
        if consumer is not None and self._paused and assigned:
            consumer.pause(*assigned)
        log.info("kafka_partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    # -- metrics ----------------------------------------------------------------------------
    def lag(self) -> dict[int, int]:
        """Records behind the partition's end, by partition number (from the last fetch)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        result: dict[int, int] = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            held = self._offsets.get(tp)
            position = held.next_offset if held is not None else None
            if highwater is not None and position is not None:
                result[tp.partition] = max(0, highwater - position)
        return result

    def __repr__(self) -> str:
        partitions = len(self._consumer.assignment()) if self._consumer is not None else 0
        state = "consuming" if self._consuming else ("closed" if self._closed else "idle")
        paused = ", paused" if self._paused else ""
        return (
            f"<KafkaTransport {self._options.bootstrap} {self._topic} group={self._group_id} {state}{paused} "
            f"[{partitions} partitions | {len(self._tasks)}/{self._max_in_flight} in flight]>"
        )


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

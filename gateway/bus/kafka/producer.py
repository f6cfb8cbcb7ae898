"""One confirmed (acks=all) Kafka producer shared by a transport or requester for every topic it writes."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from gateway.bus.base import PUBLISH_TIMEOUT, OutboundMessage
from gateway.bus.expiry import Expiry
from gateway.bus.kafka.records import (
    KafkaHeaders,
    KafkaOptions,
    KafkaRecordRejectedError,
    KafkaUnavailableError,
    encode_headers,
    message_headers,
)
from gateway.bus.kafka.security import START_ERRORS
from gateway.clock import Clock

# Replies carry upstream bodies up to MAX_RESPONSE_BYTES (10 MiB by default), base64-encoded when
# binary (4/3 larger), plus the envelope; aiokafka's own default (1 MiB) would refuse them.
DEFAULT_MAX_REQUEST_SIZE = 16 * 1024 * 1024

# A batch per partition holds this many bytes before a writer must wait for it to be sent. aiokafka's
# default (16 KiB, some 25 telemetry events) filled while the previous acks=all write was in flight,
# and every further send then waited in ``asyncio.wait`` for the batch to drain and tried again: 20 %
# of the gateway's produce CPU under load (issue 14, docs/performance.md). aiokafka keeps one produce
# request per broker in flight, so a larger batch means fewer, larger writes of the records that wait
# anyway; memory stays bounded by what is in flight (MAX_IN_FLIGHT requests' replies and events).
DEFAULT_MAX_BATCH_SIZE = 1024 * 1024

# How long a record waits for others to join its batch: not at all. aiokafka keeps one produce request
# per broker in flight, so records that come while one is out wait for it and leave together anyway
# (under load batches fill by themselves); lingering only made a lone record wait for a timer. It
# was 2 ms here and 1 ms in the requester: against Tansu, one record's acks=all confirm took 3.5 ms
# at p50 with 2 ms, 2.4 ms with 1 ms and 0.75 ms with none, at 50 records/s (issue 14, docs/performance.md).
DEFAULT_LINGER_MS = 0

# A topic not written for this long leaves the set whose metadata is kept fresh (see __init__).
DEFAULT_TOPIC_IDLE_EXPIRY = 60.0
# How often a write to a tracked topic looks for idle ones: not per record, it is the hot path.
PRUNE_EVERY = 1.0

# Errors that no retry of the same record can fix.
PERMANENT = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
)


class KafkaProducerLink:
    """One confirmed (acks=all) producer. ``send`` returns once the broker has the record, or raises
    ``KafkaUnavailableError`` (a ``BusUnavailableError``) after ``publish_timeout`` seconds: aiokafka
    retries inside that bound (reconnects, metadata, leader moves), and nobody above retries it again."""

    def __init__(
        self,
        options: KafkaOptions,
        *,
        linger_ms: int = DEFAULT_LINGER_MS,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_tracked_topics: int = 512,
        topic_idle_expiry: float = DEFAULT_TOPIC_IDLE_EXPIRY,
        publish_timeout: float = PUBLISH_TIMEOUT,
        clock: Clock,
    ) -> None:
        self._options = options
        self._publish_timeout = publish_timeout
        self._expiry = Expiry(publish_timeout)
        self._linger_ms = linger_ms
        self._max_request_size = max_request_size
        self._max_batch_size = max_batch_size
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        # Topics whose metadata aiokafka keeps fresh, least recently written first, with when they
        # were last written. Bounded in number (a worker writes to one reply topic per client it ever
        # served, and every metadata request carries the whole list) and in idle time: a metadata
        # request for a topic makes an auto-creating broker create it again, so a reply topic its
        # client deleted on close would come back with every refresh while it stays tracked.
        self._tracked: OrderedDict[str, float] = OrderedDict()
        self._max_tracked = max_tracked_topics
        self._idle_expiry = topic_idle_expiry
        self._clock = clock
        self._next_prune = 0.0
        self._closed = False

    async def start(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._closed:
                raise KafkaUnavailableError("the Kafka producer is closed")
            if self._producer is None:
                # No enable_idempotence: Tansu rejects InitProducerId. Batches form while a produce
                # request is in flight (see DEFAULT_LINGER_MS), which Tansu's memory store needs under
                # load (it stalls under many one-record batches).
                producer = AIOKafkaProducer(
                    acks="all",
                    linger_ms=self._linger_ms,
                    max_request_size=self._max_request_size,
                    max_batch_size=self._max_batch_size,
                    enable_idempotence=False,
                    **self._options.client_kwargs(),
                )
                try:
                    await producer.start()
                except START_ERRORS as exc:
                    await producer.stop()
                    raise await self._options.start_error(exc) from exc
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
        await self._produce(topic, value, key, encode_headers(headers), partition)

    async def send_message(self, message: OutboundMessage) -> None:
        correlation = message.correlation_id
        key = message.key if message.key is not None else (correlation.encode() if correlation else None)
        headers = message_headers(message.content_type, correlation, message.headers)
        await self._produce(message.destination, message.body, key, headers, None)

    async def _produce(
        self, topic: str, value: bytes, key: bytes | None, headers: KafkaHeaders, partition: int | None
    ) -> None:
        try:
            with self._expiry.bound():  # asyncio.timeout's semantics, one timer for every send (bus/expiry.py)
                await self._produce_confirmed(topic, value, key, headers, partition)
        except TimeoutError as exc:
            detail = f"Kafka did not confirm the record for {topic} in {self._publish_timeout} s"
            raise KafkaUnavailableError(detail) from exc

    async def _produce_confirmed(
        self, topic: str, value: bytes, key: bytes | None, headers: KafkaHeaders, partition: int | None
    ) -> None:
        producer = self._producer or await self.start()
        try:
            now = self._clock.monotonic()
            if topic not in self._tracked:
                await self._track(producer, topic, now)
            else:
                self._tracked[topic] = now
                self._tracked.move_to_end(topic)
                if now >= self._next_prune and self._prune(now):
                    await producer.client.set_topics(list(self._tracked))
            # send() only enqueues; awaiting its future afterwards lets concurrent callers share batches.
            confirmed = await producer.send(topic, value, key=key, headers=headers, partition=partition)
            await confirmed
        except PERMANENT as exc:
            raise KafkaRecordRejectedError(f"Kafka refused a {len(value)}-byte record for {topic}: {exc}") from exc
        except KafkaError as exc:
            raise KafkaUnavailableError(f"Kafka did not confirm the record for {topic}: {exc}") from exc

    async def _track(self, producer: AIOKafkaProducer, topic: str, now: float) -> None:
        # aiokafka refreshes metadata only for topics it tracks. A topic it merely saw in the first
        # (all-topics, on Tansu) metadata is dropped by the next refresh, stranding its batches
        # until the request timeout; so register every topic we write before the first send.
        # Idle and surplus topics are dropped here too, with the one metadata update a new topic costs.
        self._tracked[topic] = now
        if self._prune(now):
            await producer.client.set_topics(list(self._tracked))
        else:
            await producer.client.add_topic(topic)

    def _prune(self, now: float) -> bool:
        """Drop the surplus and the idle topics, oldest first (the newest always stays); True if any."""
        self._next_prune = now + PRUNE_EVERY
        dropped = False
        while len(self._tracked) > 1:
            oldest, written = next(iter(self._tracked.items()))
            if len(self._tracked) <= self._max_tracked and now - written <= self._idle_expiry:
                break
            del self._tracked[oldest]
            dropped = True
        return dropped

    @property
    def tracked_topics(self) -> list[str]:
        return list(self._tracked)

    async def partitions_for(self, topic: str) -> set[int]:
        """Partitions of ``topic``; asking for its metadata makes an auto-creating broker create it."""
        producer = self._producer or await self.start()
        try:
            if topic not in self._tracked:
                await self._track(producer, topic, self._clock.monotonic())
            return set(await producer.partitions_for(topic))
        except KafkaError as exc:
            raise KafkaUnavailableError(f"no partitions for topic {topic} (does it exist?): {exc!r}") from exc

    async def aclose(self) -> None:
        self._closed = True
        self._tracked.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._producer is not None else "idle")
        return f"<KafkaProducerLink {self._options.bootstrap} acks=all {state}, {len(self._tracked)} topics>"

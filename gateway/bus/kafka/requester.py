"""The client side over Kafka: send requests with a reply topic of our own, read replies and telemetry.

Reply and telemetry readers use no consumer group: they are assigned every partition of their
topic directly, so they start at once (no group join) and never commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ConsumerStoppedError, KafkaError

from gateway.bus.base import REQUESTS, TELEMETRY, ReplyCallback, ReplyMessage
from gateway.bus.kafka.producer import DEFAULT_LINGER_MS, DEFAULT_MAX_REQUEST_SIZE, KafkaProducerLink
from gateway.bus.kafka.records import (
    CONTENT_TYPE,
    CORRELATION_ID,
    DEFAULT_CONTENT_TYPE,
    REPLY_TO,
    KafkaOptions,
    decode_headers,
    read_past_unreadable,
)
from gateway.bus.kafka.security import PLAINTEXT, START_ERRORS, KafkaSecurity
from gateway.clock import Clock

log = structlog.get_logger("cmn.bus.kafka")
DELETE_TIMEOUT = 5.0  # seconds for each step of deleting the reply topic on close


async def open_reader(
    options: KafkaOptions,
    producer: KafkaProducerLink,
    topic: str,
    *,
    fetch_max_wait_ms: int,
    from_beginning: bool,
) -> AIOKafkaConsumer:
    """A group-less consumer on every partition of ``topic``, positioned before it returns, so a
    record produced after this call is never missed."""
    partitions = [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **options.client_kwargs(),
    )
    try:
        await consumer.start()
    except START_ERRORS as exc:
        await consumer.stop()
        raise await options.start_error(exc) from exc
    try:
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


class KafkaRequester:
    """``Requester`` over Kafka: requests to ``cmn.requests`` with header ``reply_to`` = our reply topic."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        *,
        reply_topic: str | None = None,
        topic: str = REQUESTS,
        fetch_max_wait_ms: int = 5,
        linger_ms: int = DEFAULT_LINGER_MS,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        security: KafkaSecurity = PLAINTEXT,
        delete_reply_topic: bool | None = None,
        clock: Clock,
    ) -> None:
        self._options = KafkaOptions(bootstrap, security, client_id="cmn-client")
        self._reply_topic = reply_topic or f"cmn.replies.{uuid.uuid4().hex}"
        # A topic named for this client alone is deleted when it closes (else one is left behind per
        # client ever started); a topic the caller chose may be shared, so it stays unless asked.
        self._delete_reply_topic = reply_topic is None if delete_reply_topic is None else delete_reply_topic
        self._topic = topic
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._clock = clock
        self._producer = KafkaProducerLink(
            self._options, linger_ms=linger_ms, max_request_size=max_request_size, clock=self._clock
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._streams: set[KafkaTelemetryStream] = set()

    @property
    def reply_topic(self) -> str:
        return self._reply_topic

    @property
    def reply_address(self) -> str | None:
        return self._reply_topic

    @property
    def destination(self) -> str:
        return self._topic

    async def start(self, on_reply: ReplyCallback) -> None:
        if self._consumer is not None:
            raise RuntimeError("KafkaRequester already started")
        self._consumer = await open_reader(
            self._options,
            self._producer,
            self._reply_topic,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            from_beginning=False,
        )
        self._reader = asyncio.create_task(self._read(self._consumer, on_reply), name="kafka-replies")

    async def send(self, body: bytes, *, content_type: str, correlation_id: str, headers: Mapping[str, str]) -> None:
        all_headers = {**headers, REPLY_TO: self._reply_topic, CORRELATION_ID: correlation_id}
        all_headers[CONTENT_TYPE] = content_type
        await self._producer.send(self._topic, body, key=correlation_id.encode(), headers=all_headers)

    def telemetry(self, *, from_beginning: bool = False) -> KafkaTelemetryStream:
        stream = KafkaTelemetryStream(
            self._options,
            self._producer,
            from_beginning=from_beginning,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            on_close=self._streams.discard,
        )
        self._streams.add(stream)
        return stream

    async def _read(self, consumer: AIOKafkaConsumer, on_reply: ReplyCallback) -> None:
        backoff = 0.05
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=1000)
                backoff = 0.05
            except UnicodeDecodeError:  # a record aiokafka cannot decode: step past it
                await read_past_unreadable(
                    consumer, lambda r: self._deliver(r.value or b"", decode_headers(r.headers), on_reply)
                )
                continue
            except KafkaError as exc:
                log.warning("kafka_reply_read_failed", error=repr(exc), retry_in=backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except Exception:  # the reader must outlive a bug; replies would stop for good
                log.exception("kafka_reply_reader_crashed", retry_in=backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for records in batch.values():
                for record in records:
                    self._deliver(record.value or b"", decode_headers(record.headers), on_reply)

    @staticmethod
    def _deliver(body: bytes, headers: dict[str, str], on_reply: ReplyCallback) -> None:
        reply = ReplyMessage(
            body=body,
            content_type=headers.get(CONTENT_TYPE) or DEFAULT_CONTENT_TYPE,
            correlation_id=headers.get(CORRELATION_ID) or None,
            headers=headers,
        )
        try:
            on_reply(reply)
        except Exception:  # one bad reply callback must not stop the reader
            log.exception("kafka_reply_callback_failed", correlation_id=reply.correlation_id)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for stream in list(self._streams):
            await stream.aclose()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        await self._producer.aclose()
        if consumer is not None and self._delete_reply_topic:
            await self._delete_topic(self._reply_topic)

    async def _delete_topic(self, topic: str) -> None:
        """Best effort: a broker that refuses (ACLs, deletion disabled) leaves the topic, with a warning.

        A reply still on its way (a request answered after this client closed) makes an
        auto-creating broker create the topic again; gateways stop keeping its metadata fresh
        after a minute idle, so it does not come back by itself after that.
        """
        admin = AIOKafkaAdminClient(**self._options.client_kwargs())
        try:
            await asyncio.wait_for(admin.start(), DELETE_TIMEOUT)
            response = await asyncio.wait_for(admin.delete_topics([topic]), DELETE_TIMEOUT)
            errors = [code for _, code in getattr(response, "topic_error_codes", []) if code]
            if errors:
                log.warning("kafka_reply_topic_not_deleted", topic=topic, error_codes=errors)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("kafka_reply_topic_not_deleted", topic=topic, error=repr(exc))
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()

    async def __aenter__(self) -> KafkaRequester:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "reading" if self._reader is not None else "idle"
        return f"<KafkaRequester {self._options.bootstrap} {self._topic} replies={self._reply_topic} {state}>"


class KafkaTelemetryStream:
    """Raw telemetry event bodies from ``cmn.telemetry`` (every partition, no group)."""

    def __init__(
        self,
        options: KafkaOptions,
        producer: KafkaProducerLink,
        *,
        from_beginning: bool,
        fetch_max_wait_ms: int,
        topic: str = TELEMETRY,
        on_close: collections.abc.Callable[[KafkaTelemetryStream], None] | None = None,
    ) -> None:
        self._options = options
        self._producer = producer
        self._from_beginning = from_beginning
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._topic = topic
        self._on_close = on_close
        self._consumer: AIOKafkaConsumer | None = None
        self._buffer: collections.deque[bytes] = collections.deque()
        self._closed = False

    async def start(self) -> None:
        """Position the reader now (else at the first ``__anext__``): events after this are seen."""
        if self._consumer is None:
            self._consumer = await open_reader(
                self._options,
                self._producer,
                self._topic,
                fetch_max_wait_ms=self._fetch_max_wait_ms,
                from_beginning=self._from_beginning,
            )

    def __aiter__(self) -> KafkaTelemetryStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        while not self._buffer:
            try:
                batch = await consumer.getmany(timeout_ms=1000)
            except ConsumerStoppedError:
                raise StopAsyncIteration from None  # closed from another task while waiting
            except UnicodeDecodeError:  # a record aiokafka cannot decode: step past it
                await read_past_unreadable(consumer, lambda r: self._buffer.append(r.value or b""))
                continue
            for records in batch.values():
                self._buffer.extend(record.value or b"" for record in records)
        return self._buffer.popleft()

    async def aclose(self) -> None:
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        if self._on_close is not None:
            self._on_close(self)

    def __repr__(self) -> str:
        where = "beginning" if self._from_beginning else "end"
        return f"<KafkaTelemetryStream {self._topic} from {where}, {len(self._buffer)} buffered>"

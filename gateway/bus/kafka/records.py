"""Kafka record <-> broker-neutral message conversions and client options shared by the Kafka classes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import ConsumerRecord

from gateway.bus.base import Delivery
from gateway.bus.kafka.security import PLAINTEXT, START_ERRORS, KafkaSecurity, login_refused
from gateway.clock import Clock
from gateway.errors import BusUnavailableError, MessageRejectedError

log = structlog.get_logger("cmn.bus.kafka")

DEFAULT_CONTENT_TYPE = "application/json"
CONTENT_TYPE = "content-type"
CORRELATION_ID = "correlation_id"
REPLY_TO = "reply_to"
PROBE_TIMEOUT_MS = 5000  # the one connection that finds out why a client could not start

KafkaHeaders = list[tuple[str, bytes]]


class KafkaUnavailableError(BusUnavailableError):
    """Kafka could not be reached, or did not confirm a produce (acks=all) in time, reconnects
    included. A request whose reply hits this stays unsettled and comes again."""


class KafkaLoginRefusedError(KafkaUnavailableError):
    """Kafka refused the SASL login (wrong username or password, or the mechanism not enabled)."""


class KafkaRecordRejectedError(MessageRejectedError):
    """Kafka refused this record for good (too large for the producer or broker, an invalid or
    forbidden topic): sending the same record again cannot succeed."""


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """Connection options every Kafka client of ours shares."""

    bootstrap: str
    security: KafkaSecurity = PLAINTEXT
    client_id: str = "cmn-gateway"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every aiokafka producer, consumer and admin client we create."""
        return {"bootstrap_servers": self.bootstrap, "client_id": self.client_id, **self.security.client_kwargs()}

    async def start_error(self, exc: BaseException) -> KafkaUnavailableError:
        """The error for a client that could not start; it names the login, never the password."""
        where = f"Kafka at {self.bootstrap} ({self.security.describe()})"
        if self.security.sasl and isinstance(exc, KafkaConnectionError):
            exc = await self._probe_login() or exc
        if login_refused(self.security, exc):
            return KafkaLoginRefusedError(
                f"{where} refused the login: wrong username or password, or the mechanism is not enabled "
                f"[{type(exc).__name__}]"
            )
        return KafkaUnavailableError(f"cannot reach {where}: {exc}")

    async def _probe_login(self) -> BaseException | None:
        """aiokafka reports any failed bootstrap as "Unable to bootstrap" and only logs why; one direct
        connection to the first bootstrap server (the same handshake and login) finds out why."""
        host, _, port = self.bootstrap.split(",")[0].strip().rpartition(":")
        try:
            connection = await create_conn(
                host, int(port), client_id=self.client_id, request_timeout_ms=PROBE_TIMEOUT_MS,
                **self.security.client_kwargs(),
            )  # fmt: skip
        except (*START_ERRORS, OSError, TimeoutError) as exc:
            return exc
        connection.close()
        return None


def encode_headers(headers: Mapping[str, str]) -> KafkaHeaders:
    return [(name, value.encode()) for name, value in headers.items()]


def decode_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    # A bad header byte must not make the record unreadable: replace it, the pipeline decides.
    return {name: (value or b"").decode("utf-8", errors="replace") for name, value in headers}


def message_headers(content_type: str, correlation_id: str | None, extra: Mapping[str, str]) -> KafkaHeaders:
    """Headers of a produced record; content-type and correlation_id win over same-named extras."""
    headers = dict(extra)
    headers[CONTENT_TYPE] = content_type
    if correlation_id is not None:
        headers[CORRELATION_ID] = correlation_id
    return encode_headers(headers)


def to_delivery(record: ConsumerRecord[bytes, bytes], tp: TopicPartition | None = None) -> Delivery:
    """``tp``: the record's partition when the caller has it already (a fetch is grouped by partition)."""
    headers = decode_headers(record.headers)
    return Delivery(
        body=record.value if record.value is not None else b"",
        content_type=headers.get(CONTENT_TYPE) or DEFAULT_CONTENT_TYPE,
        reply_to=headers.get(REPLY_TO) or None,
        correlation_id=headers.get(CORRELATION_ID) or None,
        headers=headers,
        transport="kafka",
        timestamp_ms=record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None,
        source=record.topic,
        position=f"{record.topic}/{record.partition}/{record.offset}",
        token=(tp if tp is not None else TopicPartition(record.topic, record.partition), record.offset),
    )


# Records read one at a time, at most, before handing back to the caller's own loop.
UNREADABLE_WALK_LIMIT = 500


async def read_past_unreadable(consumer: Any, on_record: Callable[[ConsumerRecord[Any, Any]], None]) -> int:
    """aiokafka fails a whole fetch, every time, on a record whose header key is not UTF-8 (any
    producer can write one), which would stall a reader for good. Read each assigned partition one
    record at a time from its position, hand the readable ones on, and step past the first that
    cannot be decoded. Returns how many were stepped past. For group-less readers (the SDK's reply
    and telemetry readers); the gateway's consumer dead-letters a note of such a record instead."""
    skipped = 0
    for tp in consumer.assignment():
        offset = await consumer.position(tp)
        consumer.seek(tp, offset)
        for _ in range(UNREADABLE_WALK_LIMIT):
            try:
                batch = await consumer.getmany(tp, timeout_ms=250, max_records=1)
            except UnicodeDecodeError:
                log.warning("kafka_record_unreadable", topic=tp.topic, partition=tp.partition, offset=offset)
                consumer.seek(tp, offset + 1)
                skipped += 1
                break
            records = batch.get(tp)
            if not records:
                break
            on_record(records[0])
            offset = records[0].offset + 1
    return skipped


async def readable_batch(consumer: Any) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
    """What ``getmany`` would have returned, by partition, past a record aiokafka cannot decode (skipped):
    for a reader's poll loop that caught the ``UnicodeDecodeError``."""
    found: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}

    def keep(record: ConsumerRecord[Any, Any]) -> None:
        found.setdefault(TopicPartition(record.topic, record.partition), []).append(record)

    await read_past_unreadable(consumer, keep)
    return found


Batch = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]


async def poll(consumer: Any, *, timeout_ms: int, max_records: int | None, clock: Clock, failed: str) -> Batch:
    """One ``getmany`` for a long-lived reader (the control channel, the park relay), never raising: a
    record aiokafka cannot decode (a header key that is not UTF-8; anyone who may write the topic can
    write one, and it would end the reader) is stepped past; a broker error is logged as ``failed`` and
    retried with capped exponential backoff."""
    backoff = 0.05
    while True:
        try:
            batch: Batch = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
            return batch
        except UnicodeDecodeError:
            return await readable_batch(consumer)
        except KafkaError as exc:
            log.warning(failed, error=repr(exc), retry_in=backoff)
            await clock.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

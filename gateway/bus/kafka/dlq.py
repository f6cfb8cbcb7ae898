"""The Kafka dead-letter topic as an operator's queue, read from the ``cmn-dlq`` group's position.

``read`` fetches every record from the group's committed position (the beginning when none) up to
the end offsets taken when it starts, and commits nothing. A record leaves the queue when the group
commits past it, which happens only once its republish (or its copy to the tail, for a record kept
while later ones left) is confirmed, and only over a run of records that all left: a partition's
committed position never passes a record still in the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from gateway.bus.base import DEAD_LETTERS, ERROR_HEADER, TOPIC_HEADER
from gateway.bus.dead_letters import DLQ_GROUP, DeadLetter
from gateway.bus.kafka.producer import KafkaProducerLink
from gateway.bus.kafka.records import (
    CONTENT_TYPE,
    CORRELATION_ID,
    DEFAULT_CONTENT_TYPE,
    REPLY_TO,
    KafkaOptions,
    decode_headers,
)
from gateway.bus.kafka.security import PLAINTEXT, KafkaSecurity
from gateway.clock import Clock
from gateway.errors import BusUnavailableError

FETCH_MAX_WAIT_MS = 50
EMPTY_FETCH_MS = 150  # how long a fetch waits for records before the topic counts as read
FETCH_RECORDS = 500  # records taken from the consumer at once
READ_LIMIT = 100_000  # letters held at once; a larger topic is worked through in several runs


class KafkaDeadLetters:
    """``DeadLetterQueue`` over ``cmn.requests.dlq``, republishing to ``requests``."""

    def __init__(
        self,
        bootstrap: str,
        *,
        requests: str,
        security: KafkaSecurity = PLAINTEXT,
        topic: str = DEAD_LETTERS,
        group: str = DLQ_GROUP,
        clock: Clock,
        limit: int = READ_LIMIT,
    ) -> None:
        self._options = KafkaOptions(bootstrap, security, client_id="cmn-dlq")
        self.requests = requests
        self._topic = topic
        self._group = group
        self._limit = limit
        self._producer = KafkaProducerLink(self._options, clock=clock)
        self._consumer: AIOKafkaConsumer | None = None
        # Per partition: the committed position, and the offsets past it that have left the queue.
        self._position: dict[int, int] = {}
        self._left: dict[int, set[int]] = {}

    async def read(self) -> Sequence[DeadLetter]:
        try:
            consumer = await self._start()
            return await self._read_all(consumer)
        except KafkaError as exc:
            raise BusUnavailableError(f"cannot read {self._topic}: {exc}") from exc

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                group_id=self._group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                **self._options.client_kwargs(),
            )
            try:
                await consumer.start()
            except KafkaError as exc:
                raise await self._options.start_error(exc) from exc
            self._consumer = consumer
        return self._consumer

    async def _read_all(self, consumer: AIOKafkaConsumer) -> list[DeadLetter]:
        partitions = sorted(await self._producer.partitions_for(self._topic))
        tps = [TopicPartition(self._topic, p) for p in partitions]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.resume(*tps)  # an earlier read paused the partitions it had finished
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        at: dict[TopicPartition, int] = {}
        for tp, position in zip(tps, committed, strict=True):
            at[tp] = max(position if position is not None else 0, starts[tp])
            self._position[tp.partition] = at[tp]
            self._left[tp.partition] = set()
            consumer.seek(tp, at[tp])
        letters: list[DeadLetter] = []
        try:
            await self._read_together(consumer, at, ends, letters)
        except UnicodeDecodeError:
            # aiokafka fails the whole fetch on a record whose header key is not UTF-8 (anyone who may
            # write the topic can write one), without saying whose: each partition is read on its own
            # from where it got to, so that record becomes a letter of its own; else no letter of its
            # partition could be listed, replayed or kept again.
            consumer.resume(*tps)
            for tp in tps:
                consumer.seek(tp, at[tp])
                await self._read_partition(consumer, tp, at, ends[tp], letters)
        letters.sort(key=lambda letter: letter.token)
        return letters

    async def _read_together(
        self,
        consumer: AIOKafkaConsumer,
        at: dict[TopicPartition, int],
        ends: Mapping[TopicPartition, int],
        letters: list[DeadLetter],
    ) -> None:
        """Every partition in the same fetches: one empty wait for the topic rather than one per
        partition (``cmn dlq list`` on a four-partition topic took four).

        A partition is read once it is past its end offset and a fetch brings nothing more for it
        (Tansu 0.6 can report an end offset short of a batch of several records, seen with the
        gateway's batched produces, so the end offset alone does not say). It is then paused: letters
        still arriving on it (an upstream down, requests failing steadily) belong to the next read, and
        must not keep this one going; the read waits only for partitions still short of their end."""
        reading = set(at)
        while reading and len(letters) < self._limit:
            batches = await consumer.getmany(*reading, timeout_ms=EMPTY_FETCH_MS, max_records=FETCH_RECORDS)
            got = 0
            for tp, records in batches.items():
                got += len(records)
                letters += [_letter(record) for record in records]
                if records:
                    at[tp] = records[-1].offset + 1
            if got >= FETCH_RECORDS:
                continue  # cut short: a partition left out of this batch may have records waiting
            done = {tp for tp in reading if at[tp] >= ends[tp] and not batches.get(tp)}
            consumer.pause(*done)
            reading -= done

    async def _read_partition(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        at: dict[TopicPartition, int],
        end: int,
        letters: list[DeadLetter],
    ) -> None:
        """One partition, falling back to one record per fetch to find the record aiokafka cannot decode."""
        one = False
        while len(letters) < self._limit:
            try:
                fetch = await consumer.getmany(tp, timeout_ms=EMPTY_FETCH_MS, max_records=1 if one else FETCH_RECORDS)
                records = fetch.get(tp, [])
            except UnicodeDecodeError:
                if one:
                    letters.append(_unreadable(tp.partition, at[tp]))
                    at[tp] += 1
                one = not one
                consumer.seek(tp, at[tp])
                continue
            one = False
            letters += [_letter(record) for record in records]
            at[tp] = records[-1].offset + 1 if records else at[tp]
            if not records and at[tp] >= end:
                return

    async def republish(self, letter: DeadLetter, headers: Mapping[str, str]) -> None:
        await self._producer.send(self.requests, letter.body, key=letter.key, headers=headers)

    async def remove(self, letter: DeadLetter) -> None:
        await self._leave(letter)

    async def keep(self, letter: DeadLetter) -> None:
        await self._producer.send(self._topic, letter.body, key=letter.key, headers=letter.headers)
        await self._leave(letter)

    async def _leave(self, letter: DeadLetter) -> None:
        partition, offset = letter.token
        left = self._left[partition]
        left.add(offset)
        position = self._position[partition]
        while position in left:
            left.discard(position)
            position += 1
        if position == self._position[partition]:
            return
        self._position[partition] = position
        assert self._consumer is not None  # a letter comes from read(), which started it
        try:
            await self._consumer.commit({TopicPartition(self._topic, partition): position})
        except KafkaError as exc:
            raise BusUnavailableError(f"cannot commit {self._topic}[{partition}] at {position}: {exc}") from exc

    async def aclose(self) -> None:
        try:
            if self._consumer is not None:
                await self._consumer.stop()
        finally:
            self._consumer = None
            await self._producer.aclose()

    def __repr__(self) -> str:
        return f"<KafkaDeadLetters {self._topic} group {self._group} -> {self.requests}>"


def _letter(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    headers = decode_headers(record.headers)
    return DeadLetter(
        ref=f"{record.partition}:{record.offset}",
        body=record.value if record.value is not None else b"",
        content_type=headers.get(CONTENT_TYPE) or DEFAULT_CONTENT_TYPE,
        correlation_id=headers.get(CORRELATION_ID) or None,
        reply_to=headers.get(REPLY_TO) or None,
        headers=headers,
        timestamp_ms=record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None,
        key=record.key,
        lane=str(record.partition),
        source=headers.get(TOPIC_HEADER) or None,
        token=(record.partition, record.offset),
    )


def _unreadable(partition: int, offset: int) -> DeadLetter:
    """The place of a record aiokafka cannot decode: no body, no headers but why (``keep`` copies
    this readable note forward; a forced replay is answered ``invalid_request``)."""
    return DeadLetter(
        ref=f"{partition}:{offset}",
        body=b"",
        content_type=DEFAULT_CONTENT_TYPE,
        correlation_id=None,
        reply_to=None,
        headers={ERROR_HEADER: "unreadable: a record header key is not UTF-8"},
        lane=str(partition),
        token=(partition, offset),
    )

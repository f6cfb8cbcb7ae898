"""Records gathered into our own batch per topic-partition: appending is a call, not a coroutine chain.

Every request on the Kafka gateway writes two records, its reply and its telemetry event, and waits
for both to be acknowledged (acks=all) before its offset may be committed. Through aiokafka's
``send`` each record paid for a chain of coroutines (the metadata wait, the size estimate, the
partitioner, the accumulator), a future, a ``RecordMetadata`` built on acknowledgement nobody reads,
and a wake-up of its own: about a tenth of the gateway's CPU per request (issue 14,
docs/performance.md). Here a record is appended straight into an open ``BatchBuilder`` (aiokafka's
public ``create_batch``/``send_batch``), and each writer waits on a plain future that the batch's
acknowledgement resolves.

The batches form as aiokafka's own do with ``linger_ms=0``: what is appended while a lane's batch is
with the broker joins the next one, which leaves as soon as the broker has acknowledged the previous
(aiokafka keeps one produce request per broker in flight anyway). So a lone record leaves at once
and, under load, the records that wait anyway share one write. A consumer of the topic reads the
same records one by one; only the number of produce requests changes.

Only records that fit a small batch come here (``fits``): a large reply takes aiokafka's ``send``,
which checks it against ``max_request_size`` and gives it a batch of its own.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerClosed
from aiokafka.partitioner import DefaultPartitioner

# Records above this go through aiokafka's send (size checks, a batch of their own); below it, the
# largest batch (DEFAULT_MAX_BATCH_SIZE, 1 MiB) still holds several, so batching them pays.
BATCHED_RECORD_MAX = 64 * 1024

_partitioner = DefaultPartitioner()


class _Batch:
    __slots__ = ("builder", "waiters")

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.builder = producer.create_batch()
        self.waiters: list[asyncio.Future[None]] = []


class _Lane:
    """One topic-partition: batches not yet handed to aiokafka, and whether one of ours is out."""

    __slots__ = ("queue", "sending", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.queue: deque[_Batch] = deque()
        self.sending = False


class PartitionBatches:
    """Appends records to per-partition batches of one producer; one instance per producer and loop."""

    def __init__(self, producer: AIOKafkaProducer, *, max_request_size: int) -> None:
        self._producer = producer
        # A record must leave room in a request for the others of its batch (and the batch header).
        self._record_max = min(BATCHED_RECORD_MAX, max_request_size // 4)
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self.sent = 0  # batches handed to aiokafka

    def fits(self, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> bool:
        size = len(value) + (len(key) if key is not None else 0)
        for name, header in headers:
            size += len(name) + len(header)
        return size <= self._record_max

    def partition(self, topic: str, key: bytes | None, chosen: int | None = None) -> int | None:
        """``chosen`` if the topic has it, else the partition aiokafka's default partitioner picks for
        ``key``; None while the metadata does not know the topic or ``chosen`` (the caller then sends
        through aiokafka, which waits for the metadata or refuses the partition as before)."""
        partitions: set[int] | None = self._producer.client.cluster.partitions_for_topic(topic)
        if not partitions:
            return None
        if chosen is not None:
            return chosen if chosen in partitions else None
        if len(partitions) == 1:
            return next(iter(partitions))  # no hash needed: murmur2 is pure Python
        available = list(self._producer.client.cluster.available_partitions_for_topic(topic))
        picked: int = _partitioner(key, list(partitions), available)
        return picked

    def append(
        self, topic: str, partition: int, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        """Append a record; the future resolves once the broker acknowledged its batch, or holds the
        ``KafkaError`` that failed it. Cancelling the future cancels only this writer's wait."""
        if self._closed:
            raise ProducerClosed()
        lane = self._lanes.get((topic, partition))
        if lane is None:
            lane = self._lanes[(topic, partition)] = _Lane(TopicPartition(topic, partition))
        queue = lane.queue
        batch = queue[-1] if queue else None
        if batch is None or batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            batch = _Batch(self._producer)
            # The first record always fits an empty builder (aiokafka lets it exceed the batch size).
            batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
            queue.append(batch)
            if not lane.sending:
                # Leave at the end of this loop step: whatever else is appended in it joins the batch.
                lane.sending = True
                self._loop.call_soon(self._launch, lane)
        waiter: asyncio.Future[None] = self._loop.create_future()
        batch.waiters.append(waiter)
        return waiter

    def _launch(self, lane: _Lane) -> None:
        if not lane.queue:
            # Idle: forget the lane, so a worker that served many reply topics keeps only the busy ones.
            lane.sending = False
            if self._lanes.get((lane.tp.topic, lane.tp.partition)) is lane:
                del self._lanes[(lane.tp.topic, lane.tp.partition)]
            return
        self.sent += 1
        task = self._loop.create_task(self._send(lane, lane.queue.popleft()))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, lane: _Lane, batch: _Batch) -> None:
        try:
            acknowledged = await self._producer.send_batch(batch.builder, lane.tp.topic, partition=lane.tp.partition)
            await acknowledged
        except BaseException as exc:
            # Every writer of the batch learns it failed: a KafkaError as aiokafka raised it; aiokafka's
            # AssertionError that the partition is gone from the metadata (the topic was deleted and
            # created again with fewer partitions since the record was appended), or anything else,
            # as a KafkaError too; being stopped by aclose as the producer closed.
            failure = exc if isinstance(exc, KafkaError) else ProducerClosed() if self._closed else None
            failure = failure or KafkaError(repr(exc))
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(copy.copy(failure))
            if not isinstance(exc, Exception):
                raise
        else:
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_result(None)
        finally:
            if self._closed:
                lane.sending = False
            else:
                self._launch(lane)  # the next batch of this lane, or idle

    @property
    def lanes(self) -> int:
        """Topic-partitions with records not yet acknowledged."""
        return len(self._lanes)

    async def aclose(self) -> None:
        """Fail what was never handed to aiokafka, and stop the sends that were (their writers are told
        the producer closed: unconfirmed, so their requests come again)."""
        self._closed = True
        for lane in self._lanes.values():
            while lane.queue:
                for waiter in lane.queue.popleft().waiters:
                    if not waiter.done():
                        waiter.set_exception(ProducerClosed())
        sends = list(self._sends)
        for task in sends:
            task.cancel()
        if sends:
            await asyncio.gather(*sends, return_exceptions=True)
        self._lanes.clear()

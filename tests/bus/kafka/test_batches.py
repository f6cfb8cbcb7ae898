"""Records appended to our own batches (gateway/bus/kafka/batches.py), against a real Tansu broker.

What a consumer reads must not change: every record arrives once, with its key, value and headers,
on the partition aiokafka's own ``send`` would have picked. What changes is how many produce
batches carry them, and every writer still learns of its own record's fate.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from gateway.bus.kafka.batches import PartitionBatches
from gateway.bus.kafka.producer import KafkaProducerLink
from gateway.bus.kafka.records import KafkaOptions, KafkaUnavailableError
from gateway.clock import SystemClock
from tests.fixtures.kafka import read_topic, unique


def _link(bootstrap: str, **kwargs: float) -> KafkaProducerLink:
    return KafkaProducerLink(KafkaOptions(bootstrap), clock=SystemClock(), **kwargs)  # type: ignore[arg-type]


async def _batches_of(link: KafkaProducerLink) -> PartitionBatches:
    await link.start()
    batches = link._batches  # what the link appends to, to count its sends
    assert batches is not None
    return batches


async def test_concurrent_records_share_batches_and_each_arrives_once_as_written(kafka_bootstrap: str) -> None:
    topic = unique("t.batched")
    link = _link(kafka_bootstrap)
    batches = await _batches_of(link)
    try:
        await link.partitions_for(topic)
        before = batches.sent
        count = 300
        await asyncio.gather(
            *(
                link.send(topic, b"v%d" % i, key=None, headers={"type": "request.completed", "n": str(i)}, partition=0)
                for i in range(count)
            )
        )
        sent = batches.sent - before
        records = await read_topic(kafka_bootstrap, topic, until=lambda rs: len(rs) >= count)
    finally:
        await link.aclose()
    assert 1 <= sent < count // 10  # they left together, not one write each
    assert sorted(r.value for r in records) == sorted(b"v%d" % i for i in range(count))
    assert all(r.partition == 0 for r in records)
    by_value = {r.value: dict(r.headers) for r in records}
    assert by_value[b"v7"] == {"type": b"request.completed", "n": b"7"}
    assert batches.lanes == 0  # idle lanes are forgotten


async def test_a_keyed_record_lands_where_aiokafka_would_put_it(kafka_bootstrap: str) -> None:
    ours, theirs = unique("t.keyed"), unique("t.keyed")
    keys = [b"corr-%d" % i for i in range(40)]
    link = _link(kafka_bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        assert len(await link.partitions_for(ours)) > 1  # else the partitioner is never asked
        await asyncio.gather(*(link.send(ours, b"x", key=k, headers={}) for k in keys))
        await producer.partitions_for(theirs)
        for key in keys:
            await (await producer.send(theirs, b"x", key=key))
        mine = await read_topic(kafka_bootstrap, ours, until=lambda rs: len(rs) >= len(keys))
        reference = await read_topic(kafka_bootstrap, theirs, until=lambda rs: len(rs) >= len(keys))
    finally:
        await producer.stop()
        await link.aclose()
    assert {r.key: r.partition for r in mine} == {r.key: r.partition for r in reference}
    assert len({r.partition for r in mine}) > 1


async def test_a_writer_that_stops_waiting_leaves_the_others_of_its_batch_alone(kafka_bootstrap: str) -> None:
    topic = unique("t.cancel")
    link = _link(kafka_bootstrap)
    await _batches_of(link)
    try:
        await link.partitions_for(topic)
        writers = [
            asyncio.create_task(link.send(topic, b"w%d" % i, key=None, headers={}, partition=0)) for i in range(20)
        ]
        await asyncio.sleep(0)  # every writer has appended; their batch has not been acknowledged yet
        writers[3].cancel()
        results = await asyncio.gather(*writers, return_exceptions=True)
        records = await read_topic(kafka_bootstrap, topic, until=lambda rs: len(rs) >= 20)
    finally:
        await link.aclose()
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == [None] * 19
    assert len(records) == 20  # the cancelled writer's record was written all the same: at least once


async def test_records_left_when_the_producer_closes_are_reported_unconfirmed(kafka_bootstrap: str) -> None:
    topic = unique("t.closing")
    link = _link(kafka_bootstrap)
    await _batches_of(link)
    await link.partitions_for(topic)
    writers = [asyncio.create_task(link.send(topic, b"c%d" % i, key=None, headers={}, partition=0)) for i in range(50)]
    await asyncio.sleep(0)
    await link.aclose()
    results = await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 10)
    # Each writer knows: confirmed (None), or not (its request stays unsettled and comes again).
    assert all(r is None or isinstance(r, KafkaUnavailableError) for r in results)
    assert any(isinstance(r, KafkaUnavailableError) for r in results)


async def test_a_partition_the_topic_lacks_and_a_large_record_take_aiokafkas_send(kafka_bootstrap: str) -> None:
    topic = unique("t.fallback")
    link = _link(kafka_bootstrap, max_request_size=4096)
    batches = await _batches_of(link)
    try:
        await link.partitions_for(topic)
        before = batches.sent
        with pytest.raises(AssertionError, match="Unrecognized partition"):
            await link.send(topic, b"x", key=None, headers={}, partition=999)
        await link.send(topic, b"y" * 2000, key=None, headers={}, partition=0)  # over a quarter of the request
        assert batches.sent == before  # neither went through a batch of ours
        await link.send(topic, b"z" * 100, key=None, headers={}, partition=0)
        assert batches.sent == before + 1
        records = await read_topic(kafka_bootstrap, topic, until=lambda rs: len(rs) >= 2)
    finally:
        await link.aclose()
    assert sorted(len(r.value) for r in records) == [100, 2000]

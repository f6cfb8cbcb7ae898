"""KafkaTransport against a real Tansu broker: deliveries, ordered commits, back-pressure, drain."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gateway.bus.base import DEAD_LETTERS, ERROR_HEADER, Delivery, OutboundMessage
from gateway.bus.embedded import EmbeddedBroker, free_port
from gateway.bus.kafka.producer import KafkaProducerLink
from gateway.bus.kafka.records import KafkaOptions, KafkaRecordRejectedError, KafkaUnavailableError
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.kafka.transport import KafkaTransport
from gateway.clock import SystemClock
from gateway.testing import FakeClock
from tests.fixtures.kafka import (
    KafkaTransportFactory,
    TcpProxy,
    committed_offsets,
    delete_topic,
    produce,
    read_topic,
    topics,
    unique,
)


class Recorder:
    """A handler that records deliveries, settles them, and signals when ``expected`` arrived."""

    def __init__(
        self,
        transport: KafkaTransport,
        expected: int,
        *,
        work: Callable[[Delivery], Awaitable[None]] | None = None,
    ) -> None:
        self.transport = transport
        self.expected = expected
        self.deliveries: list[Delivery] = []
        self.all_seen = asyncio.Event()
        self._work = work

    async def __call__(self, delivery: Delivery) -> None:
        if self._work is not None:
            await self._work(delivery)
        self.deliveries.append(delivery)
        await self.transport.settle(delivery)
        if len(self.deliveries) >= self.expected:
            self.all_seen.set()

    async def wait(self, seconds: float = 20.0) -> None:
        await asyncio.wait_for(self.all_seen.wait(), seconds)

    def offsets(self, partition: int = 0) -> list[int]:
        return [d.token[1] for d in self.deliveries if d.token[0].partition == partition]


async def wait_until(condition: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110 - polls broker state; there is no event to await
            await asyncio.sleep(0.05)


async def test_records_arrive_as_deliveries_and_settled_offsets_are_committed(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport()
    handler = Recorder(transport, 3)
    await transport.start(handler)
    headers = [
        ("content-type", b"application/msgpack"),
        ("reply_to", b"replies.x"),
        ("correlation_id", b"c-1"),
        ("traceparent", b"00-abc-def-01"),
    ]
    await produce(kafka_bootstrap, transport.topic, [b"\x81\xa2id\xa1a"], partition=1, headers=headers)
    # No headers at all, a null value and undecodable header bytes must still make deliveries.
    await produce(kafka_bootstrap, transport.topic, [b"{}"], partition=2)
    await produce(
        kafka_bootstrap, transport.topic, [None], partition=3, headers=[("odd", b"\xff\xfe")], key=b"k"
    )  # a tombstone
    await handler.wait()

    by_partition = {d.token[0].partition: d for d in handler.deliveries}
    first = by_partition[1]
    assert first.body == b"\x81\xa2id\xa1a"
    assert first.content_type == "application/msgpack"
    assert first.reply_to == "replies.x"
    assert first.correlation_id == "c-1"
    assert first.headers["traceparent"] == "00-abc-def-01"
    assert first.transport == "kafka"
    assert first.source == transport.topic  # the consumer span's destination
    assert first.timestamp_ms is not None
    assert first.timestamp_ms > 1_600_000_000_000
    assert first.token == (TopicPartition(transport.topic, 1), 0)
    bare = by_partition[2]
    assert (bare.content_type, bare.reply_to, bare.correlation_id, dict(bare.headers)) == (
        "application/json",
        None,
        None,
        {},
    )
    assert by_partition[3].body == b""
    assert by_partition[3].headers["odd"] == "\ufffd\ufffd"

    async def all_committed() -> bool:
        offsets = await committed_offsets(kafka_bootstrap, transport.topic, transport.group_id)
        return offsets == {0: None, 1: 1, 2: 1, 3: 1}

    await wait_until(all_committed)
    assert transport.ready
    assert transport.lag() == {0: 0, 1: 0, 2: 0, 3: 0} or all(v == 0 for v in transport.lag().values())


async def test_out_of_order_completion_never_commits_past_an_unfinished_record(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport()
    held = asyncio.Event()  # offset 3 stays unfinished while everything after it completes

    async def hold_offset_3(delivery: Delivery) -> None:
        if delivery.token[1] == 3:
            await held.wait()

    handler = Recorder(transport, 9, work=hold_offset_3)
    await transport.start(handler)
    await produce(kafka_bootstrap, transport.topic, [b"r%d" % i for i in range(10)], partition=0)
    await handler.wait()
    assert sorted(handler.offsets()) == [0, 1, 2, 4, 5, 6, 7, 8, 9]

    async def committed_3() -> bool:
        return (await committed_offsets(kafka_bootstrap, transport.topic, transport.group_id))[0] == 3

    await wait_until(committed_3)
    await asyncio.sleep(0.3)  # several commit rounds: it must stay at 3
    assert (await committed_offsets(kafka_bootstrap, transport.topic, transport.group_id))[0] == 3

    # The consumer goes away with offset 3 unfinished: a new member of the group must get it.
    await transport.aclose()
    successor = kafka_transport(topic=transport.topic, group_id=transport.group_id)
    again = Recorder(successor, 7)
    await successor.start(again)
    await again.wait()
    assert sorted(again.offsets()) == [3, 4, 5, 6, 7, 8, 9]
    held.set()


async def test_at_most_max_in_flight_handlers_run_and_fetching_pauses_when_full(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport(max_in_flight=4)
    running = 0
    peak = 0
    paused_when_full: list[bool] = []

    async def slow(delivery: Delivery) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        if running == 4:
            paused_when_full.append(transport.paused)
        running -= 1

    handler = Recorder(transport, 60, work=slow)
    await transport.start(handler)
    await produce(kafka_bootstrap, transport.topic, [b"x%d" % i for i in range(60)])
    await handler.wait(30)
    assert peak == 4
    assert transport.peak_in_flight == 4
    assert paused_when_full
    assert all(paused_when_full)
    assert sorted(d.body for d in handler.deliveries) == sorted(b"x%d" % i for i in range(60))

    async def resumed() -> bool:
        return not transport.paused and transport.in_flight == 0

    await wait_until(resumed)
    # Resumed: a record produced now is still consumed.
    handler.expected = 61
    handler.all_seen.clear()
    await produce(kafka_bootstrap, transport.topic, [b"late"])
    await handler.wait()


async def test_lag_counts_the_records_behind_a_held_handler_then_falls_to_zero(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    behind = 7
    transport = kafka_transport(max_in_flight=1)
    # Produced before the start, so the first fetch already sees the partition's end.
    await produce(kafka_bootstrap, transport.topic, [b"l%d" % i for i in range(behind + 1)], partition=0)
    release = asyncio.Event()

    async def hold_the_first(delivery: Delivery) -> None:
        if delivery.token[1] == 0:
            await release.wait()

    handler = Recorder(transport, behind + 1, work=hold_the_first)
    await transport.start(handler)

    async def lag_is(expected: int) -> bool:
        return transport.lag().get(0) == expected

    await wait_until(lambda: lag_is(behind))
    assert transport.in_flight == 1  # one record held; the other seven wait on the broker
    release.set()
    await handler.wait()
    await wait_until(lambda: lag_is(0))
    assert transport.lag()[0] == 0


async def test_dead_letter_keeps_original_bytes_and_headers_and_adds_the_error(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport()
    marker = uuid.uuid4().hex

    async def reject(delivery: Delivery) -> None:
        await transport.dead_letter(delivery, "invalid_request: not JSON")

    handler = Recorder(transport, 1, work=reject)
    await transport.start(handler)
    body = b"\x00\xffnot json" + marker.encode()
    headers = [("content-type", b"application/json"), ("correlation_id", marker.encode()), ("x-app", b"a")]
    await produce(kafka_bootstrap, transport.topic, [body], headers=headers)
    await handler.wait()

    def found(records: list) -> bool:  # type: ignore[type-arg]
        return any(r.value == body for r in records)

    records = [r for r in await read_topic(kafka_bootstrap, DEAD_LETTERS, until=found) if r.value == body]
    assert len(records) == 1
    dead = dict(records[0].headers)
    assert dead[ERROR_HEADER] == b"invalid_request: not JSON"
    assert dead["correlation_id"] == marker.encode()
    assert dead["x-app"] == b"a"
    assert dead["content-type"] == b"application/json"


async def test_publish_sets_key_headers_and_returns_once_confirmed(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport()
    topic = f"t.replies.{uuid.uuid4().hex[:8]}"
    message = OutboundMessage(
        destination=topic,
        body=b'{"id":"r1"}',
        content_type="application/json",
        correlation_id="r1",
        headers={"traceparent": "00-1-2-01", "content-type": "text/plain"},
    )
    await transport.publish(message)  # works before start: the producer starts on first use
    await transport.publish_telemetry("request.completed", b'{"type":"request.completed"}', {"x": "1"})
    records = await read_topic(kafka_bootstrap, topic, until=lambda rs: len(rs) >= 1)
    assert records[0].key == b"r1"
    assert records[0].value == b'{"id":"r1"}'
    assert dict(records[0].headers) == {
        "traceparent": b"00-1-2-01",
        "content-type": b"application/json",  # the message's own content type wins
        "correlation_id": b"r1",
    }


async def test_drain_finishes_in_flight_work_commits_and_stops_consuming(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport(commit_interval_ms=600_000)  # only drain can commit here
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(delivery: Delivery) -> None:
        started.set()
        await release.wait()

    handler = Recorder(transport, 5, work=slow)
    await transport.start(handler)
    await produce(kafka_bootstrap, transport.topic, [b"d%d" % i for i in range(5)], partition=0)
    await asyncio.wait_for(started.wait(), 20)
    await asyncio.sleep(0.1)  # let the whole batch be dispatched
    draining = asyncio.create_task(transport.drain())
    await asyncio.sleep(0.2)
    assert not draining.done()  # waits for the handlers
    assert not transport.ready
    release.set()
    await asyncio.wait_for(draining, 10)
    assert len(handler.deliveries) == 5
    assert (await committed_offsets(kafka_bootstrap, transport.topic, transport.group_id))[0] == 5
    await produce(kafka_bootstrap, transport.topic, [b"after-drain"], partition=0)
    await asyncio.sleep(0.5)
    assert len(handler.deliveries) == 5


async def test_revocation_commits_finished_work_before_another_member_takes_over(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    first = kafka_transport(commit_interval_ms=600_000)  # only revocation can commit here
    handler = Recorder(first, 40, work=lambda d: asyncio.sleep(0.01))
    await first.start(handler)
    await produce(kafka_bootstrap, first.topic, [b"a%d" % i for i in range(40)])
    await handler.wait()

    second = kafka_transport(topic=first.topic, group_id=first.group_id)
    other = Recorder(second, 1)
    await second.start(other)

    async def split() -> bool:
        return first.ready and second.ready

    await wait_until(split, 15)
    # Everything the first member settled was committed when its partitions were revoked.
    assert other.deliveries == []
    await produce(kafka_bootstrap, first.topic, [b"b%d" % i for i in range(20)])

    async def all_new_seen() -> bool:
        bodies = [d.body for d in handler.deliveries + other.deliveries if d.body.startswith(b"b")]
        return len(bodies) >= 20

    await wait_until(all_new_seen, 15)
    assert other.deliveries, "the second member got partitions of its own"
    assert all(not d.body.startswith(b"a") for d in other.deliveries)


CHILD = """
import asyncio, sys
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.kafka.transport import KafkaTransport
from gateway.bus.kafka.producer import KafkaProducerLink
from gateway.bus.kafka.records import KafkaOptions, KafkaRecordRejectedError, KafkaUnavailableError
from gateway.clock import SystemClock

async def main(bootstrap, topic, group):
    transport = KafkaTransport(bootstrap, topic=topic, group_id=group, session_timeout_ms=1000,
                               heartbeat_interval_ms=300, commit_interval_ms=20, clock=SystemClock())
    seen = 0
    forever = asyncio.Event()

    async def handle(delivery):
        nonlocal seen
        seen += 1
        if int(delivery.body) % 2:
            if seen == 50:
                print("ALL", flush=True)
            await forever.wait()  # odd requests never finish: in flight when the worker dies
        await transport.settle(delivery)
        print("SETTLED", int(delivery.body), flush=True)
        if seen == 50:
            print("ALL", flush=True)

    await transport.start(handle)
    await forever.wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_consumer_killed_mid_batch_loses_nothing(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, group = unique("t.requests"), unique("g")
    # Pairs (even, odd) per partition: offsets 0,2,4.. hold even numbers, 1,3,5.. odd ones.
    for partition in range(4):
        values = [b"%d" % i for i in range(50) if (i // 2) % 4 == partition]
        await produce(kafka_bootstrap, topic, values, partition=partition)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), kafka_bootstrap, topic, group, stdout=asyncio.subprocess.PIPE
    )
    settled: set[int] = set()
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            while (line := await child.stdout.readline()) and not line.startswith(b"ALL"):
                if line.startswith(b"SETTLED"):
                    settled.add(int(line.split()[1]))
        await asyncio.sleep(0.2)  # several commit rounds
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert settled == {n for n in range(50) if n % 2 == 0}

    successor = kafka_transport(topic=topic, group_id=group)
    handler = Recorder(successor, 46)
    await successor.start(handler)
    await handler.wait(30)
    await asyncio.sleep(0.3)  # anything more would show up now
    again = sorted(int(d.body) for d in handler.deliveries)
    # The killed worker could commit only offset 0 of each partition (offset 1 never finished):
    # everything from offset 1 on comes again, the finished even ones among it as duplicates.
    assert again == [n for n in range(50) if n not in (0, 2, 4, 6)]
    assert len(set(again) & settled) == 21


async def test_consumption_survives_the_broker_connection_dropping(
    kafka_behind_proxy: tuple[EmbeddedBroker, TcpProxy], kafka_transport: KafkaTransportFactory
) -> None:
    broker, proxy = kafka_behind_proxy
    transport = kafka_transport(bootstrap=broker.bootstrap)
    handler = Recorder(transport, 10)
    await transport.start(handler)
    await produce(broker.bootstrap, transport.topic, [b"before-%d" % i for i in range(10)])
    await handler.wait()

    proxy.cut()  # every connection reset, new ones refused
    await asyncio.sleep(1.5)  # longer than the session: the group forgets the member too
    proxy.restore()

    handler.expected = 20
    handler.all_seen.clear()
    await produce(broker.bootstrap, transport.topic, [b"after-%d" % i for i in range(10)])
    await handler.wait(30)
    after = [d.body for d in handler.deliveries if d.body.startswith(b"after")]
    assert sorted(after) == sorted(b"after-%d" % i for i in range(10))
    await transport.publish(OutboundMessage("t.out", b"still publishing", "text/plain", None))

    async def all_committed() -> bool:
        offsets = await committed_offsets(broker.bootstrap, transport.topic, transport.group_id)
        return sum(o or 0 for o in offsets.values()) == 20

    await wait_until(all_committed, 15)


async def test_publishing_to_a_topic_that_existed_before_the_producer_started(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    # A requester's reply topic (and cmn.requests) usually exist before a worker starts. Tansu lists
    # every topic in the producer's first metadata; a later refresh for another topic must not
    # drop the reply topic from under a batch waiting to be sent.
    transport = kafka_transport()
    old, new = unique("t.old-replies"), unique("t.new-topic")
    await produce(kafka_bootstrap, old, [b"earlier"])
    await produce(kafka_bootstrap, transport.topic, [b"a request"])
    handler = Recorder(transport, 1)
    await transport.start(handler)
    await handler.wait()
    to_old = OutboundMessage(old, b"reply", "application/json", "c1")
    to_new = OutboundMessage(new, b"other", "application/json", "c2")
    await asyncio.wait_for(asyncio.gather(transport.publish(to_old), transport.publish(to_new)), 10)
    records = await read_topic(kafka_bootstrap, old, until=lambda rs: len(rs) >= 2)
    assert sorted(r.value for r in records) == [b"earlier", b"reply"]


async def test_the_producer_tracks_a_bounded_set_of_topics_and_still_writes_evicted_ones(
    kafka_bootstrap: str,
) -> None:
    link = KafkaProducerLink(KafkaOptions(kafka_bootstrap), max_tracked_topics=2, clock=SystemClock())
    topics = [unique("t.lru") for _ in range(3)]
    try:
        for topic in topics:
            await link.send(topic, b"one", key=None, headers={})
        assert link.tracked_topics == topics[1:]
        await link.send(topics[0], b"two", key=None, headers={})  # evicted: tracked again
        assert link.tracked_topics == [topics[2], topics[0]]
    finally:
        await link.aclose()
    records = await read_topic(kafka_bootstrap, topics[0], until=lambda rs: len(rs) >= 2)
    assert sorted(r.value for r in records) == [b"one", b"two"]


async def test_a_record_left_unsettled_is_handled_again_so_its_partition_commits_move_on(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    # The pipeline leaves a record unsettled when its reply could not be confirmed; without another
    # try the partition's commits would wait for a rebalance behind it.
    transport = kafka_transport(unsettled_retry_ms=50)
    calls: dict[int, int] = {}
    settled = asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        offset = delivery.token[1]
        calls[offset] = calls.get(offset, 0) + 1
        if offset == 1 and calls[offset] < 3:
            return  # "the broker did not confirm the reply": leave it unsettled
        await transport.settle(delivery)
        if len(calls) == 3 and all(calls.get(o) for o in range(3)) and calls[1] >= 3:
            settled.set()

    await transport.start(handle)
    await produce(kafka_bootstrap, transport.topic, [b"a", b"b", b"c"], partition=0)
    await asyncio.wait_for(settled.wait(), 15)
    assert calls == {0: 1, 1: 3, 2: 1}  # only the unsettled one ran again, until it was settled

    async def all_committed() -> bool:
        return (await committed_offsets(kafka_bootstrap, transport.topic, transport.group_id))[0] == 3

    await wait_until(all_committed, 15)


async def test_a_record_still_unsettled_when_draining_is_left_for_the_next_owner(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport(unsettled_retry_ms=50)
    calls = 0
    seen = asyncio.Event()

    async def never_settles(delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        seen.set()

    await transport.start(never_settles)
    await produce(kafka_bootstrap, transport.topic, [b"stuck"], partition=0)
    await asyncio.wait_for(seen.wait(), 15)
    await asyncio.wait_for(transport.drain(), 10)  # the retry loop lets the drain finish
    assert calls >= 1
    assert (await committed_offsets(kafka_bootstrap, transport.topic, transport.group_id))[0] is None


async def test_a_topic_idle_past_the_expiry_is_no_longer_kept_fresh_so_a_deleted_one_stays_deleted(
    kafka_bootstrap: str,
) -> None:
    # A client deletes its reply topic when it closes; while a gateway keeps that topic's metadata
    # fresh, every refresh would make the auto-creating broker create it again.
    clock = FakeClock()
    link = KafkaProducerLink(KafkaOptions(kafka_bootstrap), topic_idle_expiry=60, clock=clock)
    gone, active = unique("t.idle"), unique("t.active")
    try:
        await link.send(gone, b"reply", key=None, headers={})
        clock.advance(30)
        await link.send(active, b"one", key=None, headers={})
        assert link.tracked_topics == [gone, active]  # 30 s idle is within the expiry
        clock.advance(31)
        await link.send(active, b"two", key=None, headers={})
        assert link.tracked_topics == [active]

        await delete_topic(kafka_bootstrap, gone)
        producer = await link.start()
        await producer.client.force_metadata_update()
        assert gone not in await topics(kafka_bootstrap)

        await link.send(gone, b"late reply", key=None, headers={})  # written again: tracked again
        assert link.tracked_topics == [active, gone]
    finally:
        await link.aclose()


async def test_a_member_without_partitions_is_still_ready(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    # More workers than partitions is a healthy deployment: the idle one must not fail /readyz.
    topic = unique("t.one-partition")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    first = kafka_transport(topic=topic)
    second = kafka_transport(topic=topic, group_id=first.group_id)
    handlers = [Recorder(first, 1), Recorder(second, 1)]
    await first.start(handlers[0])
    await second.start(handlers[1])

    async def both_ready() -> bool:
        return first.ready and second.ready

    await wait_until(both_ready, 15)
    await produce(kafka_bootstrap, topic, [b"only one member gets this"])
    await asyncio.wait_for(
        asyncio.wait([asyncio.create_task(h.wait()) for h in handlers], return_when="FIRST_COMPLETED"), 15
    )
    assert sorted(len(h.deliveries) for h in handlers) == [0, 1]
    assert first.ready
    assert second.ready


async def test_publishing_after_close_fails_instead_of_reconnecting(kafka_transport: KafkaTransportFactory) -> None:
    transport = kafka_transport()
    await transport.publish(OutboundMessage(unique("t.x"), b"1", "application/json", None))
    await transport.aclose()
    with pytest.raises(KafkaUnavailableError, match="closed"):
        await transport.publish(OutboundMessage(unique("t.x"), b"2", "application/json", None))
    assert "closed" in repr(transport)


async def test_an_unreachable_broker_is_one_clear_error_at_start() -> None:
    nobody = f"127.0.0.1:{free_port('127.0.0.1')}"
    transport = KafkaTransport(nobody, clock=SystemClock())
    with pytest.raises(KafkaUnavailableError, match=nobody):
        await transport.start(lambda delivery: asyncio.sleep(0))
    await transport.aclose()
    requester = KafkaRequester(nobody, clock=SystemClock())
    with pytest.raises(KafkaUnavailableError, match=nobody):
        await requester.start(lambda reply: None)
    await requester.aclose()


async def test_large_replies_fit_and_a_record_kafka_refuses_is_a_permanent_error(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    topic = unique("t.big")
    big = OutboundMessage(topic, b"x" * 3_000_000, "application/octet-stream", "big")  # over aiokafka's 1 MiB
    await kafka_transport().publish(big)
    records = await read_topic(kafka_bootstrap, topic, until=lambda rs: len(rs) >= 1)
    assert len(records[0].value) == 3_000_000

    small_limit = kafka_transport(max_request_size=1000)
    with pytest.raises(KafkaRecordRejectedError, match="2000-byte record"):
        await small_limit.publish(OutboundMessage(topic, b"y" * 2000, "application/json", "too-big"))
    await small_limit.publish(OutboundMessage(topic, b"fits", "application/json", "small"))  # still usable

"""KafkaDeadLetters on Tansu: reading commits nothing; a record leaves only when the cmn-dlq group
commits past it, after its republish; a record kept while a later one of its partition left is
copied to the tail first, so the committed position never passes a record still in the queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer

from gateway.bus.base import DEAD_LETTERS
from gateway.bus.dead_letters import DLQ_GROUP, DeadLetter
from gateway.bus.embedded import EmbeddedBroker
from gateway.bus.kafka.dlq import KafkaDeadLetters
from gateway.clock import SystemClock
from gateway.dlq.letters import Filters, summarise
from gateway.dlq.replay import plan, replay
from gateway.testing import FakeClock
from tests.fixtures.kafka import committed_offsets, produce, read_topic


def request(request_id: str, method: str) -> bytes:
    return orjson.dumps({"id": request_id, "upstream": "p", "method": method, "path": "/"})


async def ids(bootstrap: str) -> list[str]:
    dlq = KafkaDeadLetters(bootstrap, requests="t.requests", clock=SystemClock())
    try:
        return [summarise(letter, now=0).id for letter in await dlq.read()]
    finally:
        await dlq.aclose()


async def run_replay(bootstrap: str, letters_filter: Filters) -> Sequence[DeadLetter]:
    dlq = KafkaDeadLetters(bootstrap, requests="t.requests", clock=SystemClock())
    try:
        letters = await dlq.read()
        the_plan = plan([(x, summarise(x, now=0)) for x in letters], letters_filter, force=False)
        await replay(dlq, the_plan, clock=FakeClock())
        return letters
    finally:
        await dlq.aclose()


async def test_replay_commits_past_what_left_and_moves_what_stays_to_the_tail(fresh_kafka: EmbeddedBroker) -> None:
    bootstrap = fresh_kafka.bootstrap
    error = [("x-cmn-error", b"unknown_upstream: no p"), ("reply_to", b"cmn.replies.a")]
    await produce(bootstrap, DEAD_LETTERS, [request("a", "GET")], partition=0, headers=error)
    await produce(bootstrap, DEAD_LETTERS, [request("b", "POST")], partition=0, headers=error)
    await produce(bootstrap, DEAD_LETTERS, [request("c", "GET")], partition=0, headers=error)
    await produce(bootstrap, DEAD_LETTERS, [request("d", "POST")], partition=1, headers=error)

    assert sorted(await ids(bootstrap)) == ["a", "b", "c", "d"]
    assert await committed_offsets(bootstrap, DEAD_LETTERS, DLQ_GROUP) == {0: None, 1: None, 2: None, 3: None}

    await run_replay(bootstrap, Filters())
    # a and c were republished, b (before c in partition 0) copied to the tail, d left in place.
    assert sorted(await ids(bootstrap)) == ["b", "d"]
    committed = await committed_offsets(bootstrap, DEAD_LETTERS, DLQ_GROUP)
    assert committed[0] == 3 and committed[1] is None
    replayed = await read_topic(bootstrap, "t.requests", until=lambda records: len(records) >= 2)
    assert sorted(orjson.loads(r.value)["id"] for r in replayed) == ["a", "c"]
    assert all(dict(r.headers).get("reply_to") == b"cmn.replies.a" and "x-cmn-error" not in dict(r.headers)
               for r in replayed)  # fmt: skip


async def test_a_read_ends_while_letters_keep_arriving(fresh_kafka: EmbeddedBroker) -> None:
    """Found by a red-team pass: reading every partition in the same fetches, a read ended only on a fetch
    that was empty for the whole topic, so a letter arriving somewhere every 50 ms (an upstream down,
    requests failing steadily) kept `cmn dlq list` reading, up to its 100,000-letter limit. A partition
    is now done once it is past its end offset and a fetch brings nothing more for it."""
    bootstrap = fresh_kafka.bootstrap
    for partition in range(4):
        await produce(bootstrap, DEAD_LETTERS, [request(f"p{partition}", "GET")], partition=partition)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()

    async def trickle() -> None:
        for n in itertools.count():
            await producer.send_and_wait(DEAD_LETTERS, request(f"late-{n}", "GET"), partition=n % 4)
            await asyncio.sleep(0.05)

    arriving = asyncio.create_task(trickle())
    try:
        await asyncio.sleep(0.5)
        listed = await asyncio.wait_for(ids(bootstrap), 15)  # ~0.3 s when it ends; it did not, before
        assert {"p0", "p1", "p2", "p3"} <= set(listed)
        assert not arriving.done()  # letters were still arriving when the read ended
    finally:
        arriving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await arriving
        await producer.stop()

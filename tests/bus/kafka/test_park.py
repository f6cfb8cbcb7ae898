"""The Kafka park relay on Tansu: each record goes back to the requests topic once due, in due order
across tiers and partitions, headers and key intact, and is committed only after it went back."""

from __future__ import annotations

import time

from aiokafka.structs import ConsumerRecord

from gateway.bus.kafka.park import ParkRelay
from gateway.bus.kafka.producer import KafkaProducerLink
from gateway.bus.kafka.records import KafkaOptions
from gateway.clock import SystemClock
from tests.fixtures.kafka import FAST_GROUP, committed_offsets, produce, read_topic, unique
from tests.fixtures.rabbit import wait_until


async def test_records_come_back_when_due_and_a_waiting_tier_holds_up_no_other(kafka_bootstrap: str) -> None:
    requests = unique("t.requests")
    slow, fast = f"{requests}.park.3s", f"{requests}.park.1s"
    clock = SystemClock()
    producer = KafkaProducerLink(KafkaOptions(kafka_bootstrap), clock=clock)
    relay = ParkRelay(
        KafkaOptions(kafka_bootstrap), producer, tiers={slow: 3, fast: 1}, requests=requests,
        group_id=f"g.{requests}.park", fetch_max_wait_ms=5, clock=clock, **FAST_GROUP,
    )  # fmt: skip
    await relay.start()
    try:
        headers = [("reply_to", b"cmn.replies.a"), ("x-cmn-park-count", b"1")]
        started = time.time()
        await produce(kafka_bootstrap, slow, [b"slow-0"], partition=0, headers=headers, key=b"c-slow")
        await produce(kafka_bootstrap, slow, [b"slow-1"], partition=1, headers=headers, key=b"c-slow")
        await produce(kafka_bootstrap, fast, [b"fast-0"], partition=0, headers=headers, key=b"c-fast")
        back = await read_topic(kafka_bootstrap, requests, until=lambda records: len(records) >= 3, within=20)
        # A record is counted once it went back and its offset was committed: the reader above can see
        # the last one while the relay still waits on that commit, which closing now would cut short.
        await wait_until(lambda: relay.relayed == 3, within=10.0)
    finally:
        await relay.aclose()
        await producer.aclose()
    arrivals = sorted(back, key=lambda r: r.timestamp)
    assert arrivals[0].value == b"fast-0"  # due first, though produced last
    assert {r.value for r in arrivals[1:]} == {b"slow-0", b"slow-1"}
    assert all(_due(r, started) for r in arrivals)
    assert all(dict(r.headers)["x-cmn-park-count"] == b"1" for r in back)
    assert {r.key for r in back} == {b"c-slow", b"c-fast"}
    assert relay.relayed == 3
    slow_commits = await committed_offsets(kafka_bootstrap, slow, f"g.{requests}.park")
    assert (slow_commits[0], slow_commits[1]) == (1, 1)


def _due(record: ConsumerRecord[bytes, bytes], started: float) -> bool:
    """Relayed no earlier than its tier's delay after it was parked (with the broker's ms rounding)."""
    delay = 1.0 if record.value == b"fast-0" else 3.0
    return bool(record.timestamp / 1000 >= started + delay - 0.01)

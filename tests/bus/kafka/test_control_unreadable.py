"""Red team: one record on cmn.control that aiokafka cannot decode (a header key that is not UTF-8; any
producer with write access to the topic can write one) killed every replica's Kafka control reader: no
``cmn status`` / ``cmn breaker`` answer, and no ``health.verdicts`` notice heard again (each replica then
fell back to local decisions), until restarted. The reader now steps past it, as the requests consumer does.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.bus.base import Delivery
from gateway.bus.kafka.control import KafkaControlChannel
from gateway.clock import SystemClock
from tests.fixtures.kafka import unique
from tests.security.test_redteam import _NON_UTF8_HEADER_PRODUCER


async def test_a_record_with_a_non_utf8_header_key_does_not_stop_the_control_reader(kafka_bootstrap: str) -> None:
    topic = unique("t.control")
    channel = KafkaControlChannel(kafka_bootstrap, clock=SystemClock(), topic=topic)
    heard: list[bytes] = []
    after = asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        heard.append(delivery.body)
        if delivery.body == b"after":
            after.set()

    await channel.start(handle)
    try:
        await channel.publish(b"before", reply_to="", correlation_id="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _NON_UTF8_HEADER_PRODUCER, kafka_bootstrap, topic
        )
        assert await proc.wait() == 0
        await channel.publish(b"after", reply_to="", correlation_id="2")
        await asyncio.wait_for(after.wait(), 30)
        assert heard[-1] == b"after" and b"poison" not in heard
    finally:
        await channel.aclose()

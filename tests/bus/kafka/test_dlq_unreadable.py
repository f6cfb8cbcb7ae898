"""Red team: one record in the dead-letter topic that aiokafka cannot decode (a header key that is not
UTF-8; anyone who may write the topic can write one) made every ``cmn dlq list|replay`` fail
(UnicodeDecodeError), so no letter could be listed, replayed or kept again. It is now a letter of its own."""

from __future__ import annotations

import asyncio
import sys

from gateway.bus.kafka.dlq import KafkaDeadLetters
from gateway.clock import SystemClock
from tests.fixtures.kafka import produce, unique
from tests.security.test_redteam import _NON_UTF8_HEADER_PRODUCER


async def test_an_unreadable_dead_letter_does_not_stop_cmn_dlq(kafka_bootstrap: str) -> None:
    topic = unique("t.dlq")
    await produce(kafka_bootstrap, topic, [b'{"id":"a","upstream":"p","method":"GET","path":"/"}'], partition=0)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _NON_UTF8_HEADER_PRODUCER, kafka_bootstrap, topic)
    assert await proc.wait() == 0
    await produce(kafka_bootstrap, topic, [b'{"id":"b","upstream":"p","method":"GET","path":"/"}'], partition=0)
    # Letters on other partitions, read in the same fetches until the unreadable record fails them all.
    await produce(kafka_bootstrap, topic, [b'{"id":"c","upstream":"p","method":"GET","path":"/"}'], partition=1)
    await produce(kafka_bootstrap, topic, [b'{"id":"d","upstream":"p","method":"GET","path":"/"}'], partition=3)
    dlq = KafkaDeadLetters(kafka_bootstrap, requests="t.requests", topic=topic, group=f"g.{topic}", clock=SystemClock())
    try:
        letters = await dlq.read()
        assert [letter.ref for letter in letters] == ["0:0", "0:1", "0:2", "1:0", "3:0"]
        assert letters[1].body == b"" and letters[1].headers["x-cmn-error"].startswith("unreadable")
        await dlq.keep(letters[1])  # copied forward as a readable note, its old place released
        await dlq.remove(letters[0])
    finally:
        await dlq.aclose()
    again = KafkaDeadLetters(
        kafka_bootstrap, requests="t.requests", topic=topic, group=f"g.{topic}", clock=SystemClock()
    )
    try:
        d, c, b, note = sorted(await again.read(), key=lambda letter: letter.body, reverse=True)
        assert b.ref == "0:2" and note.body == b"" and note.headers["x-cmn-error"].startswith("unreadable")
        assert (c.ref, d.ref) == ("1:0", "3:0")
    finally:
        await again.aclose()

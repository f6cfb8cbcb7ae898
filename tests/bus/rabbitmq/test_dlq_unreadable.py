"""Red team: ``cmn dlq`` on RabbitMQ read the dead-letter queue with pamqp's strict UTF-8: one message
with a non-UTF-8 header key or correlation id there (anyone who may publish to it can send one) closed
its connection on every run, so no letter could be listed or replayed. Run in a fresh interpreter, as
``cmn dlq`` is, where nothing else relaxed pamqp first."""

from __future__ import annotations

import asyncio
import sys

_SCRIPT = """
import asyncio, sys, uuid, aio_pika, pika
from gateway.bus.rabbitmq.dlq import RabbitDeadLetters

async def main(url):
    requests = f"t.requests.{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    raw = connection.channel()
    raw.queue_declare(requests + ".dlq", durable=True)
    raw.basic_publish("", requests + ".dlq", b"key", pika.BasicProperties(headers={b"\\xff\\xfe": "v"}))
    raw.basic_publish("", requests + ".dlq", b"property", pika.BasicProperties(correlation_id=b"\\xff\\xfe"))
    raw.basic_publish("", requests + ".dlq", b"after", pika.BasicProperties())
    connection.close()
    dlq = RabbitDeadLetters(url, requests=requests)
    try:
        letters = await asyncio.wait_for(dlq.read(), 10)
        print(sorted(letter.body for letter in letters))
    finally:
        await dlq.aclose()
        cleanup = await aio_pika.connect(url)
        async with cleanup:
            await (await cleanup.channel()).queue_delete(requests + ".dlq")

asyncio.run(main(sys.argv[1]))
"""


async def test_a_dead_letter_with_non_utf8_short_strings_does_not_stop_cmn_dlq(amqp_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SCRIPT, amqp_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip() == str(sorted([b"key", b"property", b"after"]))

"""Red team: the RabbitMQ control channel read non-UTF-8 header keys and short strings (which any
publisher to cmn.control can send) as strictly as pamqp does, closing its connection, unless another
part of the process had relaxed pamqp first. A process with only the control channel (run in a fresh
interpreter here, so nothing else relaxed it) must step over such a message as well."""

from __future__ import annotations

import asyncio
import sys

_SCRIPT = """
import asyncio, sys, uuid, aio_pika, pika
from gateway.bus.rabbitmq.control import RabbitControlChannel
from gateway.clock import SystemClock

async def main(url):
    exchange = f"t.control.{uuid.uuid4().hex[:8]}"
    channel = RabbitControlChannel(url, clock=SystemClock(), exchange=exchange)
    heard, after = [], asyncio.Event()
    async def handle(delivery):
        heard.append(delivery.body)
        if delivery.body == b"after":
            after.set()
    await channel.start(handle)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    raw = connection.channel()
    raw.basic_publish(exchange, "", b"key", pika.BasicProperties(headers={b"\\xff\\xfe": "v"}))
    raw.basic_publish(exchange, "", b"property", pika.BasicProperties(correlation_id=b"\\xff\\xfe"))
    raw.basic_publish(exchange, "", b"after", pika.BasicProperties())
    connection.close()
    try:
        await asyncio.wait_for(after.wait(), 10)
    finally:
        await channel.aclose()
        cleanup = await aio_pika.connect(url)
        async with cleanup:
            await (await cleanup.channel()).exchange_delete(exchange)
    print(sorted(heard))

asyncio.run(main(sys.argv[1]))
"""


async def test_a_control_message_with_non_utf8_short_strings_does_not_break_the_channel(amqp_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SCRIPT, amqp_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip() == str(sorted([b"key", b"property", b"after"]))

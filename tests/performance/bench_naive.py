"""Naive gateways of the kind a user writes by hand in ~40 lines, each in its own process.

    python -m tests.performance.bench_naive rabbitmq --queue Q --upstream URL [--prefetch N]
    python -m tests.performance.bench_naive kafka --bootstrap B --topic T --upstream URL [--concurrency N]

Consume a request envelope, make the HTTP call with aiohttp, publish the reply, ack. They skip what
CMN does besides: no telemetry events, no validation beyond json.loads, no retries or breakers,
Kafka offsets auto-committed whether or not the reply went out (and the reply never awaited).
They run on uvloop like ``cmn serve``, so the ratio compares the designs, not the event loops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aio_pika
import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.performance.bench_procs import AMQP_URL, run_loop_main, until_stopped


async def call_upstream(session: aiohttp.ClientSession, base: str, body: bytes) -> dict[str, Any]:
    request = json.loads(body)
    try:
        method, url = request.get("method", "GET"), base + request.get("path", "/")
        async with session.request(method, url, json=request.get("json")) as response:
            answer = await response.json()
        return {"id": request["id"], "status": response.status, "json": answer, "error": None}
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"id": request["id"], "status": None, "error": {"code": "upstream_unavailable", "message": str(exc)}}


async def naive_rabbit(queue_name: str, base: str, prefetch: int) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue(queue_name, durable=True)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            reply = await call_upstream(session, base, message.body)
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(reply).encode(), correlation_id=message.correlation_id, content_type="application/json"
                ),
                routing_key=message.reply_to or "",
            )

    await queue.consume(on_message)
    print("READY naive rabbitmq", flush=True)
    await until_stopped()
    await connection.close()
    await session.close()


async def naive_kafka(bootstrap: str, topic: str, base: str, concurrency: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    await producer.partitions_for(topic)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"naive.{topic}",
        fetch_max_wait_ms=1,
        session_timeout_ms=1500,
        heartbeat_interval_ms=300,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        try:
            reply = await call_upstream(session, base, value)
            reply_to = dict(headers)["reply_to"].decode()
            await producer.send(reply_to, json.dumps(reply).encode(), key=key, headers=headers)
        finally:
            slots.release()

    async def consume() -> None:
        async for record in consumer:
            await slots.acquire()
            task = asyncio.create_task(handle(record.value, record.key, list(record.headers)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    consuming = asyncio.create_task(consume())
    print("READY naive kafka", flush=True)
    await until_stopped(consuming)
    consuming.cancel()
    await consumer.stop()
    await producer.stop()
    await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("broker", choices=["rabbitmq", "kafka"])
    parser.add_argument("--upstream", required=True, help="Base URL of the upstream.")
    parser.add_argument("--queue", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    if args.broker == "rabbitmq":
        run_loop_main(naive_rabbit(args.queue, args.upstream, args.prefetch))
    else:
        run_loop_main(naive_kafka(args.bootstrap, args.topic, args.upstream, args.concurrency))


if __name__ == "__main__":
    main()

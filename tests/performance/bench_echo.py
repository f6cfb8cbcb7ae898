"""Raw broker round trip: echo services with no HTTP, each in its own process.

    python -m tests.performance.bench_echo rabbitmq --queue Q [--prefetch N]
    python -m tests.performance.bench_echo kafka --bootstrap HOST:PORT --topic T

Each consumes a request, publishes its bytes back to the requester's reply address (same
correlation id and content type) and acknowledges it (RabbitMQ ack; Kafka offset commit per
fetched batch). This is the bus's ceiling: it publishes straight through the aiormq channel
without publisher confirms and without waiting per message, and it never parses the body.
"""

from __future__ import annotations

import argparse
import asyncio

import aiormq
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from tests.performance.bench_procs import AMQP_URL, run_loop_main, until_stopped


async def rabbit_echo(queue: str, prefetch: int) -> None:
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel()
    assert isinstance(channel, aiormq.Channel)  # the abstract type lacks basic_publish(wait=)
    await channel.basic_qos(prefetch_count=prefetch)
    await channel.queue_declare(queue, durable=True)

    async def on_message(message: DeliveredMessage) -> None:
        props = message.header.properties
        reply = Basic.Properties(correlation_id=props.correlation_id, content_type=props.content_type)
        await channel.basic_publish(message.body, routing_key=props.reply_to or "", properties=reply, wait=False)
        await channel.basic_ack(message.delivery_tag or 0)

    await channel.basic_consume(queue, on_message)
    print("READY rabbitmq echo", flush=True)
    await until_stopped()
    await connection.close()


async def kafka_echo(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    await producer.partitions_for(topic)  # makes the auto-creating broker create it before the group joins
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"echo.{topic}",
        fetch_max_wait_ms=1,
        session_timeout_ms=1500,
        heartbeat_interval_ms=300,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    task = asyncio.create_task(_kafka_echo_loop(consumer, producer))
    print("READY kafka echo", flush=True)
    await until_stopped(task)
    task.cancel()
    await consumer.stop()
    await producer.stop()


async def _kafka_echo_loop(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=100)
        sent = []
        for records in batch.values():
            for record in records:
                reply_to = dict(record.headers).get("reply_to", b"").decode()
                headers = list(record.headers)
                sent.append(await producer.send(reply_to, record.value, key=record.key, headers=headers))
        if sent:
            await asyncio.gather(*sent)
            await consumer.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("broker", choices=["rabbitmq", "kafka"])
    parser.add_argument("--queue", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=256, help="Unused: Kafka echo answers whole batches.")
    args = parser.parse_args()
    if args.broker == "rabbitmq":
        run_loop_main(rabbit_echo(args.queue, args.prefetch))
    else:
        run_loop_main(kafka_echo(args.bootstrap, args.topic))


if __name__ == "__main__":
    main()

"""What a producer linger costs one record at low load, against a fresh Tansu (issue 14).

    python -m tests.performance.bench_linger [--rounds 2] [--rate 50] [--records 200]

Plain aiokafka, no CMN: a producer (acks=all) sends ``records`` records at ``rate`` per second to a
new topic while a group-less consumer reads them; for each (linger_ms, fetch_max_wait_ms) pair it
prints the p50/p95 of send → consumed (the hop) and the p50 of send → confirmed (acks).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gateway.bus.embedded import EmbeddedBroker
from gateway.clock import SystemClock
from tests.performance.bench_procs import run_loop_main

PAIRS = ((0, 1), (1, 1), (2, 1), (0, 5), (5, 5))


async def hop(bootstrap: str, linger: int, wait: int, records: int, rate: float) -> tuple[float, float, float]:
    topic = f"linger.{linger}.{wait}.{time.time_ns()}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger, acks="all")
    await producer.start()
    tps = [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=wait, enable_auto_commit=False)
    await consumer.start()
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    got: dict[int, float] = {}

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            now = time.perf_counter()
            for found in batch.values():
                for record in found:
                    got[int(record.value or b"0")] = now

    async def one(i: int) -> None:
        sent[i] = time.perf_counter()
        await (await producer.send(topic, str(i).encode()))
        acked[i] = time.perf_counter()

    reader = asyncio.create_task(read())
    tasks = []
    for i in range(records):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.3)
    reader.cancel()
    await consumer.stop()
    await producer.stop()
    hops = sorted((got[i] - sent[i]) * 1000 for i in sent if i in got)
    acks = [(acked[i] - sent[i]) * 1000 for i in sent]
    return statistics.median(hops), hops[int(len(hops) * 0.95)], statistics.median(acks)


async def main_async(rounds: int, rate: float, records: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cmn-linger-") as workdir:
        async with EmbeddedBroker(port=0, log_file=Path(workdir) / "tansu.log", clock=SystemClock()) as tansu:
            for _ in range(rounds):
                for linger, wait in PAIRS:
                    p50, p95, acks = await hop(tansu.bootstrap, linger, wait, records, rate)
                    print(
                        f"linger {linger} ms, fetch wait {wait} ms: hop p50 {p50:.2f} p95 {p95:.2f} ms, "
                        f"acks p50 {acks:.2f} ms",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--records", type=int, default=200)
    args = parser.parse_args()
    run_loop_main(main_async(args.rounds, args.rate, args.records))


if __name__ == "__main__":
    main()

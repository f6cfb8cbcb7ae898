"""Attribute py-spy samples of a gateway process to the stages of a request (issue 14).

    python -m tests.performance.bench_stages PROFILE.txt [--cpu-us 670] [--top 25]

PROFILE.txt is ``py-spy record --format raw`` output (collapsed stacks, one ``frames count`` per
line), as ``bench_cpu --profile`` writes it. Each sample goes to the first stage in ``STAGES`` that
any of its frames matches (so a telemetry produce is telemetry, not "Kafka producer I/O", though
both are in its stack); what matches nothing is the event loop's own work (uvloop's callbacks run
in C, so py-spy sees them only as ``Runner.run`` or as a coroutine stack with no caller). With
``--cpu-us``, the measured CPU per request of an unprofiled run, each share is also given in µs.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterable
from pathlib import Path

_GLUE: tuple[str, ...] = ("gateway/pipeline.py", "gateway/worker.py", "gateway/bus/", "gateway/idempotency/")
_GLUE += ("gateway/parking/", "gateway/clock.py", "gateway/together.py", "<string>", "dataclasses.py")
# (stage, substrings of a frame "function (file:line)"); the first stage whose pattern any frame holds wins.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tracing hooks", ("gateway/telemetry/tracing", "opentelemetry/")),
    ("logging", ("structlog/", "logging/__init__", "gateway/telemetry/logs")),
    ("metrics / observers", ("on_event (", "gateway/telemetry/metrics", "prometheus_client/", "gateway/events.py")),
    ("telemetry produce (serialise + send + acks=all)", ("TelemetryService.", "publish_telemetry")),
    (
        "reply encode + produce (acks=all)",
        ("Pipeline._publish_reply", "KafkaTransport.publish (", "send_message", "encode_reply", "Pipeline._encode"),
    ),
    ("commit bookkeeping (offsets, settle, commit)", ("offsets.py", "_commit", ".settle (")),
    ("decode + validation", ("decode_request", "pydantic", "gateway/envelope/")),
    ("guard + admission", ("gateway/access/", "gateway/admission.py", "gateway/security/", "Guard.")),
    ("HTTP call (aiohttp + router/pool)", ("aiohttp/", "gateway/upstream/", "yarl/", "multidict/")),
    ("RabbitMQ client (consume, publish, confirms)", ("aio_pika/", "aiormq/", "pamqp/", "gateway/bus/rabbitmq")),
    ("Kafka consume (fetch, dispatch)", ("aiokafka/consumer", "_poll_loop", "_poll_once", "_dispatch", "to_delivery")),
    ("Kafka producer I/O (batches, acks; shared)", ("aiokafka/",)),
    ("pipeline glue (events, Reply, Outcome, tasks)", _GLUE),
)
LOOP = "event loop (uvloop callbacks, asyncio tasks/futures)"
_LINE = re.compile(r":\d+\)")


def read(path: Path) -> Iterable[tuple[list[str], int]]:
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def stage_of(frames: list[str]) -> str:
    for stage, patterns in STAGES:
        if any(p in frame for frame in frames for p in patterns):
            return stage
    return LOOP


def attribute(path: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    stages: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in read(path):
        total += count
        stages[stage_of(frames)] += count
        leaves[_LINE.sub(")", frames[-1])] += count
    return stages, leaves, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--cpu-us", type=float, help="Measured CPU µs per request, to express shares in µs.")
    parser.add_argument("--top", type=int, default=0, help="Also list the top N leaf frames (self time).")
    args = parser.parse_args()
    stages, leaves, total = attribute(args.profile)
    print(f"{args.profile}: {total} samples")
    for stage, count in stages.most_common():
        share = count / total
        micro = f"{share * args.cpu_us:6.0f} µs" if args.cpu_us else ""
        print(f"  {share * 100:5.1f} %  {micro}  {stage}")
    for leaf, count in leaves.most_common(args.top):
        print(f"  leaf {count / total * 100:5.1f} %  {leaf}")


if __name__ == "__main__":
    main()

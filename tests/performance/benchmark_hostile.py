"""Peak memory of one maximum-size hostile message, through a real `cmn serve` on RabbitMQ.

    .venv/bin/pytest tests/performance/benchmark_hostile.py -m benchmark -s

Each shape gets a fresh gateway process, since VmHWM (peak RSS, from /proc/PID/status) only
rises: one normal request warms it up, its VmHWM is read, the hostile message is sent and
answered, and VmHWM is read again. The messages are just under MAX_REQUEST_BYTES (10 MiB):
msgpack whose ``json`` is an array of empty maps, JSON whose ``json`` is ``[{},{},…]``, and the
same arrays sent bare, as the whole message.
The rise must stay within 3x the message size.

To measure another checkout (the code before a change, say), point CMN_BENCH_GATEWAY_SOURCE at its
directory: the gateway runs from there, the figures are printed and the bound is not asserted.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
import yaml
from aiohttp import web

from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.client import GatewayClient, ReplyTimeoutError
from gateway.clock import SystemClock
from gateway.envelope.codec import JSON, MSGPACK, decode_reply
from tests.fixtures.rabbit import AMQP_URL
from tests.fixtures.upstreams import StartUpstream
from tests.integration.harness import delete_rabbit_topology

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path(os.environ.get("CMN_BENCH_GATEWAY_SOURCE") or REPO).resolve()
MAX_REQUEST_BYTES = 10 * 1024 * 1024
SIZE = MAX_REQUEST_BYTES - 64  # just under the limit
MIB = 1024 * 1024


def msgpack_of_empty_maps(rid: str) -> bytes:
    head = b"\x83" + b"".join(msgpack.packb(v) for v in ("id", rid, "upstream", "sink", "json"))
    count = SIZE - len(head) - 5
    return head + b"\xdd" + count.to_bytes(4, "big") + b"\x80" * count


def json_of_empty_maps(rid: str) -> bytes:
    head = b'{"id":"' + rid.encode() + b'","upstream":"sink","json":['
    count = (SIZE - len(head) - 2) // 3
    return head + b"{}," * (count - 1) + b"{}]}"


def bare_msgpack_array(rid: str) -> bytes:
    count = SIZE - 5
    return b"\xdd" + count.to_bytes(4, "big") + b"\x80" * count


def bare_json_array(rid: str) -> bytes:
    count = (SIZE - 2) // 3
    return b"[" + b"{}," * (count - 1) + b"{}]"


SHAPES = {
    "msgpack": (MSGPACK, msgpack_of_empty_maps),
    "json": (JSON, json_of_empty_maps),
    "msgpack-bare": (MSGPACK, bare_msgpack_array),  # no envelope at all: the array is the message
    "json-bare": (JSON, bare_json_array),
}


def peak_rss(pid: int) -> int:
    """VmHWM of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


class Serve:
    """`cmn serve` run from ``SOURCE`` (the interpreter itself is the child, so its PID is the gateway's)."""

    def __init__(self, tmp: Path, upstream_url: str, queue: str) -> None:
        upstreams = tmp / "upstreams.yaml"
        upstreams.write_text(yaml.safe_dump({"upstreams": {"sink": {"endpoints": [upstream_url]}}}))
        self.env = {
            **os.environ,
            "PYTHONPATH": str(SOURCE),
            "CMN_UPSTREAMS_FILE": str(upstreams),
            "AMQP_URL": AMQP_URL,
            "CMN_REQUESTS_QUEUE": queue,
            "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            "ENABLE_METRICS": "false",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
        }
        self.log = tmp / "serve.log"
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Serve:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "serve", env=self.env, cwd=SOURCE, stdout=log, stderr=log
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@pytest.fixture
async def sink(start_upstream: StartUpstream) -> str:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * MIB)
    app.router.add_route("*", "/{tail:.*}", handle)
    return (await start_upstream(app)).url


@pytest.fixture
async def queue() -> AsyncIterator[str]:
    name = f"t.hostile.{uuid.uuid4().hex[:10]}"
    yield name
    await delete_rabbit_topology(name)


async def warm_up(client: GatewayClient) -> None:
    """One answered normal request. A gateway still starting on a busy machine may answer the first
    ones deadline_exceeded (the 2 s budget ran out in the queue): those are tried again too."""
    last = None
    for _ in range(60):
        try:
            last = await client.request("sink", "POST", "/warm", json={"hello": [1, 2, 3]}, timeout=2.0)
        except ReplyTimeoutError:
            continue
        if last.ok:
            return
    raise AssertionError(f"the gateway never answered a normal request: {last}")


@pytest.mark.benchmark
@pytest.mark.timeout(300)
@pytest.mark.parametrize("shape", SHAPES)
async def test_one_hostile_message_raises_peak_rss_by_at_most_3x_its_size(
    shape: str, sink: str, queue: str, tmp_path: Path
) -> None:
    codec, build = SHAPES[shape]
    raw = build(f"bomb-{shape}")
    assert MAX_REQUEST_BYTES - 100 < len(raw) < MAX_REQUEST_BYTES
    async with (
        Serve(tmp_path, sink, queue) as serve,
        GatewayClient(RabbitRequester(AMQP_URL, queue=queue, clock=SystemClock())) as client,
    ):
        await warm_up(client)
        before = peak_rss(serve.pid)
        reply = await client.send_raw(raw, correlation_id=f"bomb-{shape}", content_type=codec, timeout=240)
        after = peak_rss(serve.pid)
    answer = decode_reply(reply.body, reply.content_type)
    rise = after - before
    print(
        f"\n[{shape} from {SOURCE}] message {len(raw) / MIB:.2f} MiB: "
        f"VmHWM {before / MIB:.1f} -> {after / MIB:.1f} MiB, "
        f"rise {rise / MIB:.1f} MiB = {rise / len(raw):.2f}x the message; reply error: {answer.get('error')}"
    )
    if SOURCE == REPO:
        assert answer["error"]["code"] == "invalid_request", answer
        assert "MAX_ENVELOPE_NODES" in answer["error"]["message"]
        assert rise <= 3 * len(raw), f"peak RSS rose {rise / MIB:.1f} MiB for a {len(raw) / MIB:.1f} MiB message"

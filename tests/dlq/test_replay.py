"""`cmn dlq` against real gateways on RabbitMQ and Tansu.

A gateway that knows no upstream ``payments`` dead-letters a GET and a POST to it (unknown_upstream),
a body that is not JSON (invalid_request) and a request whose reply address it refuses
(reply_to_refused). `cmn dlq list` shows them, `show` redacts the GET's Authorization header.
Then a gateway that knows ``payments`` takes over the queue (the fix), and `replay`: --dry-run
changes nothing; the GET is replayed and answered (its second reply, the upstream hit once), the
POST without an idempotency key is skipped until --force; the other two stay; no reply or hit doubled.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from gateway.app import Gateway, load_config
from gateway.bus.base import ReplyMessage
from gateway.bus.embedded import EmbeddedBroker
from gateway.bus.kafka.dlq import KafkaDeadLetters
from gateway.bus.rabbitmq.dlq import RabbitDeadLetters
from gateway.clock import SystemClock
from gateway.settings import load_settings
from tests.fixtures.rabbit import AMQP_URL, wait_until
from tests.fixtures.upstreams import StartUpstream
from tests.integration.harness import delete_rabbit_topology, transport_and_requester

REPO = Path(__file__).resolve().parents[2]


async def cmn(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "dlq", *args, cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture(params=["rabbitmq", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str | None, str]]:
    """(kind, Kafka bootstrap, requests queue): a broker of its own on Kafka, where the dead-letter
    topic is one per broker."""
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    if request.param == "rabbitmq":
        yield "rabbitmq", None, queue
        await delete_rabbit_topology(queue)
        return
    async with EmbeddedBroker(port=0, clock=SystemClock()) as broker:
        yield "kafka", broker.bootstrap, queue


def counting_upstream(hits: Counter[str]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        hits[f"{request.method} {request.path}"] += 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def gateway(
    stack: AsyncExitStack, kind: str, bootstrap: str | None, queue: str, upstreams: dict[str, Any]
) -> Any:
    transport, requester = transport_and_requester(kind, queue, bootstrap)
    settings = load_settings(ENABLE_METRICS=False, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    gw = Gateway(load_config(settings, {"upstreams": upstreams}), transports=[transport])
    await stack.enter_async_context(gw)
    return requester


async def send_refused(kind: str, bootstrap: str | None, queue: str, body: bytes) -> None:
    """A request whose reply address (``elsewhere``) the gateway's pattern refuses."""
    if kind == "rabbitmq":
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            message = aio_pika.Message(body, reply_to="elsewhere", correlation_id="c-refused",
                                       content_type="application/json")  # fmt: skip
            await channel.default_exchange.publish(message, routing_key=queue)
        return
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        headers = [("reply_to", b"elsewhere"), ("correlation_id", b"c-refused"), ("content-type", b"application/json")]
        await producer.send_and_wait(queue, body, headers=headers)
    finally:
        await producer.stop()


def envelope(request_id: str, method: str, path: str, **extra: Any) -> bytes:
    return orjson.dumps({"id": request_id, "upstream": "payments", "method": method, "path": path, **extra})


async def held(kind: str, bootstrap: str | None, queue: str) -> int:
    """How many dead letters the queue holds, read as `cmn dlq list` reads them (nothing removed)."""
    letters = RabbitDeadLetters(AMQP_URL, requests=queue) if kind == "rabbitmq" else None
    dlq = letters or KafkaDeadLetters(bootstrap or "", requests=queue, clock=SystemClock())
    try:
        return len(await dlq.read())
    finally:
        await dlq.aclose()


async def listed(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    code, out, err = await cmn("list", "--format", "json", *args, env=env)
    assert code == 0, err
    rows: list[dict[str, Any]] = orjson.loads(out)
    return rows


async def test_dead_letters_are_listed_shown_and_replayed_once(
    bus: tuple[str, str | None, str], start_upstream: StartUpstream
) -> None:
    kind, bootstrap, queue = bus
    env = {"CMN_REQUESTS_QUEUE": queue, "CMN_UPSTREAMS_FILE": ""}
    env |= {"AMQP_URL": AMQP_URL} if kind == "rabbitmq" else {"KAFKA_BOOTSTRAP_SERVERS": bootstrap or ""}
    hits: Counter[str] = Counter()
    upstream = await start_upstream(counting_upstream(hits))
    replies: Counter[str] = Counter()
    statuses: dict[str, list[int | None]] = {}

    def on_reply(message: ReplyMessage) -> None:
        replies[message.correlation_id or ""] += 1
        statuses.setdefault(message.correlation_id or "", []).append(orjson.loads(message.body).get("status"))

    async with AsyncExitStack() as outer:
        first = await outer.enter_async_context(AsyncExitStack())
        requester = await gateway(first, kind, bootstrap, queue, {"other": {"endpoints": [upstream.url]}})
        await outer.enter_async_context(requester)  # the caller outlives the first gateway
        await requester.start(on_reply)
        get = envelope("r-get", "GET", "/ok", headers={"Authorization": "Bearer s3cr3t-t0ken"})
        for correlation, body in (("c-get", get), ("c-post", envelope("r-post", "POST", "/submit")),
                                  ("c-bad", b"{not json")):  # fmt: skip
            await requester.send(body, content_type="application/json", correlation_id=correlation, headers={})
        await send_refused(kind, bootstrap, queue, envelope("r-refused", "GET", "/ok"))
        await wait_until(lambda: {"c-get", "c-post"} <= set(replies), within=20)

        for _ in range(40):  # the refused one has no reply to wait for
            if await held(kind, bootstrap, queue) == 4:
                break
            await asyncio.sleep(0.25)
        rows = await listed(env)
        assert len(rows) == 4, rows
        by_id = {row["id"]: row for row in rows}
        assert by_id["r-get"]["code"] == "unknown_upstream" and by_id["r-get"]["upstream"] == "payments"
        assert "payments" in by_id["r-get"]["reason"]
        assert by_id["r-refused"]["code"] == "reply_to_refused" and "reply address" in by_id["r-refused"]["reason"]
        [bad] = [row for row in rows if row["code"] == "invalid_request"]
        assert bad["upstream"] is None and not bad["idempotent"]
        assert by_id["r-post"]["idempotent"] is False and by_id["r-get"]["idempotent"] is True

        code, out, _ = await cmn("list", "--code", "unknown_upstream", env=env)
        lines = out.splitlines()
        assert code == 0 and len(lines) == 3 and all(len(line) <= 80 for line in lines)
        assert lines[0].split() == ["ID", "CODE", "REASON", "UPSTREAM", "AGE", "PRINCIPAL"]

        code, out, _ = await cmn("show", "r-get", env=env)
        assert code == 0 and "s3cr3t-t0ken" not in out
        shown = orjson.loads(out)
        assert shown["body"]["headers"]["Authorization"] == "[REDACTED]"
        assert str(requester.reply_address) in shown["reply_to"] and shown["correlation_id"] == "c-get"

        # The fix: a gateway that knows payments takes the queue over.
        await first.aclose()
        async with AsyncExitStack() as second:
            await gateway(second, kind, bootstrap, queue, {"payments": {"endpoints": [upstream.url]}})
            code, out, _ = await cmn("replay", "--dry-run", env=env)
            assert code == 0 and out.startswith("would replay 2, skipped 2 not idempotent"), out
            assert await held(kind, bootstrap, queue) == 4 and not hits

            code, out, _ = await cmn("replay", "--code", "unknown_upstream", env=env)
            assert code == 0 and out.startswith("replayed 1, skipped 1 not idempotent"), out
            assert "r-post" in out
            await wait_until(lambda: replies["c-get"] == 2, within=20)
            assert statuses["c-get"] == [None, 200] and hits == Counter({"GET /ok": 1})
            assert sorted(row["id"] for row in await listed(env, "--code", "unknown_upstream")) == ["r-post"]

            code, out, _ = await cmn("replay", "--code", "unknown_upstream", "--force", env=env)
            assert code == 0 and out.startswith("replayed 1,"), out
            await wait_until(lambda: replies["c-post"] == 2, within=20)
            assert await listed(env, "--code", "unknown_upstream") == []
            # The letters the replays left alone were written again at the topic's end. Tansu can report an
            # end offset short of the newest batch, and the reader stops at the first empty fetch past it:
            # on a slow machine one listing can miss a letter written a moment before (seen once in CI).
            # The letter is still in the topic; the next listing shows it.
            expected = ["invalid_request", "reply_to_refused"]
            for _ in range(20):
                remaining = sorted(row["code"] for row in await listed(env))
                if remaining == expected:
                    break
                await asyncio.sleep(0.5)
            assert remaining == expected
            await asyncio.sleep(0.5)  # a doubled republish would have been answered by now
            assert hits == Counter({"GET /ok": 1, "POST /submit": 1})
            assert replies == Counter({"c-get": 2, "c-post": 2, "c-bad": replies["c-bad"]})
            assert replies["c-bad"] <= 1

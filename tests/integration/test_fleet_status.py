"""`cmn status` over a fleet of real `cmn serve` processes sharing one broker (issue 11, sections 1-2)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiokafka.structs import ConsumerRecord

from gateway.bus.base import CONTROL
from tests.fixtures.kafka import produce, read_topic
from tests.fixtures.rabbit import AMQP_URL, wait_until
from tests.fixtures.upstreams import start_app
from tests.integration.harness import delete_rabbit_topology
from tests.integration.process import REPO, ServeProcess


async def cmn_status(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    """Run `cmn status --format json ARGS` as an operator would: exit code, JSON document, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "status", "--format", "json", *args,
        env={**os.environ, **env}, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, orjson.loads(out), err.decode(errors="replace")


def instances(document: dict[str, Any]) -> list[str]:
    return sorted(replica["instance"] for replica in document["replicas"])


# One fleet per broker serves every test of the module: starting three `cmn serve` processes and
# waiting until each answers takes 8-25 s, and these tests only read the fleet's state (the hostile
# test ends by checking every replica still answers). So the tests run on the fleet's loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module", params=["rabbitmq", "kafka"])
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    if request.param == "rabbitmq":
        return {"AMQP_URL": AMQP_URL, "CMN_REQUESTS_QUEUE": queue}
    return {
        "KAFKA_BOOTSTRAP_SERVERS": request.getfixturevalue("kafka_bootstrap"),
        "CMN_REQUESTS_QUEUE": queue,
        "KAFKA_GROUP_ID": f"g.{queue}",
        "KAFKA_SESSION_TIMEOUT_MS": "1000",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory, broker_env: dict[str, str]) -> AsyncIterator[list[str]]:
    """Three real gateways on one broker; yields their instance ids once each answers `cmn status`."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner, port = await start_app(app)
    upstream_url = f"http://127.0.0.1:{port}"
    tmp_path = tmp_path_factory.mktemp("fleet")
    tag = uuid.uuid4().hex[:8]
    names = [f"fleet-{tag}-{i}" for i in range(3)]
    processes = []
    for name in names:
        (tmp_path / name).mkdir()
        upstreams = {"payments": {"endpoints": [upstream_url]}, "ledger": {"endpoints": [upstream_url]}}
        processes.append(ServeProcess(tmp_path / name, upstreams, {**broker_env, "CMN_INSTANCE": name}))
    try:
        for process in processes:
            await process.start()
        await _until_listed(broker_env, names)
        yield names
    finally:
        for process in processes:
            await process.aclose()
        await runner.cleanup()
        if "AMQP_URL" in broker_env:
            await delete_rabbit_topology(broker_env["CMN_REQUESTS_QUEUE"])


async def _until_listed(env: dict[str, str], names: list[str], within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        code, document, _ = await cmn_status(env, "--wait", "0.5")
        if set(names) <= set(instances(document)):
            return
        if loop.time() > end:
            raise TimeoutError(f"only {instances(document)} answered (exit {code})")


async def test_cmn_status_lists_every_live_replica(fleet: list[str], broker_env: dict[str, str]) -> None:
    code, document, err = await cmn_status(broker_env)
    assert code == 0
    ours = [r for r in document["replicas"] if r["instance"] in fleet]
    assert sorted(r["instance"] for r in ours) == fleet  # each once
    for replica in ours:
        assert replica["drain"] == "consuming"
        assert [u["name"] for u in replica["upstreams"]] == ["ledger", "payments"]
    # No signing keys and REQUIRE_IDENTITY off: the output says so.
    assert any("identity is not configured" in w for w in document["warnings"])
    assert "identity is not configured" in err

    code, narrowed, _ = await cmn_status(broker_env, "--upstream", "payments", "--wait", "0.5")
    ours = [r for r in narrowed["replicas"] if r["instance"] in fleet]
    assert code == 0 and len(ours) == 3
    assert all([u["name"] for u in r["upstreams"]] == ["payments"] for r in ours)

    code, unknown, _ = await cmn_status(broker_env, "--upstream", "nosuch", "--wait", "0.5")
    assert sum(e.split(":")[0] in fleet and "unknown_upstream" in e for e in unknown["errors"]) == 3


HOSTILE = [
    b"\xff\xfe not json",
    b"[1, 2, 3]",
    orjson.dumps({"type": "status", "upstream": "x" * 5000}),  # oversized
    orjson.dumps({"type": "status", "upstream": "../etc"}),  # invalid name
    orjson.dumps({"type": "status", "extra": {"deep": [[[[1]]]]}}),  # unknown field
    orjson.dumps({"type": "drop-tables"}),  # unknown command
]


async def _hostile_over_amqp(fleet: list[str]) -> list[dict[str, Any]]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(CONTROL, aio_pika.ExchangeType.TOPIC, durable=True)
        replies = await channel.declare_queue("", exclusive=True, auto_delete=True)
        answers: list[dict[str, Any]] = []

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            answers.append(orjson.loads(message.body))

        await replies.consume(collect, no_ack=True)
        for i, body in enumerate(HOSTILE):
            await exchange.publish(
                aio_pika.Message(body, reply_to=replies.name, correlation_id=f"h{i}"), routing_key="command"
            )
        # A reply address that is one of the gateway's own queues: no replica writes there.
        await exchange.publish(
            aio_pika.Message(b'{"type": "status"}', reply_to="cmn.requests", correlation_id="x"), routing_key="c"
        )
        await exchange.publish(aio_pika.Message(b'{"type": "status"}'), routing_key="no-reply-to")
        await wait_until(lambda: len([a for a in answers if a["instance"] in fleet]) >= 3 * len(HOSTILE))
        await asyncio.sleep(0.5)  # time for the two dropped commands' answers, were any sent
        return answers


async def _hostile_over_kafka(fleet: list[str], bootstrap: str) -> list[dict[str, Any]]:
    """The same commands from a plain aiokafka producer, answers read from a reply topic of our own."""
    reply_topic = f"cmn.replies.{uuid.uuid4().hex}"
    for i, body in enumerate(HOSTILE):
        headers = [("reply_to", reply_topic.encode()), ("correlation_id", f"h{i}".encode())]
        await produce(bootstrap, CONTROL, [body], headers=headers, key=b"cmn.control")
    # The telemetry topic as a reply address, and no reply address at all: nobody writes anywhere.
    await produce(bootstrap, CONTROL, [b'{"type": "status"}'], headers=[("reply_to", b"cmn.telemetry")])
    await produce(bootstrap, CONTROL, [b'{"type": "status"}'])

    def enough(records: list[ConsumerRecord]) -> bool:
        return len([r for r in records if orjson.loads(r.value)["instance"] in fleet]) >= 3 * len(HOSTILE)

    records = await read_topic(bootstrap, reply_topic, until=enough, within=30.0)
    await asyncio.sleep(0.5)  # time for the dropped commands' answers, were any sent
    records = await read_topic(bootstrap, reply_topic, until=enough, within=30.0)
    return [orjson.loads(r.value) for r in records]


async def test_hostile_commands_are_answered_or_dropped_and_no_replica_crashes(
    fleet: list[str], broker_env: dict[str, str]
) -> None:
    if "AMQP_URL" in broker_env:
        answers = await _hostile_over_amqp(fleet)
    else:
        answers = await _hostile_over_kafka(fleet, broker_env["KAFKA_BOOTSTRAP_SERVERS"])
    ours = [a for a in answers if a["instance"] in fleet]
    codes = sorted({a["error"] for a in ours})
    assert len(ours) == 3 * len(HOSTILE)
    assert not any(a["ok"] for a in ours)
    assert codes == ["invalid", "too_large", "unknown_command"]
    code, document, _ = await cmn_status(broker_env)  # every replica still answers
    assert code == 0 and set(fleet) <= set(instances(document))

"""The `cmn` commands as a user runs them: real processes against real brokers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aio_pika
import orjson
import pytest

from gateway.bus.rabbitmq_topology import STREAM_ARGUMENTS
from tests.fixtures.rabbit import AMQP_URL
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import StackFactory

REPO = Path(__file__).resolve().parents[1]


async def cmn(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_request_and_telemetry_commands(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url]}})
    if stack.kind == "rabbitmq":
        env = {"AMQP_URL": AMQP_URL, "CMN_REQUESTS_QUEUE": stack.queue}
    else:
        env = {"KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap or "", "CMN_REQUESTS_QUEUE": stack.queue}
    code, out, err = await cmn("request", "echo", "post", "/cli?x=1", "--json", '{"a": 1}', env=env)
    assert code == 0, err
    reply = orjson.loads(out)
    assert reply["status"] == 200 and reply["json"]["path"] == "/cli?x=1"
    if stack.kind == "rabbitmq":
        await mark_shared_telemetry_stream()  # the stack's own stream is not the one `cmn telemetry` reads
    code, out, err = await cmn("telemetry", "--from-beginning", "--count", "1", env=env)
    assert code == 0, err
    assert orjson.loads(out.splitlines()[0])["type"]


async def mark_shared_telemetry_stream() -> None:
    """One event on the shared cmn.telemetry stream, which no other test need have written."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("cmn.telemetry", aio_pika.ExchangeType.TOPIC, durable=True)
        stream = await channel.declare_queue("cmn.telemetry", durable=True, arguments=dict(STREAM_ARGUMENTS))
        await stream.bind(exchange, routing_key="#")
        event = orjson.dumps({"type": "test.marker", "ts": 0.0, "gateway": "test", "data": {}})
        await exchange.publish(aio_pika.Message(event, content_type="application/json"), routing_key="test.marker")


async def test_request_to_unknown_upstream_exits_nonzero_with_the_error(make_stack: StackFactory) -> None:
    stack = await make_stack({"echo": {"endpoints": ["http://127.0.0.1:9"]}})
    if stack.kind != "rabbitmq":
        return  # one broker is enough for the exit-code contract
    env = {"AMQP_URL": AMQP_URL, "CMN_REQUESTS_QUEUE": stack.queue}
    code, out, _ = await cmn("request", "nowhere", "GET", "/", env=env)
    assert code == 1 and orjson.loads(out)["error"]["code"] == "unknown_upstream"


async def test_serve_without_broker_starts_the_embedded_one(tmp_path: Path, unused_port: int) -> None:
    upstreams = tmp_path / "u.yaml"
    upstreams.write_text("upstreams:\n  echo:\n    endpoints: [http://127.0.0.1:9]\n")
    env = {
        **os.environ,
        "CMN_UPSTREAMS_FILE": str(upstreams),
        "EMBEDDED_BROKER_PORT": str(unused_port),
        "KAFKA_SESSION_TIMEOUT_MS": "1000",
    }
    for name in ("AMQP_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    seen = ""
    try:
        async with asyncio.timeout(30):
            while "cmn serving" not in seen:
                seen += (await process.stderr.readline()).decode()
        assert f"embedded Kafka-protocol broker (Tansu) on 127.0.0.1:{unused_port}" in " ".join(seen.split())
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    # The embedded broker stopped with the gateway.
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", unused_port)
        writer.close()
        raise AssertionError("the embedded broker outlived `cmn serve`")
    except OSError:
        pass


async def test_bad_configuration_stops_startup_with_one_clear_message(tmp_path: Path) -> None:
    upstreams = tmp_path / "u.yaml"
    upstreams.write_text("upstreams:\n  echo:\n    endpoints: []\n")
    code, _, err = await cmn("serve", env={"CMN_UPSTREAMS_FILE": str(upstreams)})
    assert code == 2 and "upstreams.echo.endpoints" in err
    code, _, err = await cmn("serve", env={"POOL_SIZE": "lots"})
    assert code == 2 and "POOL_SIZE" in err


async def test_schemas_check_passes_on_the_committed_contract() -> None:
    code, _, err = await cmn("schemas", "--check", "--out", str(REPO / "schemas"))
    assert code == 0, err


async def test_demo_runs_end_to_end() -> None:
    code, out, err = await cmn("demo", "--requests", "60", "--concurrency", "8", timeout=120)
    assert code == 0, err
    assert "latency p95" in out and "requests" in out


async def test_request_signs_with_a_key_from_a_file(
    make_stack: StackFactory, echo_upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMN_TEST_KEY_CLI", "cli-secret-1")
    security = {"keys": {"cli-1": {"principal": "ops", "secret": {"env": "CMN_TEST_KEY_CLI"}}}}
    guarded = {"echo": {"endpoints": [echo_upstream.url], "access": {"allow": ["ops"]}}}
    stack = await make_stack(guarded, security=security)
    if stack.kind == "rabbitmq":
        env = {"AMQP_URL": AMQP_URL, "CMN_REQUESTS_QUEUE": stack.queue}
    else:
        env = {"KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap or "", "CMN_REQUESTS_QUEUE": stack.queue}
    secret = tmp_path / "secret"
    secret.write_text("cli-secret-1\n")
    code, out, err = await cmn(
        "request", "echo", "GET", "/", "--key-id", "cli-1", "--secret-file", str(secret), env=env
    )
    assert code == 0, err
    assert orjson.loads(out)["status"] == 200
    code, out, _ = await cmn("request", "echo", "GET", "/", env=env)
    assert code == 1 and orjson.loads(out)["error"]["code"] == "forbidden"
    code, _, err = await cmn("request", "echo", "GET", "/", "--key-id", "cli-1", env=env)
    assert code == 2 and "go together" in err

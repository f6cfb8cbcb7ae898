"""The `cmn` commands as a user runs them: real processes against real brokers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures.rabbit import AMQP_URL
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import Stack, StackFactory, delete_rabbit_topology

REPO = Path(__file__).resolve().parents[2]


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


def broker_env(stack: Stack) -> dict[str, str]:
    """What `cmn request`/`cmn telemetry` need to reach a test stack's queue."""
    if stack.kind == "rabbitmq":
        return {"AMQP_URL": AMQP_URL, "CMN_REQUESTS_QUEUE": stack.queue}
    return {"KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap or "", "CMN_REQUESTS_QUEUE": stack.queue}


async def telemetry_about(request_id: str, *args: str, env: dict[str, str], within: float = 30) -> dict[str, Any]:
    """Follows `cmn telemetry ARGS` until an event about ``request_id`` is printed, then stops it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "telemetry", *args, cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(within):
            while line := await process.stdout.readline():
                event: dict[str, Any] = orjson.loads(line)
                if event["data"].get("request_id") == request_id:
                    return event
        raise AssertionError(f"`cmn telemetry` ended without {request_id}: {(await process.stderr.read())!r}")
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_request_and_telemetry_commands(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url]}})
    env = broker_env(stack)
    code, out, err = await cmn("request", "echo", "post", "/cli?x=1", "--json", '{"a": 1}', env=env)
    assert code == 0, err
    reply = orjson.loads(out)
    assert reply["status"] == 200 and reply["json"]["path"] == "/cli?x=1"
    # The stack's own stream: on RabbitMQ the harness names it after the queue, on Kafka it is
    # cmn.telemetry of the module's broker.
    stream = ["--stream", f"{stack.queue}.telemetry"] if stack.kind == "rabbitmq" else []
    event = await telemetry_about(reply["id"], "--from-beginning", *stream, env=env)
    assert event["type"] == "request.completed"
    assert event["data"]["upstream"] == "echo" and event["data"]["status_code"] == 200
    assert event["gateway"] == stack.gateway.instance


# RabbitMQ only: --fail reads the reply, whichever broker carried it, and `cmn request` over Kafka is
# covered by test_request_and_telemetry_commands and test_request_signs_with_a_key_from_a_file.
@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
async def test_request_fail_exits_22_on_an_upstream_error_status(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url], "retry": {"attempts": 1}}})
    env = broker_env(stack)
    code, out, _ = await cmn("request", "echo", "GET", "/x?status=404", env=env)
    assert code == 0 and orjson.loads(out)["status"] == 404  # an answer is an answer, as curl
    code, out, _ = await cmn("request", "echo", "GET", "/x?status=404", "--fail", env=env)
    assert code == 22 and orjson.loads(out)["status"] == 404  # printed all the same
    code, _, _ = await cmn("request", "echo", "GET", "/x?status=200", "--fail", env=env)
    assert code == 0


async def test_telemetry_stream_option_is_refused_on_kafka(kafka_bootstrap: str) -> None:
    code, _, err = await cmn("telemetry", "--stream", "elsewhere", env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    assert code == 2 and "cmn.telemetry" in err


async def test_request_to_unknown_upstream_exits_nonzero_with_the_error(make_stack: StackFactory) -> None:
    stack = await make_stack({"echo": {"endpoints": ["http://127.0.0.1:9"]}})
    code, out, _ = await cmn("request", "nowhere", "GET", "/", env=broker_env(stack))
    assert code == 1 and orjson.loads(out)["error"]["code"] == "unknown_upstream"


async def test_serve_without_broker_starts_the_embedded_one(tmp_path: Path, unused_port: int) -> None:
    upstreams = tmp_path / "u.yaml"
    upstreams.write_text("upstreams:\n  echo:\n    endpoints: [http://127.0.0.1:9]\n")
    env = {
        **os.environ,
        "CMN_UPSTREAMS_FILE": str(upstreams),
        "EMBEDDED_BROKER_PORT": str(unused_port),
        "KAFKA_SESSION_TIMEOUT_MS": "1000",
        "LOG_FORMAT": "json",
    }
    for name in ("AMQP_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            while not lines or lines[-1]["event"] != "cmn_serving":
                # Every line, the start-up ones included, is JSON (a plain banner would raise here).
                lines.append(orjson.loads(await process.stderr.readline()))
        [embedded] = [line for line in lines if line["event"] == "embedded_broker"]
        assert embedded["bootstrap"] == f"127.0.0.1:{unused_port}" and embedded["level"] == "warning"
        assert "not for production" in embedded["note"]
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


async def test_demo_exits_nonzero_when_every_request_fails() -> None:
    # The demo's 10 s requests are over a 1 s cap: every one is refused as invalid_request.
    code, out, err = await cmn("demo", "--requests", "6", "--concurrency", "3", env={"MAX_TIMEOUT_MS": "1000"})
    assert code == 1, out + err
    assert re.search(r"status invalid_request\s*│\s*6\s*│", out), out
    assert "every one of the 6 requests failed (6 invalid_request)" in " ".join(err.split())


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


async def test_serve_warns_when_no_upstream_is_configured(tmp_path: Path) -> None:
    queue = f"t.requests.empty-{uuid.uuid4().hex[:8]}"
    upstreams = tmp_path / "u.yaml"
    upstreams.write_text("upstreams: {}\n")
    env = {
        **os.environ,
        "CMN_UPSTREAMS_FILE": str(upstreams),
        "AMQP_URL": AMQP_URL,
        "CMN_REQUESTS_QUEUE": queue,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            while not lines or lines[-1]["event"] != "cmn_serving":  # written at WARNING too
                lines.append(orjson.loads(await process.stderr.readline()))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            # Read what it writes while stopping: a full pipe must not hold it up, and a slow stop says why.
            _, rest = await asyncio.wait_for(process.communicate(), 30)
        except TimeoutError:
            process.kill()
            _, rest = await process.communicate()
            raise AssertionError(f"cmn serve did not stop within 30 s of SIGTERM:\n{rest.decode()[-4000:]}") from None
        finally:
            await delete_rabbit_topology(queue)
    [warning] = [line for line in lines if line["event"] == "no_upstreams"]
    assert warning["level"] == "warning" and "unknown_upstream" in warning["hint"]


async def test_only_the_named_command_group_is_imported() -> None:
    """`cmn request`/`status`/`dlq` start without importing the whole gateway (the certs and audit
    groups pull in gateway.app); `cmn --help` still lists every group."""
    probe = (
        "import sys\n"
        "from gateway.cli import main\n"
        "sys.argv = ['cmn', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('gateway.app' in sys.modules, file=sys.stderr)\n"
    )
    for args, heavy in ((["dlq", "--help"], False), (["status", "--help"], False), (["--help"], True)):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", probe, *args, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0 and err.decode().split() == [str(heavy)], (args, err)
        if heavy:
            assert all(group in out.decode() for group in ("certs", "dlq", "audit"))

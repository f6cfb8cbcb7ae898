"""Every `cmn` failure is one line and an exit code, never a traceback (issue 13, item 3): real
`cmn` processes, each case a user met."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from gateway.cli.errors import one_line
from gateway.errors import BusUnavailableError, ConfigError, UpstreamTimeoutError
from tests.cli.test_commands import REPO, cmn
from tests.fixtures.rabbit import AMQP_URL

NO_BROKER = {"AMQP_URL": "", "KAFKA_BOOTSTRAP_SERVERS": ""}


def one_line_on_stderr(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("cmn: ")
    return lines[0]


async def test_certs_list_on_an_upstreams_file_without_certificates_lists_nothing(tmp_path: Path) -> None:
    upstreams = tmp_path / "u.yaml"
    upstreams.write_text("upstreams:\n  a:\n    endpoints: [http://127.0.0.1:9]\n")
    code, out, err = await cmn("certs", "list", "--config", str(upstreams))
    assert code == 0 and out == "" and one_line_on_stderr(err) == "cmn: no certificates configured"


async def test_certs_list_on_a_missing_file_says_so(tmp_path: Path) -> None:
    code, _, err = await cmn("certs", "list", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read" in one_line_on_stderr(err) and "No such file" in err


async def test_a_busy_metrics_port_is_one_line(tmp_path: Path) -> None:
    upstreams = tmp_path / "u.yaml"
    upstreams.write_text("upstreams:\n  a:\n    endpoints: [http://127.0.0.1:9]\n")
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {"AMQP_URL": AMQP_URL, "CMN_REQUESTS_QUEUE": "t.busy-port", "ENABLE_METRICS": "true",
               "METRICS_PORT": str(port), "CMN_UPSTREAMS_FILE": str(upstreams), "LOG_LEVEL": "ERROR"}  # fmt: skip
        code, _, err = await cmn("serve", env=env)
    assert code == 2 and f"METRICS_PORT {port}" in one_line_on_stderr(err)


async def test_request_without_a_broker_names_the_one_it_tried_and_how_to_set_one(unused_port: int) -> None:
    env = {**NO_BROKER, "EMBEDDED_BROKER_PORT": str(unused_port)}
    code, out, err = await cmn("request", "a", "GET", "/x", "--timeout", "2", env=env)
    line = one_line_on_stderr(err)
    assert code == 1 and out == ""
    assert f"embedded broker at 127.0.0.1:{unused_port}" in line and "set AMQP_URL or KAFKA_BOOTSTRAP_SERVERS" in line
    assert "internal" not in line


async def test_request_with_no_gateway_running_says_what_it_waited_for() -> None:
    env = {"AMQP_URL": AMQP_URL, "CMN_REQUESTS_QUEUE": "t.nobody-serves"}
    code, _, err = await cmn("request", "a", "GET", "/x", "--timeout", "0.5", env=env)
    line = one_line_on_stderr(err)
    assert code == 1 and "no reply within 0.5 s" in line and "RabbitMQ at" in line and "cmn serve" in line
    assert "guest:guest" not in line  # the broker password is never shown


async def test_a_broker_password_is_never_echoed() -> None:
    env = {"AMQP_URL": "amqp://svc:hunter2-pw@127.0.0.1:1/"}
    code, _, err = await cmn("request", "a", "GET", "/x", "--timeout", "1", env=env)
    assert code == 1 and "hunter2-pw" not in err and "127.0.0.1:1" in one_line_on_stderr(err)


async def test_telemetry_says_what_it_follows_before_the_first_event() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "telemetry", cwd=REPO, env={**os.environ, "AMQP_URL": AMQP_URL},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:  # closing a busy shared stream may take long: the line is what this test is about
            process.kill()
            await process.wait()
    assert line.startswith("cmn: following cmn.telemetry on RabbitMQ at") and "Ctrl-C" in line


async def test_schemas_check_says_ok_and_version_exists() -> None:
    code, _, err = await cmn("schemas", "--check")
    assert code == 0 and "up to date" in one_line_on_stderr(err)
    code, out, _ = await cmn("--version")
    assert code == 0 and out.startswith("cmn ")


async def test_bad_settings_are_one_line_with_the_variable() -> None:
    code, _, err = await cmn("request", "a", "GET", "/", env={"AMQP_URL": "http://user:pw-x1@host/"})
    line = one_line_on_stderr(err)
    assert code == 2 and "AMQP_URL" in line and "amqp://" in line and "pw-x1" not in line
    code, _, err = await cmn("status", env={"LOG_LEVEL": "verbose"})
    assert code == 2 and "LOG_LEVEL" in one_line_on_stderr(err)


async def test_cmn_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {"CMN_UPSTREAMS_FILE": str(tmp_path / "missing.yaml"), "CMN_DEBUG": "1"}
    code, _, err = await cmn("serve", env=env)
    assert code == 1 and "Traceback" in err and "ConfigError" in err


@pytest.mark.parametrize(
    ("error", "line", "code"),
    [
        (ConfigError("CMN_UPSTREAMS_FILE: cannot read x"), "CMN_UPSTREAMS_FILE: cannot read x", 2),
        (BusUnavailableError("cannot connect to RabbitMQ at amqp://u:***@h/"), "cannot connect to RabbitMQ at", 1),
        (UpstreamTimeoutError("no reply"), "timeout: no reply", 1),
        (FileNotFoundError(2, "No such file or directory", "/x.yaml"), "/x.yaml: No such file or directory", 2),
        (RuntimeError("amqp://u:secret-pw@h/ broke\nsecond line"), "unexpected RuntimeError: amqp://", 1),
    ],
)
def test_one_line_per_kind_of_failure(error: BaseException, line: str, code: int) -> None:
    text, exit_code = one_line(error)
    assert text.startswith(line) and exit_code == code
    assert "\n" not in text and "secret-pw" not in text

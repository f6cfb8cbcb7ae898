"""`cmn`: serve, request, telemetry, status, breaker, demo, schemas, certs, audit.

The only place that reads the process environment."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from gateway.errors import ConfigError, GatewayError
from gateway.settings import Settings, load_settings

app = typer.Typer(help="CMN: an event-driven integration gateway.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (10-40 % faster here), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]cmn: {exc.message}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def serve(
    upstreams: Annotated[Path | None, typer.Option(help="Upstreams YAML (default: $CMN_UPSTREAMS_FILE).")] = None,
) -> None:
    """Run gateway workers for every configured broker (the embedded broker when none is)."""
    from gateway.app import Gateway, load_config
    from gateway.telemetry.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if upstreams is not None:
        settings = settings.model_copy(update={"upstreams_file": upstreams})
    try:
        config = load_config(settings)
    except ConfigError as exc:
        console.print(f"[red]cmn: {exc.message}[/red]")
        raise typer.Exit(2) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with Gateway(config) as gateway:
            gateway.tune_process()  # this process is the gateway's own: see Gateway.tune_process
            if gateway.embedded_bootstrap:
                console.print(
                    f"[yellow]No broker configured: started the embedded Kafka-protocol broker (Tansu) on "
                    f"{gateway.embedded_bootstrap}. For trying CMN and development, not for production.[/yellow]"
                )
            console.print(f"[green]cmn serving[/green] {escape(repr(gateway))}")
            await gateway.serve_until(stop)

    try:
        _run(main())
    except GatewayError as exc:
        console.print(f"[red]cmn: {exc.message}[/red]")
        raise typer.Exit(1) from exc


async def _client(settings: Settings, msgpack: bool, *, stream: str | None = None, **signing: Any) -> Any:
    """A client for the configured broker; ``signing`` is ``key_id`` and ``secret`` when given;
    ``stream`` the RabbitMQ telemetry stream to read (``cmn.telemetry`` when None)."""
    from gateway.client import GatewayClient
    from gateway.envelope.codec import JSON, MSGPACK

    codec = MSGPACK if msgpack else JSON
    if settings.amqp_url:
        queue = settings.requests_queue
        telemetry = {"telemetry": stream} if stream else {}
        return GatewayClient.rabbitmq(settings.amqp_url, codec=codec, queue=queue, **telemetry, **signing)
    bootstrap = settings.kafka_bootstrap_servers or f"127.0.0.1:{settings.embedded_broker_port}"
    security = await _kafka_security(settings)
    return GatewayClient.kafka(bootstrap, codec=codec, topic=settings.requests_queue, security=security, **signing)


async def _kafka_security(settings: Settings) -> Any:
    """KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* as the gateway reads them. A named client
    certificate is loaded once from CMN_UPSTREAMS_FILE's `certificates:` (a CLI run needs no renewals)."""
    from gateway.clock import SystemClock
    from gateway.wiring import build_kafka_security

    certificates = None
    if settings.kafka_ssl_certificate:
        from gateway.app import load_config

        certificates = load_config(settings).certificates
    return await build_kafka_security(settings, certificates=certificates, clock=SystemClock())


def _signing(key_id: str | None, secret_file: Path | None) -> dict[str, str]:
    if key_id is None and secret_file is None:
        return {}
    if key_id is None or secret_file is None:
        console.print("[red]cmn: --key-id and --secret-file go together[/red]")
        raise typer.Exit(2)
    try:
        secret = secret_file.read_text().rstrip("\r\n")
    except OSError as exc:
        console.print(f"[red]cmn: cannot read {secret_file}: {exc.strerror}[/red]")
        raise typer.Exit(2) from exc
    return {"key_id": key_id, "secret": secret}


@app.command()
def request(
    upstream: str,
    method: str,
    path: str,
    json_body: Annotated[str | None, typer.Option("--json", help="JSON request body.")] = None,
    body: Annotated[str | None, typer.Option(help="Text request body.")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds.")] = 10.0,
    msgpack: Annotated[bool, typer.Option(help="Use the msgpack codec.")] = False,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    key_id: Annotated[str | None, typer.Option(help="Sign the envelope with this key (security.keys).")] = None,
    secret_file: Annotated[
        Path | None, typer.Option(help="File holding the signing key's secret (never on the command line).")
    ] = None,
) -> None:
    """Send one request through the bus and print the reply."""
    settings = _settings()
    signing = _signing(key_id, secret_file)
    headers = dict(h.split(":", 1) for h in header or [])
    kwargs: dict[str, Any] = {"headers": {k.strip(): v.strip() for k, v in headers.items()}}
    if json_body is not None:
        kwargs["json"] = orjson.loads(json_body)
    elif body is not None:
        kwargs["body"] = body

    async def main() -> int:
        async with await _client(settings, msgpack, **signing) as client:
            reply = await client.request(
                upstream, method.upper(), path, timeout=timeout, idempotency_key=idempotency_key, **kwargs
            )
        sys.stdout.write(reply.model_dump_json(by_alias=True, indent=2) + "\n")
        return 0 if reply.error is None else 1

    try:
        code = _run(main())
    except GatewayError as exc:
        console.print(f"[red]cmn: {exc.code}: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


@app.command()
def telemetry(
    from_beginning: Annotated[bool, typer.Option(help="Replay the stream from its start.")] = False,
    count: Annotated[int, typer.Option(help="Stop after N events (0 = follow forever).")] = 0,
    stream: Annotated[
        str | None,
        typer.Option(help="RabbitMQ: the telemetry stream to read, for a gateway that writes one of its own."),
    ] = None,
) -> None:
    """Tail the cmn.telemetry stream as JSON lines."""
    from gateway.bus.base import TELEMETRY

    settings = _settings()
    if stream and not settings.amqp_url and stream != TELEMETRY:
        console.print(f"[red]cmn: --stream names a RabbitMQ stream; a Kafka gateway writes {TELEMETRY}[/red]")
        raise typer.Exit(2)

    async def main() -> None:
        seen = 0
        async with await _client(settings, False, stream=stream) as client:
            async for event in client.telemetry(from_beginning=from_beginning):
                sys.stdout.write(event.model_dump_json() + "\n")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        try:
            _run(main())
        except GatewayError as exc:
            console.print(f"[red]cmn: {exc.message}[/red]")
            raise typer.Exit(1) from exc


@app.command()
def demo(
    requests: Annotated[int, typer.Option("--requests", "-n", help="How many requests to send.")] = 2000,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 64,
) -> None:
    """Embedded broker + a local sample upstream + the gateway; send a batch and show the results.
    Exits 1 when every request failed."""
    from gateway.demo import run_demo
    from gateway.telemetry.logging import configure_logging

    configure_logging("WARNING", "console")
    try:
        _run(run_demo(requests=requests, concurrency=concurrency, console=Console()))
    except GatewayError as exc:
        console.print(f"[red]cmn demo: {exc.message}[/red]")
        raise typer.Exit(1) from exc


@app.command()
def schemas(
    out: Annotated[Path, typer.Option(help="Directory to write to.")] = Path("schemas"),
    check: Annotated[bool, typer.Option(help="Fail when the directory is stale instead of writing.")] = False,
) -> None:
    """Write (or check) the wire contract: JSON Schemas and the AsyncAPI document."""
    from gateway.envelope.schema import render, write

    if check:
        stale = [n for n, data in render().items() if not (out / n).exists() or (out / n).read_bytes() != data]
        if stale:
            console.print(f"[red]stale: {', '.join(stale)} (run `cmn schemas`)[/red]")
            raise typer.Exit(1)
        return
    for path in write(out):
        console.print(f"wrote {path}")


class StatusFormat(StrEnum):
    table = "table"
    json = "json"


@app.command()
def status(
    format: Annotated[StatusFormat, typer.Option("--format", help="table (80 columns) or json.")] = StatusFormat.table,
    upstream: Annotated[str | None, typer.Option(help="Only this upstream.")] = None,
    wait: Annotated[float, typer.Option(min=0.05, max=60.0, help="Seconds to gather answers.")] = 1.0,
    key_id: Annotated[str | None, typer.Option(help="Sign the command with this key (security.keys).")] = None,
    secret_file: Annotated[
        Path | None, typer.Option(help="File holding the signing key's secret (never on the command line).")
    ] = None,
) -> None:
    """Every live replica's state (breakers, ejections, pools, rate limits, health), over cmn.control."""
    from gateway.clock import SystemClock
    from gateway.control.status import Format, StatusReport, gather_status, render
    from gateway.telemetry.logging import configure_logging

    settings = _settings()
    configure_logging("WARNING", settings.log_format)  # on stderr: stdout carries the table or JSON
    signing = _signing(key_id, secret_file)

    async def main() -> StatusReport:
        security = None if settings.amqp_url else await _kafka_security(settings)
        return await gather_status(
            settings, upstream=upstream, wait=wait, clock=SystemClock(), security=security, **signing
        )

    try:
        report = _run(main())
    except GatewayError as exc:
        console.print(f"[red]cmn: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    for warning in report.warnings:
        console.print(f"[yellow]cmn: {escape(warning)}[/yellow]")
    for error in report.errors:
        console.print(f"[red]cmn: {escape(error)}[/red]")
    print(render(report, Format(format.value)))
    if not report.answers:
        raise typer.Exit(1)


class BreakerAction(StrEnum):
    open = "open"
    close = "close"
    reset = "reset"


@app.command()
def breaker(
    action: Annotated[BreakerAction, typer.Argument(help="open (forced open), close (forced closed), reset.")],
    upstream: Annotated[str, typer.Argument(help="The upstream whose breakers to force.")],
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint URL of the upstream.")] = None,
    for_: Annotated[str, typer.Option("--for", help="How long the forcing lasts: 90s, 30m, 2h, 1d.")] = "1h",
    wait: Annotated[float, typer.Option(min=0.05, max=60.0, help="Seconds to gather answers.")] = 1.0,
    key_id: Annotated[str | None, typer.Option(help="Sign the command with this key (security.keys).")] = None,
    secret_file: Annotated[
        Path | None, typer.Option(help="File holding the signing key's secret (never on the command line).")
    ] = None,
) -> None:
    """Force the breakers of every live replica open or closed, or back to automatic, over cmn.control.

    Changes state: each replica obeys only a principal in its CONTROL_PRINCIPALS (on RabbitMQ, the
    broker user, or the principal of the --key-id signing key). A forced state expires after --for
    (1 h by default)."""
    from pydantic import ValidationError

    from gateway.clock import SystemClock
    from gateway.control.breaker import BreakerCommand, describe, parse_for, send_breaker
    from gateway.control.messages import Answer
    from gateway.telemetry.logging import configure_logging

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    try:
        command = BreakerCommand(action=action.value, upstream=upstream, endpoint=endpoint, duration=parse_for(for_))
    except (ValueError, ValidationError) as exc:
        console.print(f"[red]cmn: {escape(str(exc).splitlines()[0])}[/red]")
        raise typer.Exit(2) from exc
    signing = _signing(key_id, secret_file)

    async def main() -> list[Answer]:
        security = None if settings.amqp_url else await _kafka_security(settings)
        return await send_breaker(settings, command, wait=wait, clock=SystemClock(), security=security, **signing)

    try:
        answers = _run(main())
    except GatewayError as exc:
        console.print(f"[red]cmn: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    done, failed = describe(answers, command)
    for line in failed:
        console.print(f"[red]cmn: {escape(line)}[/red]")
    for line in done:
        print(line)
    if not answers:
        console.print("[red]cmn: no replica answered[/red]")
    if failed or not answers:
        raise typer.Exit(1)


def _mount_certs() -> None:
    from gateway.certs.cli import certs_app

    app.add_typer(certs_app, name="certs", help="Certificates: development CA, listing.")


def _mount_dlq() -> None:
    from gateway.dlq.cli import dlq_app

    async def open_queue() -> Any:
        settings = _settings()
        if settings.amqp_url:
            from gateway.bus.rabbitmq.dlq import RabbitDeadLetters

            return RabbitDeadLetters(settings.amqp_url, requests=settings.requests_queue)
        from gateway.bus.kafka.dlq import KafkaDeadLetters

        bootstrap = settings.kafka_bootstrap_servers or f"127.0.0.1:{settings.embedded_broker_port}"
        security = await _kafka_security(settings)
        return KafkaDeadLetters(bootstrap, requests=settings.requests_queue, security=security)

    def security() -> Any:
        settings = _settings()
        if settings.upstreams_file is None:
            return None
        from gateway.app import load_config

        try:
            return load_config(settings).security
        except ConfigError:
            return None  # principals are then shown by key id

    app.add_typer(
        dlq_app(open_queue=open_queue, security=security, signing=_signing, run=_run),
        name="dlq",
        help="Dead letters: list, show, replay to the requests queue.",
    )


def _mount_audit() -> None:
    from gateway.security.audit.cli import audit

    app.command("audit")(audit)


def main() -> None:
    _mount_certs()
    _mount_dlq()
    _mount_audit()
    app()


if __name__ == "__main__":
    main()

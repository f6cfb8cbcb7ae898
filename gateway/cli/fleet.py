"""`cmn status`, `cmn breaker` and `cmn dlq`: acting on the whole fleet through its broker."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.common import fail, kafka_security, run, say, settings, signing
from gateway.errors import ConfigError


class StatusFormat(StrEnum):
    table = "table"
    json = "json"


KeyIdOption = Annotated[str | None, typer.Option(help="Sign the command with this key (security.keys).")]
SecretFileOption = Annotated[
    Path | None, typer.Option(help="File holding the signing key's secret (never on the command line).")
]
WaitOption = Annotated[float, typer.Option(min=0.05, max=60.0, help="Seconds to gather answers.")]


def status(
    format: Annotated[StatusFormat, typer.Option("--format", help="table (80 columns) or json.")] = StatusFormat.table,
    upstream: Annotated[str | None, typer.Option(help="Only this upstream.")] = None,
    wait: WaitOption = 1.0,
    key_id: KeyIdOption = None,
    secret_file: SecretFileOption = None,
) -> None:
    """Every live replica's state (breakers, ejections, pools, rate limits, health), over cmn.control."""
    from gateway.clock import SystemClock
    from gateway.control.status import Format, StatusReport, gather_status, render
    from gateway.telemetry.logging import configure_logging

    s = settings()
    configure_logging("WARNING", s.log_format)  # on stderr: stdout carries the table or JSON
    signed = signing(key_id, secret_file)

    async def main() -> StatusReport:
        security = None if s.amqp_url else await kafka_security(s)
        return await gather_status(s, upstream=upstream, wait=wait, clock=SystemClock(), security=security, **signed)

    report = run(main())
    for warning in report.warnings:
        say(f"cmn: {warning}", style="yellow")
    for error in report.errors:
        say(f"cmn: {error}", style="red")
    print(render(report, Format(format.value)))
    if not report.answers:
        raise typer.Exit(1)


class BreakerAction(StrEnum):
    open = "open"
    close = "close"
    reset = "reset"


def breaker(
    action: Annotated[BreakerAction, typer.Argument(help="open (forced open), close (forced closed), reset.")],
    upstream: Annotated[str, typer.Argument(help="The upstream whose breakers to force.")],
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint URL of the upstream.")] = None,
    for_: Annotated[str, typer.Option("--for", help="How long the forcing lasts: 90s, 30m, 2h, 1d.")] = "1h",
    wait: WaitOption = 1.0,
    key_id: KeyIdOption = None,
    secret_file: SecretFileOption = None,
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

    s = settings()
    configure_logging("WARNING", s.log_format)
    try:
        command = BreakerCommand(action=action.value, upstream=upstream, endpoint=endpoint, duration=parse_for(for_))
    except (ValueError, ValidationError) as exc:
        raise fail(str(exc).splitlines()[0], 2) from exc
    signed = signing(key_id, secret_file)

    async def main() -> list[Answer]:
        security = None if s.amqp_url else await kafka_security(s)
        return await send_breaker(s, command, wait=wait, clock=SystemClock(), security=security, **signed)

    answers = run(main())
    done, failed = describe(answers, command)
    for line in failed:
        say(f"cmn: {line}", style="red")
    for line in done:
        print(line)
    if not answers:
        say("cmn: no replica answered", style="red")
    if failed or not answers:
        raise typer.Exit(1)


def dlq_commands() -> typer.Typer:
    from gateway.dlq.cli import dlq_app

    async def open_queue() -> Any:
        s = settings()
        if s.amqp_url:
            from gateway.bus.rabbitmq.dlq import RabbitDeadLetters

            return RabbitDeadLetters(s.amqp_url, requests=s.requests_queue)
        from gateway.bus.kafka.dlq import KafkaDeadLetters
        from gateway.clock import SystemClock

        bootstrap = s.kafka_bootstrap_servers or f"127.0.0.1:{s.embedded_broker_port}"
        return KafkaDeadLetters(
            bootstrap, requests=s.requests_queue, security=await kafka_security(s), clock=SystemClock()
        )

    def security() -> Any:
        s = settings()
        if s.upstreams_file is None:
            return None
        from gateway.app import load_config

        try:
            return load_config(s).security
        except ConfigError:
            return None  # principals are then shown by key id

    return dlq_app(open_queue=open_queue, security=security, signing=signing, run=run)

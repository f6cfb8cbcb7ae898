"""`cmn request` and `cmn telemetry`: a request through the bus, and the telemetry stream."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from gateway.cli.common import broker, client, fail, quiet_libraries, run, say, settings, signing
from gateway.errors import BusUnavailableError

NO_BROKER_HINT = "set AMQP_URL or KAFKA_BOOTSTRAP_SERVERS to the broker your gateways use"


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
    fail_on_status: Annotated[
        bool, typer.Option("--fail", help="Exit 22 when the upstream answers 4xx or 5xx (as curl --fail).")
    ] = False,
) -> None:
    """Send one request through the bus and print the reply. Exits 1 on an error reply."""
    from gateway.client import ReplyTimeoutError

    s = settings()
    quiet_libraries()
    signed = signing(key_id, secret_file)
    kwargs: dict[str, Any] = {"headers": _headers(header or [])}
    if json_body is not None:
        try:
            kwargs["json"] = orjson.loads(json_body)
        except orjson.JSONDecodeError as exc:
            raise fail(f"--json is not valid JSON: {exc}", 2) from exc
    elif body is not None:
        kwargs["body"] = body
    where = broker(s)

    async def main() -> Any:
        async with await client(s, msgpack, **signed) as c:
            return await c.request(
                upstream, method.upper(), path, timeout=timeout, idempotency_key=idempotency_key, **kwargs
            )

    try:
        reply = run(main())
    except ValueError as exc:  # the SDK refused the request before publishing it
        raise fail(str(exc), 2) from exc
    except ReplyTimeoutError as exc:
        raise fail(f"no reply within {timeout:g} s from a gateway on {where}: is `cmn serve` running there?") from exc
    except BusUnavailableError as exc:
        if s.amqp_url or s.kafka_bootstrap_servers:
            raise fail(exc.message) from exc  # it names the broker it could not reach
        raise fail(f"nothing answers at {where}: {NO_BROKER_HINT}, or start `cmn serve` here first") from exc
    sys.stdout.write(reply.model_dump_json(by_alias=True, indent=2) + "\n")
    if reply.error is not None:
        raise typer.Exit(1)
    if fail_on_status and reply.status is not None and reply.status >= 400:
        raise typer.Exit(22)


def _headers(lines: list[str]) -> dict[str, str]:
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise fail(f"--header takes 'Name: value', not {line!r}", 2)
        headers[name.strip()] = value.strip()
    return headers


def telemetry(
    from_beginning: Annotated[bool, typer.Option(help="Replay the stream from its start.")] = False,
    count: Annotated[int, typer.Option(help="Stop after N events (0 = follow forever).")] = 0,
    stream: Annotated[
        str | None,
        typer.Option(help="RabbitMQ: the telemetry stream to read, for a gateway that writes one of its own."),
    ] = None,
) -> None:
    """Tail the cmn.telemetry stream as JSON lines (what it follows goes to stderr)."""
    from gateway.bus.base import TELEMETRY

    s = settings()
    if stream and not s.amqp_url and stream != TELEMETRY:
        raise fail(f"--stream names a RabbitMQ stream; a Kafka gateway writes {TELEMETRY}", 2)
    quiet_libraries()
    start = "from its start" if from_beginning else "from now on"
    say(f"cmn: following {stream or TELEMETRY} on {broker(s)}, {start} (Ctrl-C to stop)")

    async def main() -> None:
        seen = 0
        async with await client(s, False, stream=stream) as c:
            async for event in c.telemetry(from_beginning=from_beginning):
                sys.stdout.write(event.model_dump_json() + "\n")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        run(main())

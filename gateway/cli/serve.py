"""`cmn serve` and `cmn demo`: run the gateway."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.console import Console

from gateway.cli.common import run, settings


def serve(
    upstreams: Annotated[Path | None, typer.Option(help="Upstreams YAML (default: $CMN_UPSTREAMS_FILE).")] = None,
) -> None:
    """Run gateway workers for every configured broker (the embedded broker when none is)."""
    from gateway.app import Gateway, load_config
    from gateway.telemetry.logging import LIFECYCLE, configure_logging

    s = settings()
    configure_logging(s.log_level, s.log_format)
    if upstreams is not None:
        s = s.model_copy(update={"upstreams_file": upstreams})
    config = load_config(s)  # a ConfigError is one line and exit 2 (gateway.cli.errors)
    log = structlog.get_logger("cmn")
    if not config.upstreams.upstreams:
        log.warning("no_upstreams", hint="every request will be answered unknown_upstream: set CMN_UPSTREAMS_FILE")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with Gateway(config) as gateway:
            gateway.tune_process()  # this process is the gateway's own: see Gateway.tune_process
            lifecycle = logging.getLogger(LIFECYCLE)  # written at any LOG_LEVEL, JSON like every line
            if gateway.embedded_bootstrap:
                note = "no broker configured: the embedded Kafka-protocol broker (Tansu) is for trying CMN and "
                lifecycle.warning(
                    "embedded_broker",
                    extra={"bootstrap": gateway.embedded_bootstrap, "note": note + "development, not for production"},
                )
            lifecycle.info("cmn_serving", extra={"gateway": repr(gateway), "instance": gateway.instance})
            await gateway.serve_until(stop)

    run(main())


def demo(
    requests: Annotated[int, typer.Option("--requests", "-n", help="How many requests to send.")] = 2000,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 64,
) -> None:
    """Embedded broker + a local sample upstream + the gateway; send a batch and show the results.
    Exits 1 when every request failed."""
    from gateway.demo import run_demo
    from gateway.telemetry.logging import configure_logging

    configure_logging("WARNING", "console")
    run(run_demo(requests=requests, concurrency=concurrency, console=Console()))

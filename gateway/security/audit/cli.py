"""``cmn audit`` (and ``python -m gateway.security.audit``): findings as a table, JSON or SARIF.

Exit codes: 0 when nothing at or above ``--fail-on`` was found, 1 when something was, 2 when the
configuration could not be read (one line on stderr, as ``cmn serve`` prints it).
"""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from gateway.errors import ConfigError
from gateway.security.audit.findings import Severity
from gateway.settings import load_settings


class Format(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"


class Level(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


def audit(
    config: Annotated[Path | None, typer.Option(help="Upstreams YAML (default: $CMN_UPSTREAMS_FILE).")] = None,
    live: Annotated[bool, typer.Option(help="Also scan https endpoints, certificate sources and the broker.")] = False,
    output: Annotated[Format, typer.Option("--format", help="table, json or sarif (SARIF 2.1.0).")] = Format.table,
    fail_on: Annotated[Level, typer.Option(help="Exit 1 when a finding is at least this severe.")] = Level.high,
    memory: Annotated[
        int | None,
        typer.Option("--memory-limit", help="Bytes the gateway may use (default: the cgroup's limit, else 512 MiB)."),
    ] = None,
) -> None:
    """Audit the gateway's configuration for security problems (the spec's security audit)."""
    # Here, not at the top: `cmn` registers this command, and the rest of `cmn` need not load the gateway.
    from gateway.security.audit.context import memory_limit
    from gateway.security.audit.report import as_json, as_sarif, table
    from gateway.security.audit.run import audit_context, run_audit

    err = Console(stderr=True)
    try:
        settings = load_settings()
        if config is not None:
            settings = settings.model_copy(update={"upstreams_file": config})
        ctx = audit_context(settings, memory_limit(memory))
        findings = asyncio.run(run_audit(ctx, live=live))
    except ConfigError as exc:
        err.print(f"[red]cmn audit: {escape(exc.message)}[/red]", highlight=False, soft_wrap=True)
        for item in getattr(exc, "secrets", []):
            err.print(
                f"cmn audit: {item.id} {escape(str(item.location))}: {item.title}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(2) from exc
    if output is Format.table:
        Console().print(table(findings, ctx.locator.file))
    else:
        document = as_json(findings, ctx.locator.file, live) if output is Format.json else as_sarif(findings)
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    threshold = Severity.parse(fail_on.value)
    raise typer.Exit(1 if any(f.severity >= threshold for f in findings) else 0)


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(audit)
    app()

"""`cmn config check`: the environment and the upstreams file, every problem at once, no broker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import say

config_app = typer.Typer(no_args_is_help=True)


@config_app.command("check")
def check(
    upstreams: Annotated[Path | None, typer.Option(help="Upstreams YAML (default: $CMN_UPSTREAMS_FILE).")] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 on warnings too.")] = False,
) -> None:
    """Check the settings and the upstreams file without starting anything or reaching a broker.
    Exit 0 when clean, 1 on warnings with --strict, 2 on errors."""
    from gateway.config_check import check as run_check

    report = run_check(os.environ, upstreams)
    for finding in report.findings:
        say(f"cmn: {finding}", style="red" if finding.level == "error" else "yellow")
    errors, warnings = len(report.errors), len(report.warnings)
    where = f" and {report.upstreams_file}" if report.upstreams_file is not None else ""
    summary = f"checked the environment{where}: {errors} error(s), {warnings} warning(s)"
    say(f"cmn: {summary}", style="red" if errors else "yellow" if warnings else "green")
    raise typer.Exit(report.exit_code(strict=strict))


@config_app.command("env")
def env() -> None:
    """Every environment variable the gateway reads, with its default and meaning (Markdown)."""
    from gateway.settings import environment_table

    print(environment_table(), end="")

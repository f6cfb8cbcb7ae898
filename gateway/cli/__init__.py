"""`cmn`: serve, request, telemetry, status, breaker, dlq, demo, schemas, config, certs, audit.

The only place that reads the process environment. Each command lives in the module of its
concern (serve.py, messages.py, fleet.py, contract.py, config.py); ``main`` makes every failure one
line and an exit code (errors.py), with the traceback only under ``CMN_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Annotated

import typer

from gateway.cli import config, contract, fleet, messages, serve
from gateway.cli.common import say
from gateway.cli.errors import one_line

app = typer.Typer(
    help="CMN: an event-driven integration gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # errors are one line (gateway.cli.errors); CMN_DEBUG=1 for the traceback
)


def _version(value: bool) -> None:
    if value:
        print(f"cmn {metadata.version('cmn-gateway')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """CMN: an event-driven integration gateway."""


app.command()(serve.serve)
app.command()(messages.request)
app.command()(messages.telemetry)
app.command()(fleet.status)
app.command()(fleet.breaker)
app.command()(serve.demo)
app.command()(contract.schemas)
app.add_typer(config.config_app, name="config", help="Check the configuration without starting anything.")


GROUPS = ("certs", "dlq", "audit")


def _own() -> frozenset[str]:
    """The commands registered above (read from the app, so there is no second list to keep)."""
    commands = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands if c.callback}
    return frozenset(commands | {g.name for g in app.registered_groups if g.name})


def _asked(args: Sequence[str]) -> str | None:
    """The command the line names: one registered above or in GROUPS, or None (no command, --help, a
    typo: mount all)."""
    first = next((arg for arg in args if not arg.startswith("-")), None)
    return first if first is not None and (first in GROUPS or first in _own()) else None


def _mount(command: str | None) -> None:
    """Command groups that live with their concern, imported only when the line may name them: the
    certs and audit groups import the whole gateway (gateway.app, about a second of CPU), which
    `cmn request`, `status`, `breaker` or `dlq` never use."""
    if command in (None, "certs"):
        from gateway.certs.cli import certs_app

        app.add_typer(certs_app, name="certs", help="Certificates: development CA, listing.")
    if command in (None, "dlq"):
        app.add_typer(fleet.dlq_commands(), name="dlq", help="Dead letters: list, show, replay to the requests queue.")
    if command in (None, "audit"):
        from gateway.security.audit.cli import audit

        app.command("audit")(audit)


def main() -> None:
    _mount(_asked(sys.argv[1:]))
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("CMN_DEBUG", "").strip().lower() in ("1", "true", "yes"):
            raise
        text, code = one_line(exc)
        say(f"cmn: {text}", style="red")
        sys.exit(code)

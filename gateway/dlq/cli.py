"""``cmn dlq list | show | replay``: the dead letters of the configured broker.

``dlq_app`` is handed what only the root CLI owns (settings, the broker connection, the signing
key), so this package needs nothing above it.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import Progress

from gateway.access.config import SecurityConfig
from gateway.bus.dead_letters import DeadLetter, DeadLetterQueue
from gateway.clock import SystemClock
from gateway.dlq.letters import Filters, Summary, redacted, summarise
from gateway.dlq.replay import Outcome, Plan, Signer, plan, replay
from gateway.errors import GatewayError

WIDTH = 80
PROGRESS_FROM = 20  # letters; shorter runs print only the outcome
# (title, width, right-aligned); six columns and five spaces fill 80 characters
# (CODE fits every code a dead letter carries: payload_too_large, deadline_exceeded are the longest)
COLUMNS = (("ID", 13, False), ("CODE", 17, False), ("REASON", 17, False), ("UPSTREAM", 10, False),
           ("AGE", 5, True), ("PRINCIPAL", 13, False))  # fmt: skip
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

OpenQueue = Callable[[], Awaitable[DeadLetterQueue]]

CodeOption = Annotated[str | None, typer.Option(help="Only this error code (e.g. invalid_request).")]
SinceOption = Annotated[str | None, typer.Option(help="Only letters younger than this: 30s, 10m, 2h, 1d.")]
UpstreamOption = Annotated[str | None, typer.Option(help="Only requests for this upstream.")]


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 10m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def table(rows: Sequence[Summary]) -> str:
    """The letters as a table of at most 80 columns (cells cut with an ellipsis)."""
    lines = [_row([title for title, _, _ in COLUMNS])]
    for s in rows:
        lines.append(_row([s.id, s.code, s.reason, s.upstream or "-", age(s.age), s.principal or "-"]))
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    out = []
    for (_, width, right), cell in zip(COLUMNS, cells, strict=True):
        cell = " ".join(cell.split())  # no line breaks or tabs from a header
        text = cell if len(cell) <= width else cell[: width - 1] + "…"
        out.append(text.rjust(width) if right else text.ljust(width))
    return " ".join(out).rstrip()


def dlq_app(
    *,
    open_queue: OpenQueue,
    security: Callable[[], SecurityConfig | None],
    signing: Callable[[str | None, Path | None], dict[str, str]],
    run: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run,
) -> typer.Typer:
    """The ``cmn dlq`` sub-app, given how to open the configured broker's dead letters, the
    upstreams file's security section (to name the principal a key id claims) and the signing key."""
    dlq = typer.Typer(help="Dead letters: list, show, replay.", no_args_is_help=True)
    err = Console(stderr=True)

    async def summaries(queue: DeadLetterQueue) -> list[tuple[DeadLetter, Summary]]:
        now, keys = SystemClock().time(), security()
        return [(letter, summarise(letter, now=now, security=keys)) for letter in await queue.read()]

    async def with_queue(work: Callable[[DeadLetterQueue], Awaitable[Any]]) -> Any:
        queue = await open_queue()
        try:
            return await work(queue)
        finally:
            await queue.aclose()

    def execute(work: Callable[[DeadLetterQueue], Awaitable[Any]]) -> Any:
        try:
            return run(with_queue(work))
        except GatewayError as exc:
            err.print(f"[red]cmn dlq: {exc.message}[/red]")
            raise typer.Exit(1) from exc

    @dlq.command("list")
    def list_(
        code: CodeOption = None,
        since: SinceOption = None,
        upstream: UpstreamOption = None,
        output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    ) -> None:
        """The dead letters (nothing is removed): id, code, reason, upstream, age, principal."""
        filters = Filters(code, parse_duration(since) if since else None, upstream)

        async def work(queue: DeadLetterQueue) -> list[Summary]:
            return [s for _, s in await summaries(queue) if filters.match(s)]

        rows: list[Summary] = execute(work)
        if output == "json":
            sys.stdout.write(orjson.dumps([_document(s) for s in rows], option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            sys.stdout.write(table(rows))

    @dlq.command("show")
    def show(letter_id: Annotated[str, typer.Argument(metavar="ID", help="An id from `cmn dlq list`.")]) -> None:
        """One dead letter, headers and body, with secrets redacted (nothing is removed)."""

        async def work(queue: DeadLetterQueue) -> dict[str, Any] | None:
            for letter, s in await summaries(queue):
                if letter_id in (s.id, letter.ref):
                    return redacted(letter, s)
            return None

        document = execute(work)
        if document is None:
            err.print(f"[red]cmn dlq: no dead letter {letter_id!r}[/red]")
            raise typer.Exit(1)
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")

    @dlq.command("replay")
    def replay_(
        code: CodeOption = None,
        since: SinceOption = None,
        upstream: UpstreamOption = None,
        dry_run: Annotated[bool, typer.Option(help="Say what would be replayed; change nothing.")] = False,
        force: Annotated[bool, typer.Option(help="Replay requests that are not idempotent too.")] = False,
        key_id: Annotated[str | None, typer.Option(help="Sign replays with this key (security.keys).")] = None,
        secret_file: Annotated[Path | None, typer.Option(help="File holding the signing key's secret.")] = None,
    ) -> None:
        """Republish matching dead letters to the requests queue (confirmed), then remove them.
        Signatures are stripped (the gateway accepts one once); --key-id signs each replay anew."""
        filters = Filters(code, parse_duration(since) if since else None, upstream)
        signer = _signer(signing(key_id, secret_file))

        async def work(queue: DeadLetterQueue) -> tuple[Outcome, int]:
            the_plan = plan(await summaries(queue), filters, force=force, requests=queue.requests)
            if dry_run:
                return _dry(the_plan), len(the_plan.chosen)
            with Progress(console=err, disable=len(the_plan.letters) < PROGRESS_FROM, transient=True) as bar:
                task = bar.add_task("replaying", total=len(the_plan.letters))
                outcome = await replay(
                    queue, the_plan, clock=SystemClock(), signer=signer, progress=lambda: bar.advance(task)
                )
            return outcome, len(the_plan.chosen)

        outcome, chosen = execute(work)
        verb = "would replay" if dry_run else "replayed"
        sys.stdout.write(f"{verb} {chosen}, skipped {len(outcome.not_idempotent)} not idempotent (use --force), "
                         f"left {outcome.kept} not matching\n")  # fmt: skip
        if outcome.elsewhere:
            sys.stdout.write(f"  left {outcome.elsewhere} of other deployments (another requests topic than "
                             f"CMN_REQUESTS_QUEUE): replay them with theirs\n")  # fmt: skip
        for request_id in outcome.not_idempotent:
            sys.stdout.write(f"  not idempotent: {request_id}\n")
        if dry_run:
            for request_id in outcome.replayed:
                sys.stdout.write(f"  would replay: {request_id}\n")

    return dlq


def _dry(the_plan: Plan) -> Outcome:
    replayed = [s.id for letter, s in the_plan.letters if letter.ref in the_plan.chosen]
    elsewhere = len(the_plan.elsewhere)
    kept = len(the_plan.letters) - len(replayed) - len(the_plan.not_idempotent) - elsewhere
    return Outcome(replayed=replayed, not_idempotent=list(the_plan.not_idempotent), kept=kept, elsewhere=elsewhere)


def _signer(signing: dict[str, str]) -> Signer | None:
    if not signing:
        return None
    return Signer(signing["key_id"], signing["secret"].encode())


def _document(s: Summary) -> dict[str, Any]:
    return {
        "id": s.id, "code": s.code, "reason": s.reason, "upstream": s.upstream, "method": s.method,
        "idempotent": s.idempotent, "age_s": None if s.age is None else round(s.age, 1), "principal": s.principal,
    }  # fmt: skip

"""`cmn breaker open|close|reset UPSTREAM`: force the breakers of every live replica, over ``cmn.control``.

The command changes state, so a replica serves it only to a principal in CONTROL_PRINCIPALS; that
principal is the one a forced open names ("forced open by PRINCIPAL") and the one the
``breaker.forced`` event and log line carry. Each replica answers with what it changed
(``Gateway.force_breakers``); an unknown upstream or endpoint is an error answer, not a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from gateway.access.identity import Caller
from gateway.bus.kafka.security import KafkaSecurity
from gateway.clock import Clock
from gateway.control.gather import gather
from gateway.control.messages import UPSTREAM_NAME, Answer, Command
from gateway.control.registry import CommandFailed, CommandRegistry, CommandSpec
from gateway.control.status import _signer, connect
from gateway.settings import Settings

Action = Literal["open", "close", "reset"]
FORCED_FOR = 3600.0  # the default: a forgotten maintenance switch heals itself in an hour
MAX_FORCED_FOR = 7 * 86400.0
_STATES: dict[Action, str] = {"open": "open", "close": "closed", "reset": "automatic"}


class BreakerCommand(Command):
    """Changes state: forced open, forced closed, or back to automatic, for ``duration`` seconds."""

    type: Literal["breaker"] = "breaker"
    action: Action
    upstream: str = Field(pattern=UPSTREAM_NAME)
    endpoint: str | None = Field(None, min_length=1, max_length=2048)
    duration: float = Field(FORCED_FOR, gt=0, le=MAX_FORCED_FOR)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_for(text: str) -> float:
    """``--for``: seconds, or a number with s, m, h or d (90s, 30m, 2h, 1d); ValueError otherwise."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:])
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"--for takes a duration like 90s, 30m, 2h or 1d, not {text!r}") from None
    if not 0 < seconds <= MAX_FORCED_FOR:
        raise ValueError(f"--for must be more than 0 and at most {MAX_FORCED_FOR / 86400:g} days")
    return seconds


class ForcedBreakersCommand(Command):
    """Read-only: the forced states a replica holds, with absolute expiries (epoch seconds). A replica
    that starts later asks its peers this and applies the answers (``Gateway.apply_forced_breakers``)."""

    type: Literal["breaker.forced"] = "breaker.forced"


ForceBreakers = Callable[..., dict[str, Any]]
"""``Gateway.force_breakers(upstream, state, *, principal, endpoint, duration)``."""
ForcedBreakers = Callable[[], list[dict[str, Any]]]
"""``Gateway.forced_breakers()``."""


def register_breaker(registry: CommandRegistry, force: ForceBreakers, forced: ForcedBreakers | None = None) -> None:
    """``breaker`` (changes state) and, given ``forced``, the read-only ``breaker.forced``."""

    async def run(command: BreakerCommand, caller: Caller) -> dict[str, Any]:
        answer = force(
            command.upstream,
            _STATES[command.action],
            principal=caller.name,
            endpoint=command.endpoint,
            duration=command.duration,
        )
        if not answer["ok"]:
            raise CommandFailed(answer["code"], answer["error"])
        return answer

    registry.register("breaker", CommandSpec(BreakerCommand, run, changes_state=True))
    if forced is None:
        return

    async def run_forced(command: ForcedBreakersCommand, caller: Caller) -> dict[str, Any]:
        return {"forced": forced()}

    registry.register("breaker.forced", CommandSpec(ForcedBreakersCommand, run_forced))


async def send_breaker(
    settings: Settings,
    command: BreakerCommand,
    *,
    wait: float,
    clock: Clock,
    security: KafkaSecurity | None = None,
    key_id: str | None = None,
    secret: str | None = None,
) -> list[Answer]:
    """Every live replica's answer to ``command``; ``key_id`` and ``secret`` sign it (a key of the
    gateways' security.keys whose principal is in CONTROL_PRINCIPALS), else only RabbitMQ's user_id
    identifies the caller."""
    signer = _signer(key_id, secret.encode(), clock) if key_id is not None and secret is not None else None
    channel, requester = connect(settings, clock=clock, security=security)
    try:
        return await gather(channel, requester, command, wait=wait, clock=clock, signer=signer)
    finally:
        await requester.aclose()
        await channel.aclose()


def describe(answers: list[Answer], command: BreakerCommand) -> tuple[list[str], list[str]]:
    """Lines for stdout (one per replica that did it) and for stderr (one per replica that refused)."""
    done, failed = [], []
    for answer in answers:
        if answer.ok and answer.result is not None:
            count = len(answer.result.get("affected", []))
            done.append(f"{answer.instance}: {command.action} {command.upstream}: {count} breaker(s) changed")
        else:
            failed.append(f"{answer.instance}: {answer.error}: {answer.message}")
    return done, failed

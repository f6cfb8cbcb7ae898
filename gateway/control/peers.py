"""A replica that starts late learns the forced breaker states its peers hold.

Forced states are kept by each replica, not by the broker; a replica starting after an operator's
``cmn breaker open`` would otherwise serve the endpoint until the forcing expired elsewhere. At start
it asks every live peer (``breaker.forced``, read-only), and applies what they answer for the time
each forcing has left. It runs in the background: start-up is not held by the answering window.

Peers' answers are trusted as they come: whoever may publish to this replica's reply queue could
answer too, the same trust the control channel places in the broker's permissions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from gateway.bus.kafka.security import KafkaSecurity
from gateway.clock import Clock
from gateway.control.breaker import ForcedBreakersCommand
from gateway.control.gather import gather
from gateway.control.status import connect
from gateway.envelope.control import Answer
from gateway.settings import Settings

log = structlog.get_logger("cmn.control")

ApplyForced = Callable[[list[dict[str, Any]]], dict[str, Any]]


def forced_states_of_peers(answers: list[Answer], instance: str) -> list[dict[str, Any]]:
    """Every forcing the other replicas hold (a replica's own answer is skipped)."""
    states: list[dict[str, Any]] = []
    for answer in answers:
        if answer.instance == instance or not answer.ok or answer.result is None:
            continue
        forced = answer.result.get("forced")
        if isinstance(forced, list):
            states.extend(item for item in forced if isinstance(item, dict))
    return states


async def learn_forced_breakers(
    settings: Settings,
    *,
    instance: str,
    apply: ApplyForced,
    clock: Clock,
    security: KafkaSecurity | None = None,
    wait: float = 1.0,
) -> dict[str, Any]:
    """Ask the peers, apply their forced states; what was applied."""
    channel, requester = connect(settings, clock=clock, security=security)
    try:
        answers = await gather(channel, requester, ForcedBreakersCommand(), wait=wait, clock=clock)
    finally:
        await requester.aclose()
        await channel.aclose()
    peers = sorted({a.instance for a in answers if a.instance != instance})
    applied = apply(forced_states_of_peers(answers, instance))
    log.info("forced_breakers_learned", peers=peers, applied=applied.get("applied", []))
    return applied

"""Replay: each selected dead letter is republished to the requests queue/topic with its reply
address, correlation id and headers, and removed from the dead letters only once the broker has
confirmed the republish. Letters not selected stay; a letter that is not idempotent is replayed
only when forced.

Signatures are not carried over: the gateway accepts a signature once, so a replayed signed
message would be refused as a replay. The x-cmn signature headers are stripped and, when the
operator gives a key, the message is signed again with it: the replay runs as the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.access.signature import sign
from gateway.bus.dead_letters import DeadLetter, DeadLetterQueue
from gateway.clock import Clock
from gateway.dlq.letters import Filters, Summary, headers_for_replay


@dataclass(frozen=True, slots=True)
class Signer:
    key_id: str
    secret: bytes = field(repr=False)


@dataclass(slots=True)
class Outcome:
    replayed: list[str] = field(default_factory=list)
    not_idempotent: list[str] = field(default_factory=list)  # matched, skipped without --force
    kept: int = 0  # not matched, left in the queue
    elsewhere: int = 0  # another deployment's (another requests topic), left in the shared queue

    @property
    def total(self) -> int:
        return len(self.replayed) + len(self.not_idempotent) + self.kept + self.elsewhere


@dataclass(frozen=True, slots=True)
class Plan:
    """Which letters go (in the queue's order) and which are skipped for want of --force."""

    letters: Sequence[tuple[DeadLetter, Summary]]
    chosen: frozenset[str]  # refs
    not_idempotent: tuple[str, ...]  # summary ids
    elsewhere: frozenset[str] = frozenset()  # refs of letters from another requests queue/topic

    def must_keep(self, index: int) -> bool:
        """A letter not chosen with a chosen one after it in the same lane."""
        letter = self.letters[index][0]
        if letter.ref in self.chosen or letter.lane is None:
            return False
        return any(later.lane == letter.lane and later.ref in self.chosen for later, _ in self.letters[index + 1 :])


def plan(
    letters: Sequence[tuple[DeadLetter, Summary]], filters: Filters, *, force: bool, requests: str | None = None
) -> Plan:
    """Which letters go back to ``requests``. A letter that came from another requests queue/topic
    (a shared Kafka cmn.requests.dlq serves every deployment on the broker) is never chosen: it
    belongs to the deployment that reads that topic, and is replayed from there."""
    elsewhere = frozenset(
        letter.ref for letter, _ in letters if requests is not None and letter.source not in (None, requests)
    )
    mine = [(letter, summary) for letter, summary in letters if letter.ref not in elsewhere]
    matched = [(letter, summary) for letter, summary in mine if filters.match(summary)]
    chosen = frozenset(letter.ref for letter, summary in matched if force or summary.idempotent)
    skipped = tuple(summary.id for letter, summary in matched if letter.ref not in chosen)
    return Plan(letters, chosen, skipped, elsewhere)


async def replay(
    queue: DeadLetterQueue,
    replay_plan: Plan,
    *,
    clock: Clock,
    signer: Signer | None = None,
    progress: Callable[[], None] | None = None,
) -> Outcome:
    """Carry out ``replay_plan``: republish (confirmed) then remove each chosen letter; copy forward
    the letters a lane must keep. A failure stops the run; what was removed stays removed, the rest
    stays in the queue."""
    outcome = Outcome(not_idempotent=list(replay_plan.not_idempotent), elsewhere=len(replay_plan.elsewhere))
    for index, (letter, summary) in enumerate(replay_plan.letters):
        if letter.ref in replay_plan.chosen:
            await queue.republish(letter, _headers(letter, clock, signer))
            await queue.remove(letter)
            outcome.replayed.append(summary.id)
        else:
            if replay_plan.must_keep(index):
                await queue.keep(letter)
            if summary.id not in replay_plan.not_idempotent and letter.ref not in replay_plan.elsewhere:
                outcome.kept += 1
        if progress is not None:
            progress()
    return outcome


def _headers(letter: DeadLetter, clock: Clock, signer: Signer | None) -> dict[str, str]:
    headers = headers_for_replay(letter.headers)
    if signer is not None:
        headers |= sign(
            signer.key_id,
            signer.secret,
            now_ms=int(clock.time() * 1000),
            correlation_id=letter.correlation_id,
            reply_to=letter.reply_to,
            body=letter.body,
        )
    return headers

"""The caller's side: publish one command to every replica and gather their answers within a window.

Answers come back on a requester's reply address (an exclusive queue on RabbitMQ, the requester's
``cmn.replies.<uuid>`` topic on Kafka), matched by the command's correlation id. There is no
count to wait for (the caller does not know how many replicas are alive), so the window decides:
one answer per instance that answered within ``wait`` seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

import orjson
import structlog
from pydantic import ValidationError

from gateway.bus.base import ControlChannel, ReplyMessage, Requester
from gateway.clock import Clock
from gateway.envelope.control import MAX_ANSWER_BYTES, Answer, Command

log = structlog.get_logger("cmn.control")

# (correlation_id, reply_to, body) -> the x-cmn-signature headers (gateway.access.signature.sign)
Signer = Callable[[str, str, bytes], Mapping[str, str]]


class Gathering:
    """The answers to one command, one per instance (the first each sent); others are counted."""

    def __init__(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id
        self.answers: dict[str, Answer] = {}
        self.ignored = 0

    def on_reply(self, reply: ReplyMessage) -> None:
        if reply.correlation_id != self.correlation_id or len(reply.body) > MAX_ANSWER_BYTES:
            self.ignored += 1
            return
        try:
            answer = Answer.model_validate(orjson.loads(reply.body))
        except (orjson.JSONDecodeError, ValidationError):
            self.ignored += 1
            return
        self.answers.setdefault(answer.instance, answer)

    def __repr__(self) -> str:
        return f"<Gathering {self.correlation_id} [{len(self.answers)} answers, {self.ignored} ignored]>"


async def gather(
    channel: ControlChannel,
    requester: Requester,
    command: Command,
    *,
    wait: float,
    clock: Clock,
    headers: Mapping[str, str] | None = None,
    signer: Signer | None = None,
) -> list[Answer]:
    """Every live replica's answer to ``command``, sorted by instance; ``requester`` is started here.

    ``signer`` signs the command (its reply address and correlation id included) for gateways that
    identify callers by signature; over RabbitMQ the channel's user_id identifies the caller anyway."""
    gathering = Gathering(uuid.uuid4().hex)
    await requester.start(gathering.on_reply)
    reply_to = requester.reply_address
    if reply_to is None:
        raise RuntimeError(f"{requester!r} has no reply address")
    body = orjson.dumps(command.model_dump(mode="json"))
    correlation_id = gathering.correlation_id
    if signer is not None:
        headers = {**(headers or {}), **signer(correlation_id, reply_to, body)}
    await channel.publish(body, reply_to=reply_to, correlation_id=correlation_id, headers=headers)
    await clock.sleep(wait)
    if gathering.ignored:
        log.info("control_answers_ignored", gathering=repr(gathering))
    return [gathering.answers[name] for name in sorted(gathering.answers)]

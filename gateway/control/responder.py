"""What each gateway runs on each transport's control channel: answer every command it is sent.

For each command, in order: the reply address must be one (else the command is dropped: a
hostile ``reply_to`` must not make every replica write into some queue); the size is checked
before parsing; the ``type`` must be registered and the body valid for its model; the caller is
identified as requests are (AMQP ``user_id`` or the ``x-cmn-signature`` headers, through the
Guard); a command that changes state needs a principal in CONTROL_PRINCIPALS. Whatever goes
wrong is answered as an error; nothing a caller sends stops the responder.

A message with an ``x-cmn-notice`` header is not a command: it goes, unanswered, to the handler
registered for its value (``health.verdicts``: gateway/control/shared_health.py), or is dropped.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import structlog
from pydantic import ValidationError

from gateway.access.guard import Guard
from gateway.access.identity import Caller
from gateway.bus.base import ControlChannel, Delivery, Handler
from gateway.control.registry import CommandFailed, CommandRegistry
from gateway.envelope.control import MAX_COMMAND_BYTES, Answer, Identity, command_type
from gateway.envelope.health import NOTICE_HEADER
from gateway.errors import GatewayError, ReplyToRefusedError

log = structlog.get_logger("cmn.control")


class ControlResponder:
    def __init__(
        self,
        channel: ControlChannel,
        registry: CommandRegistry,
        *,
        guard: Guard,
        principals: Collection[str],
        identity_configured: bool,
        instance: str,
        notices: Mapping[str, Handler] | None = None,
    ) -> None:
        """``notices``: handlers of messages that are not commands (no reply address, no answer), by
        the value of their ``x-cmn-notice`` header (``health.verdicts``: gateway/control/shared_health.py)."""
        self._channel = channel
        self._notices = dict(notices or {})
        self._registry = registry
        self._guard = guard
        self._principals = frozenset(principals)
        self._identity: Identity = "configured" if identity_configured else "not configured"
        self._instance = instance
        self.answered = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return (
            f"<ControlResponder {self._instance} on {self._channel.name} {self._registry!r} "
            f"answered={self.answered} dropped={self.dropped}>"
        )

    async def start(self) -> None:
        await self._channel.start(self.handle)

    async def aclose(self) -> None:
        await self._channel.aclose()

    async def handle(self, delivery: Delivery) -> None:
        notice = delivery.headers.get(NOTICE_HEADER)
        if notice is not None:
            await self._notice(notice, delivery)
            return
        reply_to = delivery.reply_to
        try:
            if reply_to is None:
                raise ReplyToRefusedError("a command needs a reply_to")
            self._guard.reply_to(delivery.transport, reply_to)
        except ReplyToRefusedError as exc:
            self.dropped += 1
            log.warning("control_command_dropped", reason=exc.message, transport=delivery.transport)
            return
        try:
            answer = await self._answer(delivery)
        except Exception:  # a bug in one command must not stop the channel
            log.exception("control_command_failed", transport=delivery.transport)
            answer = self._error("?", "internal", "the command failed on this replica (see its log)")
        try:
            await self._channel.answer(reply_to, delivery.correlation_id, answer.encode())
            self.answered += 1
        except GatewayError as exc:
            log.warning("control_answer_not_sent", error=exc.message, transport=delivery.transport)

    async def _notice(self, kind: str, delivery: Delivery) -> None:
        handler = self._notices.get(kind)
        if handler is None:
            self.dropped += 1  # a notice this replica does not take (or shared health is off)
            return
        try:
            await handler(delivery)
        except Exception:  # a bug in one handler must not stop the channel
            log.exception("control_notice_failed", notice=kind[:32], transport=delivery.transport)

    async def _answer(self, delivery: Delivery) -> Answer:
        if len(delivery.body) > MAX_COMMAND_BYTES:
            return self._error("?", "too_large", f"a command is at most {MAX_COMMAND_BYTES} bytes")
        try:
            kind, data = command_type(delivery.body)
        except ValueError as exc:
            return self._error("?", "invalid", str(exc))
        spec = self._registry.get(kind)
        if spec is None:
            return self._error(kind[:32], "unknown_command", f"known commands: {', '.join(self._registry)}")
        try:
            command = spec.model.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
            return self._error(kind, "invalid", f"invalid field(s): {fields}")
        try:
            caller = await self._guard.identify(delivery)
        except GatewayError as exc:
            return self._error(kind, "unauthenticated", exc.message)
        if spec.changes_state and caller.principal not in self._principals:
            log.warning("control_command_forbidden", type=kind, principal=caller.name)
            return self._error(kind, "forbidden", f"{caller.name} is not in CONTROL_PRINCIPALS", caller)
        try:
            result = await spec.run(command, caller)
        except CommandFailed as exc:
            return self._error(kind, exc.code, exc.message, caller)
        if spec.changes_state:
            log.info("control_command_done", type=kind, principal=caller.name)
        return Answer(
            instance=self._instance, type=kind, ok=True, result=result,
            principal=caller.principal, identity=self._identity,
        )  # fmt: skip

    def _error(self, kind: str, code: str, message: str, caller: Caller | None = None) -> Answer:
        return Answer(
            instance=self._instance, type=kind, ok=False, error=code, message=message,
            principal=caller.principal if caller is not None else None, identity=self._identity,
        )  # fmt: skip

"""The responder each gateway runs: hostile commands, identity, CONTROL_PRINCIPALS, dispatch by type.

The channel here is an in-memory ``ControlChannel`` that records answers (the brokers' channels are
tested in tests/bus/test_control.py, and the whole path with real processes in
tests/integration/test_fleet_status.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from gateway.access import signature
from gateway.access.guard import Guard
from gateway.access.identity import Caller, Identifier, SigningKey
from gateway.access.policy import AccessPolicy
from gateway.access.replay import MemoryReplayRecord
from gateway.access.reply_address import ReplyAddresses
from gateway.bus.base import DEAD_LETTERS, REQUESTS, TELEMETRY, Delivery, Handler
from gateway.control.registry import CommandRegistry, CommandSpec, default_registry
from gateway.control.responder import ControlResponder
from gateway.envelope.control import MAX_COMMAND_BYTES, Command, StatusCommand
from gateway.errors import UnknownUpstreamError
from gateway.settings import principals
from gateway.testing import FakeClock

REPLY = "amq.gen-caller"


class RecordingChannel:
    name = "rabbitmq"

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.answers: list[tuple[str, str | None, dict[str, Any]]] = []

    async def start(self, handler: Handler) -> None:
        self.handler = handler

    async def publish(
        self, body: bytes, *, reply_to: str, correlation_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        raise AssertionError("a responder never publishes commands")

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        self.answers.append((reply_to, correlation_id, orjson.loads(body)))

    async def aclose(self) -> None:
        self.handler = None


class ForceOpen(Command):
    """A stand-in for a state-changing command (issue 11, section 3)."""

    type: str = "breaker.open"
    upstream: str


def status_of(upstream: str | None) -> dict[str, Any]:
    if upstream not in (None, "payments"):
        raise UnknownUpstreamError(f"unknown upstream {upstream}")
    return {"instance": "gw-1", "upstreams": [{"name": "payments"}]}


def make(
    *,
    require_identity: bool = False,
    keys: Mapping[str, SigningKey] | None = None,
    allowed: str = "",
    registry: CommandRegistry | None = None,
) -> tuple[ControlResponder, RecordingChannel, list[str]]:
    clock = FakeClock()
    guard = Guard(
        Identifier(dict(keys or {}), clock=clock, max_age=300, require_identity=require_identity),
        AccessPolicy({}, {}),
        ReplyAddresses(
            queue_pattern="cmn.replies.*", topic_pattern="cmn.replies.*", reserved=(REQUESTS, TELEMETRY, DEAD_LETTERS)
        ),
        MemoryReplayRecord(clock),
    )
    registry = registry or default_registry(status_of)
    forced: list[str] = []

    async def force_open(command: ForceOpen, caller: Caller) -> dict[str, Any]:
        forced.append(f"{command.upstream} by {caller.name}")
        return {"forced": command.upstream}

    if registry.get("breaker.open") is None and registry.get("status") is not None:
        registry.register("breaker.open", CommandSpec(ForceOpen, force_open, changes_state=True))
    channel = RecordingChannel()
    responder = ControlResponder(
        channel, registry, guard=guard, principals=principals(allowed),
        identity_configured=bool(keys) or require_identity, instance="gw-1",
    )  # fmt: skip
    return responder, channel, forced


def command(body: bytes | dict[str, Any], *, reply_to: str | None = REPLY, **fields: Any) -> Delivery:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Delivery(raw, "application/json", reply_to, "c-1", fields.pop("headers", {}), "rabbitmq", **fields)


async def answer_to(responder: ControlResponder, channel: RecordingChannel, delivery: Delivery) -> dict[str, Any]:
    await responder.handle(delivery)
    [(reply_to, correlation_id, answer)] = channel.answers
    assert (reply_to, correlation_id) == (delivery.reply_to, "c-1")
    channel.answers.clear()
    return answer


async def test_status_is_answered_with_the_document_and_says_identity_is_not_configured() -> None:
    responder, channel, _ = make()
    answer = await answer_to(responder, channel, command({"type": "status", "upstream": None}))
    assert answer["ok"] is True and answer["instance"] == "gw-1" and answer["type"] == "status"
    assert answer["result"] == status_of(None)
    assert answer["identity"] == "not configured" and answer["principal"] is None
    unknown = await answer_to(responder, channel, command({"type": "status", "upstream": "nosuch"}))
    assert (unknown["ok"], unknown["error"]) == (False, "unknown_upstream")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\xff garbage", "invalid"),
        (b"[]", "invalid"),
        (b'{"upstream": "payments"}', "invalid"),
        (b'{"type": 7}', "invalid"),
        (b'{"type": "status", "upstream": "../../etc"}', "invalid"),
        (b'{"type": "status", "verbose": true}', "invalid"),
        (b'{"type": "drop-tables"}', "unknown_command"),
        (orjson.dumps({"type": "status", "pad": "x" * MAX_COMMAND_BYTES}), "too_large"),
    ],
)
async def test_hostile_commands_get_an_error_answer(body: bytes, error: str) -> None:
    responder, channel, forced = make()
    answer = await answer_to(responder, channel, command(body))
    assert (answer["ok"], answer["error"]) == (False, error)
    assert forced == []
    assert "x" * 100 not in (answer["message"] or "")  # the input is not echoed back


@pytest.mark.parametrize("reply_to", [None, REQUESTS, "cmn.telemetry", "payments.work"])
async def test_a_command_whose_reply_to_is_not_a_reply_address_is_dropped(reply_to: str | None) -> None:
    responder, channel, _ = make()
    await responder.handle(command({"type": "status"}, reply_to=reply_to))
    assert channel.answers == [] and responder.dropped == 1


async def test_a_command_that_changes_state_needs_a_principal_in_control_principals() -> None:
    responder, channel, forced = make(allowed="ops, sre")
    anonymous = await answer_to(responder, channel, command({"type": "breaker.open", "upstream": "payments"}))
    assert (anonymous["ok"], anonymous["error"]) == (False, "forbidden")
    stranger = await answer_to(
        responder, channel, command({"type": "breaker.open", "upstream": "payments"}, user_id="intern")
    )
    assert (stranger["error"], stranger["principal"]) == ("forbidden", "intern")
    assert forced == []
    ops = await answer_to(responder, channel, command({"type": "breaker.open", "upstream": "payments"}, user_id="ops"))
    assert ops["ok"] is True and forced == ["payments by ops"]


async def test_with_no_control_principals_nobody_may_change_state() -> None:
    responder, channel, forced = make(allowed="")
    answer = await answer_to(responder, channel, command({"type": "breaker.open", "upstream": "p"}, user_id="admin"))
    assert answer["error"] == "forbidden" and forced == []


async def test_signed_commands_identify_the_caller_and_unsigned_ones_are_refused_when_identity_is_required() -> None:
    key = SigningKey("ops", b"s3cret")
    responder, channel, forced = make(require_identity=True, keys={"k1": key}, allowed="ops")
    unsigned = await answer_to(responder, channel, command({"type": "status"}))
    assert (unsigned["error"], unsigned["identity"]) == ("unauthenticated", "configured")
    body = orjson.dumps({"type": "breaker.open", "upstream": "payments"})
    now_ms = int(FakeClock().time() * 1000)
    headers = signature.sign("k1", b"s3cret", now_ms=now_ms, correlation_id="c-1", reply_to=REPLY, body=body)
    signed = await answer_to(responder, channel, command(body, headers=headers))
    assert signed["ok"] is True and signed["principal"] == "ops" and forced == ["payments by ops"]
    replayed = await answer_to(responder, channel, command(body, headers=headers))
    assert replayed["error"] == "unauthenticated" and len(forced) == 1  # each signature is accepted once
    forged = {**headers, signature.SIGNATURE: "v1=" + "0" * 64}
    assert (await answer_to(responder, channel, command(body, headers=forged)))["error"] == "unauthenticated"


async def test_a_command_that_fails_on_a_bug_is_answered_and_the_responder_goes_on() -> None:
    registry = CommandRegistry()

    async def broken(command: StatusCommand, caller: Caller) -> dict[str, Any]:
        raise RuntimeError("bug")

    registry.register("status", CommandSpec(StatusCommand, broken))
    responder, channel, _ = make(registry=registry)
    answer = await answer_to(responder, channel, command({"type": "status"}))
    assert answer["error"] == "internal"
    assert "bug" not in answer["message"]


def test_a_command_type_registers_once() -> None:
    registry = default_registry(status_of)
    with pytest.raises(ValueError, match="registered already"):
        registry.register("status", CommandSpec(StatusCommand, registry.get("status").run))  # type: ignore[union-attr]

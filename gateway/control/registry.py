"""Command types a replica knows: their model, whether they change state, and what runs them.

Read-only commands (``status``) are answered for any caller the gateway accepts. Commands that
change state (forcing a breaker, replaying dead letters: issue 11, sections 3 and 5) register with
``changes_state=True``; the responder then serves them only to a principal in CONTROL_PRINCIPALS.
Add a command by registering it in ``default_registry`` (or on the registry the root builds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.access.identity import Caller
from gateway.envelope.control import Command, StatusCommand
from gateway.errors import UnknownUpstreamError

Run = Callable[[Any, Caller], Awaitable[dict[str, Any]]]
StatusSource = Callable[[str | None], dict[str, Any]]


class CommandFailed(Exception):
    """A command that could not be done, with the answer's error code (never a secret in the message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CommandSpec:
    model: type[Command]
    run: Run
    changes_state: bool = False


class CommandRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}

    def register(self, type_: str, spec: CommandSpec) -> None:
        if type_ in self._specs:
            raise ValueError(f"control command {type_!r} is registered already")
        self._specs[type_] = spec

    def get(self, type_: str) -> CommandSpec | None:
        return self._specs.get(type_)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._specs))

    def __repr__(self) -> str:
        return f"<CommandRegistry [{', '.join(self)}]>"


def default_registry(status: StatusSource) -> CommandRegistry:
    """The commands every gateway answers; ``status`` is ``Gateway.status`` as JSON-ready data."""
    registry = CommandRegistry()

    async def run_status(command: StatusCommand, caller: Caller) -> dict[str, Any]:
        try:
            return status(command.upstream)
        except UnknownUpstreamError as exc:
            raise CommandFailed("unknown_upstream", f"no upstream named {command.upstream!r} here") from exc

    registry.register("status", CommandSpec(StatusCommand, run_status))
    return registry

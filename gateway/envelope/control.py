"""Control messages on ``cmn.control``: small JSON commands with a ``type``, answered one per replica.

The control plane that sends and answers them is gateway/control/.

A command is hostile input until proven otherwise: its size is checked before it is parsed
(``MAX_COMMAND_BYTES``), it must be a JSON object whose ``type`` names a registered command, and
the command's own model forbids unknown fields. Answers are bounded too, on the caller's side
(``MAX_ANSWER_BYTES``): a status document of many upstreams is large, but not unbounded.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

MAX_COMMAND_BYTES = 4096
MAX_ANSWER_BYTES = 4 * 1024 * 1024
COMMAND_TYPE = r"^[a-z][a-z0-9_.-]{0,31}$"
UPSTREAM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"

Identity = Literal["configured", "not configured"]


class Command(BaseModel):
    """What every command has; each type's model extends it and forbids anything else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(pattern=COMMAND_TYPE)


class StatusCommand(Command):
    """Read-only: every replica answers with its ``Gateway.status()`` document."""

    type: Literal["status"] = "status"
    upstream: str | None = Field(None, pattern=UPSTREAM_NAME)


class Answer(BaseModel):
    """One replica's answer. ``ok`` with a ``result``, or an ``error`` code and a message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    instance: str
    type: str
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    message: str | None = None
    principal: str | None = None  # the caller as this replica identified it (None: anonymous)
    identity: Identity = "configured"  # "not configured": no signing keys and REQUIRE_IDENTITY off

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def command_type(body: bytes) -> tuple[str, dict[str, Any]]:
    """The ``type`` and the parsed object of a command body, or ValueError saying what is wrong.

    The caller has checked the size already."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("a command is a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("a command is a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ValueError("a command needs a string 'type'")
    return kind, data

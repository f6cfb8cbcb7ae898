"""The control messages as the control plane uses them; they are defined in the wire contract,
gateway/envelope/control.py (schemas/asyncapi.json is generated from there)."""

from gateway.envelope.control import (
    COMMAND_TYPE,
    MAX_ANSWER_BYTES,
    MAX_COMMAND_BYTES,
    UPSTREAM_NAME,
    Answer,
    Command,
    Identity,
    StatusCommand,
    command_type,
)

__all__ = [
    "COMMAND_TYPE",
    "MAX_ANSWER_BYTES",
    "MAX_COMMAND_BYTES",
    "UPSTREAM_NAME",
    "Answer",
    "Command",
    "Identity",
    "StatusCommand",
    "command_type",
]

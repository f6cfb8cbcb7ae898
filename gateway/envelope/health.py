"""``health.verdicts`` on ``cmn.control``: one replica's own endpoint verdicts, for the fleet's quorum.

Each replica publishes what it decided by itself (its breaker opened, its outlier detector ejected,
its health checks failed: ``down``; closed, restored, passing again: not down), on every change and
as a heartbeat. The quorum that reads them is gateway/control/quorum.py.

A notice is not a command: it carries no reply address and gets no answer, so it is told apart by
the ``x-cmn-notice`` header before anything is parsed. It is hostile input like any other: the size is
checked first (``MAX_NOTICE_BYTES``), the verdict count is bounded, names are validated, unknown
fields refused.
"""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.envelope.control import UPSTREAM_NAME

NOTICE_HEADER = "x-cmn-notice"
HEALTH_VERDICTS = "health.verdicts"
MAX_VERDICTS = 128
MAX_NOTICE_BYTES = 64 * 1024
INSTANCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"


class Verdict(BaseModel):
    """One endpoint as the sending replica judged it by itself; ``since`` is when (epoch seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstream: str = Field(pattern=UPSTREAM_NAME)
    endpoint: str = Field(min_length=1, max_length=2048)
    down: bool
    since: float = Field(ge=0)


class VerdictsNotice(BaseModel):
    """Every current verdict of one replica: each notice replaces that replica's previous ones.

    ``fleet`` is the requests queue (or topic) the replica consumes: replicas of other fleets sharing
    the broker publish on the same ``cmn.control`` and must not count in this fleet's quorum.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["health.verdicts"] = "health.verdicts"
    instance: str = Field(pattern=INSTANCE_NAME)
    fleet: str = Field(min_length=1, max_length=255)
    sent_at: float = Field(ge=0)  # epoch seconds; a replica's notices are applied in this order
    verdicts: tuple[Verdict, ...] = Field(default=(), max_length=MAX_VERDICTS)

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def parse_verdicts(body: bytes) -> VerdictsNotice:
    """The notice in ``body``; ValueError (pydantic's ValidationError is one) when it is not one.

    The size is checked before parsing."""
    if len(body) > MAX_NOTICE_BYTES:
        raise ValueError(f"a verdicts notice is at most {MAX_NOTICE_BYTES} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("a verdicts notice is a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("a verdicts notice is a JSON object")
    return VerdictsNotice.model_validate(data)

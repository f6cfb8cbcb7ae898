"""What the pipeline asks of the egress side: forward one admitted request, get one response."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.clock import Deadline
from gateway.envelope.models import RequestEnvelope
from gateway.upstream.snapshot import UpstreamSnapshot


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """An admitted request, in the shape the egress side needs."""

    envelope: RequestEnvelope
    body: bytes | None
    headers: Mapping[str, str]  # already filtered of hop-by-hop headers, content-type set
    deadline: Deadline
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    tenant: str | None = None  # decided by the access policy: never the envelope's bare claim

    @property
    def upstream(self) -> str:
        return self.envelope.upstream


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int
    endpoint: str
    upstream_duration: float  # seconds spent in HTTP attempts, backoff excluded


class Forwarder(Protocol):
    """Route → cluster → balancer → breaker → pool → HTTP, with retries under one deadline.

    Raises only ``gateway.errors.GatewayError`` subclasses.
    """

    def knows(self, upstream: str) -> bool:
        """True when ``upstream`` is configured (the egress allowlist)."""
        ...

    async def forward(self, request: OutboundRequest) -> UpstreamResponse: ...

    def snapshot(self, upstream: str | None = None) -> tuple[UpstreamSnapshot, ...]:
        """Every upstream's live state, or one's (UnknownUpstreamError when not configured); no I/O."""
        ...

    async def aclose(self) -> None: ...

"""Builders shared by the upstream tests."""

from __future__ import annotations

from typing import Any

from gateway.clock import Clock, Deadline, SystemClock
from gateway.envelope.models import RequestEnvelope
from gateway.upstream.base import OutboundRequest
from gateway.upstream.config import UpstreamsFile


def upstreams(**configs: dict[str, Any]) -> UpstreamsFile:
    return UpstreamsFile.model_validate({"upstreams": configs})


def outbound(
    upstream: str = "svc",
    method: str = "GET",
    path: str = "/",
    *,
    body: bytes | None = None,
    timeout: float = 5.0,
    clock: Clock | None = None,
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> OutboundRequest:
    envelope = RequestEnvelope(
        id="r1", upstream=upstream, method=method, path=path, idempotency_key=idempotency_key
    )
    return OutboundRequest(
        envelope=envelope,
        body=body,
        headers=headers or {},
        deadline=Deadline.after(clock or SystemClock(), timeout),
    )


def dead_url() -> str:
    """A loopback URL nothing listens on (bound, then closed, so the port is free and refuses)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"

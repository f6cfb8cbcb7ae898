"""Builders shared by the upstream tests."""

from __future__ import annotations

from typing import Any, TypeVar

from gateway.clock import Clock, Deadline, SystemClock
from gateway.envelope.models import RequestEnvelope
from gateway.events import RecordingObserver
from gateway.upstream.base import OutboundRequest
from gateway.upstream.config import UpstreamsFile

T = TypeVar("T")


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
    tenant: str | None = None,
) -> OutboundRequest:
    envelope = RequestEnvelope(
        id="r1", upstream=upstream, method=method, path=path, idempotency_key=idempotency_key, tenant=tenant
    )
    return OutboundRequest(
        envelope=envelope,
        body=body,
        headers=headers or {},
        deadline=Deadline.after(clock or SystemClock(), timeout),
        tenant=tenant,  # as the access policy would decide it
    )


def dead_url() -> str:
    """A loopback URL nothing listens on (bound, then closed, so the port is free and refuses)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def parked(clock: object, sleepers: int = 1) -> None:
    """Yield to the loop until ``sleepers`` tasks wait on the fake clock (so an advance reaches them)."""
    import asyncio

    for _ in range(100):
        if clock.sleepers >= sleepers:  # type: ignore[attr-defined]  # a FakeClock
            return
        await asyncio.sleep(0)
    raise AssertionError(f"fewer than {sleepers} sleepers parked on {clock!r}")


def events_of(observer: RecordingObserver, kind: type[T]) -> list[T]:
    """The recorded events of one type, typed (RecordingObserver.of_type returns the union)."""
    return [e for e in observer.events if isinstance(e, kind)]

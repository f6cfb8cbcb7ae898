"""The gateway's real operations server (/metrics, /healthz, /readyz) on loopback, for the probe tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.telemetry.server import MetricsServer


class OpsPort:
    """A started MetricsServer whose readiness the test sets through ``ready``."""

    def __init__(self) -> None:
        self.ready = True
        self.server = MetricsServer(CollectorRegistry(), host="127.0.0.1", port=0, readiness=lambda: self.ready)

    @property
    def port(self) -> int:
        return self.server.port

    def __repr__(self) -> str:
        return f"<OpsPort {self.server!r} ready={self.ready}>"


@pytest.fixture
async def ops_port() -> AsyncIterator[OpsPort]:
    ops = OpsPort()
    async with ops.server:
        yield ops

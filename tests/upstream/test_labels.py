"""Endpoints as telemetry and Prometheus see them: the configured origin and path, never user-info or a credential."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.app import load_config
from gateway.clock import SystemClock
from gateway.errors import UpstreamUnavailableError
from gateway.events import (
    BreakerStateChanged,
    EndpointEjected,
    ObserverGroup,
    PoolStats,
    RecordingObserver,
    RetryAttempted,
    SecurityRefused,
)
from gateway.secrets import SecretResolver
from gateway.settings import load_settings
from gateway.telemetry.metrics import Metrics
from gateway.upstream.auth import resolve_upstream_auth
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import build_forwarder
from tests.fixtures.certs import StartTlsUpstream
from tests.fixtures.upstreams import StartUpstream
from tests.upstream.helpers import dead_url, events_of, outbound

TOKEN = "tok-label-check-5b1d"


async def test_no_label_or_event_carries_user_info_or_the_credential(
    start_upstream: StartUpstream, start_tls_upstream: StartTlsUpstream
) -> None:
    good, dead, untrusted = await start_upstream(), dead_url(), await start_tls_upstream()
    auth = {"bearer": {"env": "SVC_TOKEN"}}
    document = {
        "upstreams": {
            "svc": {
                "endpoints": [f"{good.url}/api", dead],
                "auth": auth,
                "load_balancer": "round_robin",
                "retry": {"attempts": 2, "backoff_base": 0.001},
                "breaker": {"minimum_calls": 1, "window_size": 2},
                "outlier_detection": {"consecutive_failures": 1, "max_ejection_percent": 100},
            },
            "tls": {"endpoints": [untrusted.url], "auth": auth, "retry": {"attempts": 1}},
        }
    }
    config = load_config(load_settings(ENABLE_METRICS=False), document).upstreams
    credentials = await resolve_upstream_auth(config, SecretResolver(environ={"SVC_TOKEN": TOKEN}))
    registry, recorded = CollectorRegistry(), RecordingObserver()
    observer = ObserverGroup([recorded, Metrics(registry)])
    fwd = build_forwarder(
        config, UpstreamDefaults(), clock=SystemClock(), observer=observer, credentials=credentials, stats_interval=None
    )
    async with fwd:
        endpoints = {(await fwd.forward(outbound("svc"))).endpoint for _ in range(4)}
        with pytest.raises(UpstreamUnavailableError):
            await fwd.forward(outbound("tls"))
        fwd.emit_pool_stats()

    # Every kind of event that names an endpoint or carries a reason was produced ...
    assert endpoints == {f"{good.url}/api"}
    for kind in (RetryAttempted, BreakerStateChanged, EndpointEjected, PoolStats, SecurityRefused):
        assert events_of(recorded, kind), kind.__name__
    # ... and none of them, nor any metric label, carries user-info or the credential.
    for event in recorded.events:
        assert "@" not in repr(event) and TOKEN not in repr(event), event
    labels = [v for m in registry.collect() for s in m.samples for v in s.labels.values()]
    assert {f"{good.url}/api", dead} <= set(labels)
    assert not [v for v in labels if "@" in v or TOKEN in v]
    exposition = generate_latest(registry).decode()
    assert TOKEN not in exposition and "@" not in exposition

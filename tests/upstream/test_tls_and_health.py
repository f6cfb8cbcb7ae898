"""TLS contexts taken per request from the provider, and active health checks, against real servers."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.clock import SystemClock
from gateway.errors import UpstreamUnavailableError
from gateway.events import EndpointHealthChanged, RecordingObserver
from gateway.testing import FakeClock
from gateway.tls import TlsSettings
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import build_forwarder
from gateway.upstream.health import HealthChecker, HealthPolicy
from gateway.upstream.host import Host
from gateway.upstream.tls import StaticTlsContexts
from tests.fixtures.upstreams import StartUpstream, start_app
from tests.upstream.helpers import events_of, outbound, upstreams


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class SwappableContexts:
    """A TlsContextProvider whose context changes, as the certificate manager's does on rotation."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.asked = 0

    def context_for(self, upstream: str) -> ssl.SSLContext | None:
        self.asked += 1
        return self.context


async def test_tls_context_comes_from_the_provider_on_every_request(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    runner, port = await start_app(health_app({"status": 200}), ssl_context=server_context)
    trusting = StaticTlsContexts({"svc": TlsSettings(ca_file=str(cert))}).context_for("svc")
    assert trusting is not None and trusting.minimum_version is ssl.TLSVersion.TLSv1_3
    provider = SwappableContexts(trusting)
    fwd = build_forwarder(
        upstreams(svc={"endpoints": [f"https://127.0.0.1:{port}"], "retry": {"attempts": 1}}),
        UpstreamDefaults(),
        clock=SystemClock(),
        observer=RecordingObserver(),
        tls=provider,
    )
    try:
        assert (await fwd.forward(outbound(path="/healthz"))).status == 200
        provider.context = ssl.create_default_context()  # rotated to a context that does not trust it
        with pytest.raises(UpstreamUnavailableError, match=r"TLS verification of https://127\.0\.0\.1:\d+ failed"):
            await fwd.forward(outbound(path="/healthz"))
    finally:
        await fwd.aclose()
        await runner.cleanup()
    assert provider.asked == 2


def test_client_certificate_needs_the_certificate_manager() -> None:
    with pytest.raises(Exception, match="needs the certificate manager"):
        StaticTlsContexts({"svc": TlsSettings(client_certificate="payments-client")})


def health_app(state: dict[str, Any]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.Response(status=state["status"])

    app = web.Application()
    app.router.add_get("/healthz", health)
    return app


async def test_health_thresholds_take_an_endpoint_out_and_bring_it_back(start_upstream: StartUpstream) -> None:
    state = {"status": 200}
    upstream = await start_upstream(app=health_app(state))
    host, observer = Host(upstream.url), RecordingObserver()
    policy = HealthPolicy(path="/healthz", healthy_threshold=2, unhealthy_threshold=3)
    checker = HealthChecker("svc", [host], policy, clock=FakeClock(), observer=observer)
    try:
        state["status"] = 503
        for expected in (True, True, False):
            await checker.check_all()
            assert host.healthy is expected
        state["status"] = 200
        for expected in (False, True):
            await checker.check_all()
            assert host.healthy is expected
    finally:
        await checker.aclose()
    flips = [e.healthy for e in events_of(observer, EndpointHealthChanged)]
    assert flips == [False, True]


async def test_forwarder_routes_around_an_endpoint_failing_health_checks(start_upstream: StartUpstream) -> None:
    sick_state, well_state = {"status": 503}, {"status": 200}
    sick = await start_upstream(app=health_app(sick_state))
    well = await start_upstream(app=health_app(well_state))
    config = {
        "endpoints": [sick.url, well.url],
        "load_balancer": "round_robin",
        "health_check": {"path": "/healthz", "interval": 0.02, "unhealthy_threshold": 1},
        "retry": {"attempts": 1},
    }
    fwd = build_forwarder(upstreams(svc=config), UpstreamDefaults(), clock=SystemClock(), observer=RecordingObserver())
    try:
        hosts = fwd.router("svc").cluster.hosts
        for _ in range(100):
            if not hosts[0].healthy:
                break
            await asyncio.sleep(0.02)
        responses = [await fwd.forward(outbound(path="/healthz")) for _ in range(6)]
    finally:
        await fwd.aclose()
    assert {r.endpoint for r in responses} == {well.url}

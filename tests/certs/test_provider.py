"""UpstreamTlsContexts: per-upstream contexts (trust, version, client certificate) that follow rotation."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.certs.devca import DevCertificateAuthority, DevSource
from gateway.certs.errors import UnknownCertificateError
from gateway.certs.manager import CertificateManager, ManagedCertificate
from gateway.certs.provider import UpstreamTlsContexts
from gateway.errors import CertificateError
from gateway.testing import FakeClock
from gateway.tls import TlsSettings
from tests.fixtures.certs import StartTlsUpstream


@pytest.fixture
def ca_file(dev_ca: DevCertificateAuthority, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(dev_ca.ca_pem)
    return str(path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_start=time.time())


@pytest.fixture
def manager(tmp_path: Path, clock: FakeClock) -> CertificateManager:
    source = DevSource("partner", ["partner-client"], tmp_path / "dev", clock)
    return CertificateManager([ManagedCertificate("partner", source)], clock=clock)


async def test_mtls_upstream_gets_the_managed_client_certificate(
    manager: CertificateManager, ca_file: str, start_tls_upstream: StartTlsUpstream, tmp_path: Path
) -> None:
    settings = {"partner-api": TlsSettings(ca_file=ca_file, client_certificate="partner")}
    provider = UpstreamTlsContexts(manager, settings)
    await provider.prepare()
    # The server certificate is from ``dev_ca`` (trusted through ca_file); client certificates must
    # come from the CA the manager's DevSource created on first load.
    upstream = await start_tls_upstream(client_ca=(tmp_path / "dev" / "ca.pem").read_bytes())
    context = provider.context_for("partner-api")
    assert context is not None
    assert provider.context_for("partner-api") is context  # built once per certificate version

    async with aiohttp.ClientSession() as session, session.get(upstream.url, ssl=context) as response:
        body = await response.json()
    bundle = manager.current("partner")
    assert bundle is not None
    assert body == {"client_serial": bundle.certificate.serial_number, "tls": "TLSv1.3"}


async def test_contexts_follow_settings_and_rotation(
    manager: CertificateManager, clock: FakeClock, ca_file: str, start_tls_upstream: StartTlsUpstream
) -> None:
    settings = {
        "partner-api": TlsSettings(ca_file=ca_file, client_certificate="partner"),
        "legacy": TlsSettings(ca_file=ca_file, min_version="1.2", verify_hostname=False),
    }
    provider = UpstreamTlsContexts(manager, settings)
    await provider.prepare()
    legacy = provider.context_for("legacy")
    assert legacy is not None
    assert legacy.minimum_version is ssl.TLSVersion.TLSv1_2
    assert legacy.check_hostname is False
    assert legacy.verify_mode is ssl.CERT_REQUIRED

    upstream = await start_tls_upstream(max_version="1.2", sans=("elsewhere.example",))
    async with aiohttp.ClientSession() as session, session.get(upstream.url, ssl=legacy) as response:
        assert (await response.json())["tls"] == "TLSv1.2"

    before = provider.context_for("partner-api")
    first = manager.current("partner")
    assert first is not None
    await manager.refresh("partner")  # nothing new: the same context stays
    assert provider.context_for("partner-api") is before

    clock.advance(80 * 86400)  # inside the 14-day renew window of the 90-day dev certificate
    assert await manager.refresh("partner")
    after = provider.context_for("partner-api")
    assert after is not before
    assert provider.context_for("legacy") is legacy
    assert "2 upstreams (1 mTLS)" in repr(provider)


def test_defaults_for_upstreams_without_settings(manager: CertificateManager) -> None:
    strict = UpstreamTlsContexts(manager, {}).context_for("anything")
    assert strict is not None
    assert strict.minimum_version is ssl.TLSVersion.TLSv1_3
    assert strict.check_hostname is True
    assert UpstreamTlsContexts(manager, {}, default=None).context_for("anything") is None


def test_configuration_mistakes_are_caught_early(manager: CertificateManager) -> None:
    with pytest.raises(UnknownCertificateError, match=r"'nope'.*not configured"):
        UpstreamTlsContexts(manager, {"x": TlsSettings(client_certificate="nope")})
    provider = UpstreamTlsContexts(manager, {"x": TlsSettings(client_certificate="partner")})
    with pytest.raises(UnknownCertificateError, match="not loaded; call prepare"):
        provider.context_for("x")


async def test_a_context_that_cannot_be_rebuilt_fails_loudly_not_silently(
    manager: CertificateManager, clock: FakeClock, ca_file: str
) -> None:
    provider = UpstreamTlsContexts(manager, {"partner-api": TlsSettings(ca_file=ca_file, client_certificate="partner")})
    await provider.prepare()
    await asyncio.to_thread(Path(ca_file).unlink)
    clock.advance(80 * 86400)
    assert await manager.refresh("partner")
    with pytest.raises(CertificateError, match="cannot load CA bundle"):
        provider.context_for("partner-api")

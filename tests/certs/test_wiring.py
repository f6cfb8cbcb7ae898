"""gateway.certs.wiring against the real Settings and the TLS settings the composition root passes in
(the upstreams file's ``tls:`` blocks through ``policies.tls_by_upstream``)."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.errors import CertificateExpiredError, UnknownCertificateError
from gateway.certs.wiring import build_certificate_manager, keyvault_settings
from gateway.errors import ConfigError
from gateway.events import RecordingObserver
from gateway.settings import Settings
from gateway.testing import FakeClock
from gateway.tls import TlsSettings
from gateway.upstream.config import UpstreamsFile
from gateway.upstream.policies import tls_by_upstream
from gateway.upstream.tls import TlsContextProvider
from tests.fixtures.certs import StartTlsUpstream


def _settings(**env: str) -> Settings:
    return Settings.model_validate(env)


def _tls(blocks: dict[str, dict[str, str | None]]) -> dict[str, TlsSettings]:
    """``tls:`` blocks as the composition root hands them over, read from an upstreams file."""
    upstreams = {name: {"endpoints": ["https://127.0.0.1:1"], "tls": tls} for name, tls in blocks.items()}
    return tls_by_upstream(UpstreamsFile.model_validate({"upstreams": upstreams}))


def test_azure_settings_map_to_keyvault_settings() -> None:
    assert keyvault_settings(_settings()) is None
    vault = keyvault_settings(
        _settings(
            AZURE_VAULT_URL="https://cmn.vault.azure.net",
            AZURE_TENANT_ID="t",
            AZURE_CLIENT_ID="c",
            AZURE_CLIENT_SECRET="s",
        )
    )
    assert vault is not None
    assert (vault.vault_url, vault.tenant_id, vault.client_id, vault.client_secret) == (
        "https://cmn.vault.azure.net",
        "t",
        "c",
        "s",
    )
    assert vault.verify_challenge_resource
    assert "client_secret" not in repr(vault)


async def test_builds_a_started_manager_and_a_provider_for_the_pool(
    tmp_path: Path, start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority
) -> None:
    section = {"dev_dir": str(tmp_path), "partner": {"source": "dev", "sans": ["partner-client"]}}
    tls = _tls({"partner-api": {"ca_file": None, "client_certificate": "partner"}})
    clock = FakeClock(wall_start=time.time())
    manager, provider = await build_certificate_manager(
        section, tls, _settings(), clock=clock, observer=RecordingObserver()
    )
    try:
        contexts: TlsContextProvider = provider  # the egress layer's protocol, satisfied structurally
        assert set(manager.expiries()) == {"partner"}
        assert "polling" in repr(manager)
        upstream = await start_tls_upstream(client_ca=(tmp_path / "ca.pem").read_bytes())
        context = contexts.context_for("partner-api")
        assert context is not None
        context.load_verify_locations(cadata=dev_ca.ca_pem.decode())  # ca_file=None: system store + test CA
        async with aiohttp.ClientSession() as session, session.get(upstream.url, ssl=context) as response:
            assert (await response.json())["tls"] == "TLSv1.3"
        bundle = manager.current("partner")
        assert bundle is not None
        assert upstream.client_serials == [bundle.certificate.serial_number]
    finally:
        await manager.aclose()


async def test_start_up_mistakes_stop_here(tmp_path: Path) -> None:
    clock = FakeClock(wall_start=time.time())
    with pytest.raises(ConfigError, match="certificates: "):
        await build_certificate_manager({"items": {"x": {"source": "nfs"}}}, {}, _settings(), clock=clock)
    with pytest.raises(UnknownCertificateError, match="'missing'"):
        await build_certificate_manager({}, _tls({"api": {"client_certificate": "missing"}}), _settings(), clock=clock)
    old = tmp_path / "old.pem"
    ca = DevCertificateAuthority.create(now=clock.time())
    expired = ca.issue("old", ["old"], now=clock.time(), not_before=clock.time() - 10 * 86400, days=1)
    old.write_bytes(expired.chain_pem() + expired.key_pem())
    with pytest.raises(CertificateExpiredError):
        await build_certificate_manager({"old": {"source": "file", "cert": str(old)}}, {}, _settings(), clock=clock)

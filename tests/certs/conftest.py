"""Fixtures for the certificate tests: the fake Key Vault on 127.0.0.1 over HTTPS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.tls import server_context
from tests.certs.fakevault import FakeKeyVault
from tests.fixtures.upstreams import start_app


@pytest.fixture
async def fake_vault(dev_ca: DevCertificateAuthority, tmp_path: Path) -> AsyncIterator[FakeKeyVault]:
    """A fake Key Vault + token endpoint; its TLS certificate is from ``dev_ca`` (trusted via ``ca_file``)."""
    ca_file = tmp_path / "vault-ca.pem"
    ca_file.write_bytes(dev_ca.ca_pem)
    vault = FakeKeyVault(ca_file)
    context = server_context(dev_ca.issue("vault", ["127.0.0.1"], now=time.time()))
    runner, port = await start_app(vault.app(), ssl_context=context)
    vault.url = f"https://127.0.0.1:{port}"
    yield vault
    await runner.cleanup()

"""The real Azure SDK clients and azure-identity credentials against the local fake Key Vault."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import time
from contextlib import AsyncExitStack

import pytest
from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential

from gateway.access.identity import Signed
from gateway.app import load_config
from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.errors import CertificateFormatError, CertificateSourceError
from gateway.certs.keyvault import PKCS12_CONTENT_TYPE, KeyVault, KeyVaultSource, build_credential
from gateway.errors import ConfigError, UnauthenticatedError
from gateway.secrets import SecretRef, SecretResolver
from gateway.settings import load_settings
from gateway.testing import FakeClock
from gateway.wiring import build_guard
from tests.certs.fakevault import CLIENT_ID, CLIENT_SECRET, TENANT, FakeKeyVault

NOW = time.time()


@pytest.mark.parametrize("content_type", ["application/x-pem-file", PKCS12_CONTENT_TYPE])
async def test_loads_certificate_and_key_with_client_secret_credential(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority, content_type: str
) -> None:
    issued = dev_ca.issue("partner", ["partner.example"], now=NOW)
    version = fake_vault.put("partner", issued, content_type=content_type)
    async with KeyVault(fake_vault.settings()) as vault:
        bundle = await KeyVaultSource(vault, "partner").load(None)
    assert bundle is not None
    assert (bundle.source, bundle.version) == ("keyvault", version)
    assert bundle.certificate == issued.certificate
    assert bundle.private_key is not None
    assert bundle.not_after == pytest.approx(issued.not_after)
    assert fake_vault.token_requests == 1  # one token, shared by the certificate and secret clients
    assert fake_vault.requests == ["/certificates/partner/", f"/secrets/partner/{version}"]


async def test_a_poll_without_a_new_version_costs_one_request(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority
) -> None:
    first = fake_vault.put("partner", dev_ca.issue("partner", ["p"], now=NOW))
    async with KeyVault(fake_vault.settings()) as vault:
        source = KeyVaultSource(vault, "partner")
        assert await source.load(first) is None
        assert await source.load(first) is None
        assert fake_vault.requests == ["/certificates/partner/"] * 2

        second = fake_vault.put("partner", dev_ca.issue("partner", ["p"], now=NOW))
        renewed = await source.load(first)
    assert renewed is not None
    assert renewed.version == second
    assert fake_vault.count("/secrets/") == 1


async def test_our_name_can_differ_from_the_vault_name(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority
) -> None:
    fake_vault.put("partner-client-2026", dev_ca.issue("x", ["p"], now=NOW))
    async with KeyVault(fake_vault.settings()) as vault:
        bundle = await KeyVaultSource(vault, "partner", vault_name="partner-client-2026").load(None)
    assert bundle is not None
    assert bundle.name == "partner"


async def test_missing_certificate_is_a_source_error(fake_vault: FakeKeyVault) -> None:
    async with KeyVault(fake_vault.settings()) as vault:
        with pytest.raises(CertificateSourceError, match=r"certificate 'nope' not found in https://127\.0\.0\.1"):
            await KeyVaultSource(vault, "nope").load(None)


async def test_bad_client_secret_is_a_source_error(fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority) -> None:
    fake_vault.put("partner", dev_ca.issue("partner", ["p"], now=NOW))
    async with KeyVault(fake_vault.settings(client_secret="wrong")) as vault:
        with pytest.raises(CertificateSourceError, match=r"Key Vault .* failed") as caught:
            await KeyVaultSource(vault, "partner").load(None)
    assert "invalid_client" in str(caught.value.__cause__) or "AADSTS" in str(caught.value.__cause__)
    assert fake_vault.requests == []


async def test_secret_that_holds_another_certificate_is_refused(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority
) -> None:
    fake_vault.put(
        "partner",
        dev_ca.issue("partner", ["p"], now=NOW),
        secret_from=dev_ca.issue("partner", ["p"], now=NOW),
    )
    async with KeyVault(fake_vault.settings()) as vault:
        with pytest.raises(CertificateFormatError, match="secret holds another certificate"):
            await KeyVaultSource(vault, "partner").load(None)


def test_credential_choice(fake_vault: FakeKeyVault) -> None:
    assert isinstance(build_credential(fake_vault.settings()), ClientSecretCredential)
    partial = dataclasses.replace(fake_vault.settings(), client_secret=None)
    assert isinstance(build_credential(partial), DefaultAzureCredential)


async def test_default_credential_from_the_environment(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", fake_vault.url)
    version = fake_vault.put("partner", dev_ca.issue("partner", ["p"], now=NOW))
    settings = dataclasses.replace(fake_vault.settings(), tenant_id=None, client_id=None, client_secret=None)
    async with KeyVault(settings) as vault:
        bundle = await KeyVaultSource(vault, "partner").load(None)
    assert bundle is not None
    assert bundle.version == version
    assert fake_vault.token_requests == 1


async def test_a_plain_secret_is_read_for_the_secret_resolver(fake_vault: FakeKeyVault) -> None:
    fake_vault.put_secret("payments-token", "first")
    fake_vault.put_secret("payments-token", "s3cr3t-value")
    async with KeyVault(fake_vault.settings()) as vault:
        resolver = SecretResolver(environ={}, vault=vault.secret)
        value = await resolver.resolve(SecretRef(keyvault="payments-token"), purpose="upstream payments auth")
    assert value == "s3cr3t-value"  # the current version
    assert fake_vault.requests == ["/secrets/payments-token/"]


async def test_a_missing_secret_is_a_config_error_naming_it(fake_vault: FakeKeyVault) -> None:
    async with KeyVault(fake_vault.settings()) as vault:
        resolver = SecretResolver(environ={}, vault=vault.secret)
        with pytest.raises(ConfigError, match=r"Key Vault secret 'absent' not found in https://127\.0\.0\.1:"):
            await resolver.resolve(SecretRef(keyvault="absent"), purpose="upstream payments auth")


async def test_a_vault_that_refuses_us_is_a_config_error_without_the_client_secret(fake_vault: FakeKeyVault) -> None:
    fake_vault.put_secret("payments-token", "s3cr3t-value")
    async with KeyVault(fake_vault.settings(client_secret="wrong-client-secret")) as vault:
        with pytest.raises(ConfigError) as caught:
            await vault.secret("payments-token")
    assert "payments-token" in str(caught.value)
    assert "wrong-client-secret" not in str(caught.value)
    assert "s3cr3t-value" not in str(caught.value)


async def test_a_signing_key_named_keyvault_is_read_through_the_vault_client(fake_vault: FakeKeyVault) -> None:
    """`security.keys.K.secret: {keyvault: NAME}`: the gateway's guard (gateway.wiring.build_guard, given
    the resolver build_secrets makes when AZURE_VAULT_URL is set) verifies what the vault's secret signed."""
    fake_vault.put_secret("billing-signing-key", "vault-held-hmac-key")
    settings = load_settings(ENABLE_METRICS=False)
    document = {
        "upstreams": {"payments": {"endpoints": ["http://127.0.0.1:9"], "access": {"allow": ["billing"]}}},
        "security": {"keys": {"billing-2026": {"principal": "billing", "secret": {"keyvault": "billing-signing-key"}}}},
    }
    config = load_config(settings, document)
    clock = FakeClock()
    async with AsyncExitStack() as resources, KeyVault(fake_vault.settings()) as vault:
        resolver = SecretResolver(environ={}, vault=vault.secret)
        guard = await build_guard(settings, config.upstreams, config.security, resolver, clock, resources)

        def proof(secret: bytes) -> Signed:
            body, signed_at = b'{"id":"r1","upstream":"payments"}', int(clock.time() * 1000)
            message = f"{signed_at}\nbilling-2026\nc-1\ncmn.replies.a\n".encode() + body
            signature = "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest()
            headers = {"x-cmn-key-id": "billing-2026", "x-cmn-signed-at": str(signed_at), "x-cmn-signature": signature}
            return Signed(None, headers, "c-1", "cmn.replies.a", body)

        caller = await guard.identify(proof(b"vault-held-hmac-key"))
        with pytest.raises(UnauthenticatedError, match="does not match"):
            await guard.identify(proof(b"some-other-key"))
    assert (caller.principal, caller.via) == ("billing", "signature")
    assert fake_vault.requests == ["/secrets/billing-signing-key/"]

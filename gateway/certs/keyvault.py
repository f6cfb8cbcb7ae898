"""Certificates from Azure Key Vault.

The certificate object gives the version and public certificate (``azure-keyvault-certificates``);
the private key comes from the secret of the same name and version (``azure-keyvault-secrets``),
PKCS#12 or PEM by its content type. Polls cost one ``get_certificate``; the secret is fetched only
when the version changed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.certificates.aio import CertificateClient
from azure.keyvault.secrets.aio import SecretClient
from cryptography.hazmat.primitives import serialization

from gateway.certs.bundle import CertificateBundle, parse_pem, parse_pkcs12
from gateway.certs.errors import CertificateFormatError, CertificateSourceError
from gateway.errors import ConfigError

PKCS12_CONTENT_TYPE = "application/x-pkcs12"
PEM_CONTENT_TYPE = "application/x-pem-file"


@dataclass(frozen=True, slots=True)
class KeyVaultSettings:
    """Where the vault is and who we are.

    ``tenant_id``+``client_id``+``client_secret`` all set → ClientSecretCredential, else
    DefaultAzureCredential. ``authority``, ``connection_verify`` (a CA bundle path),
    ``verify_challenge_resource`` and ``disable_instance_discovery`` exist for private clouds and
    local test endpoints; leave them alone for a real vault.
    """

    vault_url: str
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    authority: str | None = None
    connection_verify: str | None = None
    verify_challenge_resource: bool = True
    disable_instance_discovery: bool = False

    def transport_options(self) -> dict[str, Any]:
        return {"connection_verify": self.connection_verify} if self.connection_verify else {}


def build_credential(settings: KeyVaultSettings) -> AsyncTokenCredential:
    options = settings.transport_options()
    if settings.authority:
        options["authority"] = settings.authority
    if settings.disable_instance_discovery:
        options["disable_instance_discovery"] = True
    if settings.tenant_id and settings.client_id and settings.client_secret:
        return ClientSecretCredential(settings.tenant_id, settings.client_id, settings.client_secret, **options)
    return DefaultAzureCredential(**options)


class KeyVault:
    """One vault connection (credential, certificate client, secret client) shared by its certificates."""

    def __init__(self, settings: KeyVaultSettings, credential: AsyncTokenCredential | None = None) -> None:
        self.settings = settings
        self._credential = credential if credential is not None else build_credential(settings)
        self._owns_credential = credential is None
        options: dict[str, Any] = {
            **settings.transport_options(),
            "verify_challenge_resource": settings.verify_challenge_resource,
        }
        self._certificates = CertificateClient(settings.vault_url, self._credential, **options)
        self._secrets = SecretClient(settings.vault_url, self._credential, **options)

    async def fetch(self, name: str, known_version: str | None) -> CertificateBundle | None:
        """The newest version of certificate ``name`` with its key, or None when it is ``known_version``."""
        try:
            certificate = await self._certificates.get_certificate(name)
            version = certificate.properties.version if certificate.properties else None
            version = version or ""
            if version == known_version:
                return None
            secret = await self._secrets.get_secret(name, version)
        except ResourceNotFoundError as exc:
            raise CertificateSourceError(f"certificate {name!r} not found in {self.settings.vault_url}") from exc
        except AzureError as exc:
            raise CertificateSourceError(
                f"certificate {name!r}: Key Vault {self.settings.vault_url} failed: {exc.message}"
            ) from exc
        bundle = parse_secret(name, version, secret.value or "", secret.properties.content_type)
        if certificate.cer and bytes(certificate.cer) != bundle.certificate.public_bytes(serialization.Encoding.DER):
            raise CertificateFormatError(
                f"certificate {name!r} version {version}: "
                "the secret holds another certificate than the certificate object"
            )
        return bundle

    async def secret(self, name: str) -> str:
        """The current value of secret ``name`` (a ``gateway.secrets.SecretResolver`` vault lookup).

        Errors name the secret and the vault, never a value.
        """
        try:
            secret = await self._secrets.get_secret(name)
        except ResourceNotFoundError as exc:
            raise ConfigError(f"Key Vault secret {name!r} not found in {self.settings.vault_url}") from exc
        except AzureError as exc:
            raise ConfigError(
                f"Key Vault secret {name!r}: {self.settings.vault_url} failed ({type(exc).__name__})"
            ) from exc
        return secret.value or ""

    async def aclose(self) -> None:
        await self._certificates.close()
        await self._secrets.close()
        if self._owns_credential:
            await self._credential.close()

    async def __aenter__(self) -> KeyVault:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<KeyVault {self.settings.vault_url}>"


def parse_secret(name: str, version: str, value: str, content_type: str | None) -> CertificateBundle:
    """A Key Vault certificate secret: base64 PKCS#12 or PEM key + chain, sniffed when untyped."""
    if content_type == PEM_CONTENT_TYPE or (content_type is None and "-----BEGIN" in value):
        return parse_pem(name, KeyVaultSource.kind, version, value.encode())
    if content_type not in (PKCS12_CONTENT_TYPE, None):
        raise CertificateFormatError(f"certificate {name!r}: unsupported secret content type {content_type!r}")
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise CertificateFormatError(f"certificate {name!r}: PKCS#12 secret is not base64") from exc
    return parse_pkcs12(name, KeyVaultSource.kind, version, data)


class KeyVaultSource:
    """One certificate in a vault; ``vault_name`` is its name there when it differs from ours."""

    kind = "keyvault"

    def __init__(self, vault: KeyVault, name: str, vault_name: str | None = None) -> None:
        self._vault, self._name, self._vault_name = vault, name, vault_name or name

    async def load(self, known_version: str | None, *, renew: bool = False) -> CertificateBundle | None:
        bundle = await self._vault.fetch(self._vault_name, known_version)
        if bundle is None or bundle.name == self._name:
            return bundle
        return CertificateBundle(
            self._name, bundle.source, bundle.version, bundle.certificate, bundle.chain, bundle.private_key
        )

    def __repr__(self) -> str:
        where = f"{self._vault.settings.vault_url}/certificates/{self._vault_name}"
        return f"<KeyVaultSource {self._name} ← {where}>"

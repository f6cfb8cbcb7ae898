"""A local HTTPS server speaking the subset of the Key Vault REST API (and Entra ID token endpoint)
that the real azure-keyvault-certificates / -secrets clients and azure-identity's
ClientSecretCredential use. Certificates are whatever the test puts in, versions appear on demand.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.certs.bundle import CertificateBundle
from gateway.certs.keyvault import PEM_CONTENT_TYPE, PKCS12_CONTENT_TYPE, KeyVaultSettings

TENANT = "00000000-0000-0000-0000-0000000000aa"
CLIENT_ID = "cmn-test-client"
CLIENT_SECRET = "cmn-test-secret"


@dataclass(frozen=True)
class Version:
    version: str
    bundle: CertificateBundle
    secret_value: str
    content_type: str


@dataclass
class FakeKeyVault:
    """State of the fake vault; ``url`` is set once the server listens."""

    ca_file: Path
    url: str = ""
    versions: dict[str, list[Version]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    plain_secrets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # name → [(version, value)]

    def put(
        self,
        name: str,
        bundle: CertificateBundle,
        *,
        content_type: str = PEM_CONTENT_TYPE,
        secret_from: CertificateBundle | None = None,
    ) -> str:
        """Add a new current version of ``name``; ``secret_from`` makes the secret hold another bundle."""
        version = uuid.uuid4().hex
        value = _secret_value(secret_from or bundle, content_type)
        self.versions.setdefault(name, []).append(Version(version, bundle, value, content_type))
        return version

    def put_secret(self, name: str, value: str) -> str:
        """Add a new current version of a plain secret (no certificate behind it)."""
        version = uuid.uuid4().hex
        self.plain_secrets.setdefault(name, []).append((version, value))
        return version

    def settings(self, *, client_secret: str = CLIENT_SECRET) -> KeyVaultSettings:
        return KeyVaultSettings(
            vault_url=self.url,
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            client_secret=client_secret,
            authority=self.url,
            connection_verify=str(self.ca_file),
            verify_challenge_resource=False,
            disable_instance_discovery=True,
        )

    def count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r.startswith(prefix))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"/{TENANT}/v2.0/.well-known/openid-configuration", self._openid)
        app.router.add_post(f"/{TENANT}/oauth2/v2.0/token", self._token)
        app.router.add_get("/certificates/{name}/{version:.*}", self._certificate)
        app.router.add_get("/secrets/{name}/{version:.*}", self._secret)
        return app

    async def _openid(self, request: web.Request) -> web.Response:
        base = f"{self.url}/{TENANT}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            body = {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."}
            return web.json_response(body, status=401)
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response({"token_type": "Bearer", "expires_in": 3599, "access_token": token})

    def _challenge(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth.removeprefix("Bearer ") in self.tokens:
            return None
        header = f'Bearer authorization="{self.url}/{TENANT}", resource="https://vault.azure.net"'
        body = {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer token."}}
        return web.json_response(body, status=401, headers={"WWW-Authenticate": header})

    def _find(self, request: web.Request) -> tuple[str, Version] | None:
        name, version = request.match_info["name"], request.match_info["version"]
        versions = self.versions.get(name, [])
        if not version:
            return (name, versions[-1]) if versions else None
        found = [v for v in versions if v.version == version]
        return (name, found[0]) if found else None

    async def _certificate(self, request: web.Request) -> web.Response:
        if (challenge := self._challenge(request)) is not None:
            return challenge
        self.requests.append(request.path)
        found = self._find(request)
        if found is None:
            return _not_found("CertificateNotFound", request.match_info["name"])
        return web.json_response(self._certificate_json(*found))

    async def _secret(self, request: web.Request) -> web.Response:
        if (challenge := self._challenge(request)) is not None:
            return challenge
        self.requests.append(request.path)
        if request.match_info["name"] in self.plain_secrets:
            return self._plain_secret(request.match_info["name"], request.match_info["version"])
        found = self._find(request)
        if found is None:
            return _not_found("SecretNotFound", request.match_info["name"])
        name, v = found
        return web.json_response(
            {
                "value": v.secret_value,
                "id": f"{self.url}/secrets/{name}/{v.version}",
                "contentType": v.content_type,
                "attributes": _attributes(v.bundle),
                "kid": f"{self.url}/keys/{name}/{v.version}",
                "managed": True,
            }
        )

    def _plain_secret(self, name: str, version: str) -> web.Response:
        versions = self.plain_secrets[name]
        found = [(ver, val) for ver, val in versions if ver == version] if version else versions[-1:]
        if not found:
            return _not_found("SecretNotFound", name)
        ver, value = found[0]
        now = int(time.time())
        attributes = {"enabled": True, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable"}
        return web.json_response({"value": value, "id": f"{self.url}/secrets/{name}/{ver}", "attributes": attributes})

    def _certificate_json(self, name: str, v: Version) -> dict[str, Any]:
        der = v.bundle.certificate.public_bytes(serialization.Encoding.DER)
        return {
            "id": f"{self.url}/certificates/{name}/{v.version}",
            "kid": f"{self.url}/keys/{name}/{v.version}",
            "sid": f"{self.url}/secrets/{name}/{v.version}",
            "x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode(),
            "cer": base64.b64encode(der).decode(),
            "attributes": _attributes(v.bundle),
            "policy": {
                "id": f"{self.url}/certificates/{name}/policy",
                "secret_props": {"contentType": v.content_type},
                "x509_props": {"subject": v.bundle.subject, "validity_months": 12},
                "issuer": {"name": "Self"},
            },
        }


def _attributes(bundle: CertificateBundle) -> dict[str, Any]:
    return {
        "enabled": True,
        "nbf": int(bundle.not_before),
        "exp": int(bundle.not_after),
        "created": int(bundle.not_before),
        "updated": int(bundle.not_before),
        "recoveryLevel": "Recoverable+Purgeable",
    }


def _not_found(code: str, name: str) -> web.Response:
    body = {
        "error": {
            "code": code,
            "message": f"A certificate with (name/id) {name} was not found in this key vault.",
        }
    }
    return web.json_response(body, status=404)


def _secret_value(bundle: CertificateBundle, content_type: str) -> str:
    if content_type == PKCS12_CONTENT_TYPE:
        assert bundle.private_key is not None
        data = pkcs12.serialize_key_and_certificates(
            None,
            bundle.private_key,  # type: ignore[arg-type]  # EC/RSA keys from the dev CA are PKCS#12-serialisable
            bundle.certificate,
            list(bundle.chain) or None,
            serialization.NoEncryption(),
        )
        return base64.b64encode(data).decode()
    return (bundle.key_pem() + bundle.chain_pem()).decode()

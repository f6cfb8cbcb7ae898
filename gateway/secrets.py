"""Where a secret comes from, written once for every part that needs one (signing keys, upstream auth).

A secret is never written in the upstreams file; the file names where to find it::

    secret: {env: CMN_KEY_BILLING}      # an environment variable
    secret: {file: /run/secrets/key}    # a file (a Kubernetes secret volume); trailing newline dropped
    secret: {keyvault: billing-key}     # an Azure Key Vault secret, through the certificates' vault client

``SecretResolver`` turns a reference into the value at start-up; a missing secret is a ConfigError
that names the reference, never the value.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.errors import ConfigError

VaultLookup = Callable[[str], Awaitable[str]]

_SECRET_NAME = r"^[0-9A-Za-z-]{1,127}$"  # nosec B105  # a name pattern: Key Vault's own rule for secret names


class SecretRef(BaseModel):
    """Exactly one of ``env``, ``file`` or ``keyvault``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = Field(default=None, min_length=1, max_length=4096)
    keyvault: str | None = Field(default=None, pattern=_SECRET_NAME)

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "keyvault") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a secret is exactly one of {env: VAR}, {file: PATH} or {keyvault: NAME}")
        return self

    def describe(self) -> str:
        """Where the secret lives, for messages (never its value)."""
        if self.env is not None:
            return f"env:{self.env}"
        if self.file is not None:
            return f"file:{self.file}"
        return f"keyvault:{self.keyvault}"


class SecretResolver:
    """Reads secrets from the environment, files or Key Vault (when a vault lookup was wired in)."""

    def __init__(self, environ: Mapping[str, str] | None = None, vault: VaultLookup | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._vault = vault

    async def resolve(self, ref: SecretRef, *, purpose: str) -> str:
        """The secret's value; ``purpose`` names what needs it in the error message."""
        value = await self._lookup(ref, purpose)
        if not value:
            raise ConfigError(f"{purpose}: secret {ref.describe()} is empty")
        return value

    async def _lookup(self, ref: SecretRef, purpose: str) -> str:
        if ref.env is not None:
            value = self._environ.get(ref.env)
            if value is None:
                raise ConfigError(f"{purpose}: environment variable {ref.env} is not set")
            return value
        if ref.file is not None:
            try:
                text = await asyncio.to_thread(Path(ref.file).read_text)
                return text.rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{purpose}: cannot read secret file {ref.file}: {exc.strerror}") from exc
        assert ref.keyvault is not None  # exactly one is set
        if self._vault is None:
            raise ConfigError(f"{purpose}: secret keyvault:{ref.keyvault} needs AZURE_VAULT_URL")
        try:
            return await self._vault(ref.keyvault)
        except ConfigError:
            raise
        except Exception as exc:  # the SDK's errors end here, named by type only
            reason = type(exc).__name__
            raise ConfigError(f"{purpose}: Key Vault secret {ref.keyvault} could not be read ({reason})") from exc

    def __repr__(self) -> str:
        return f"<SecretResolver {'with' if self._vault else 'without'} Key Vault>"

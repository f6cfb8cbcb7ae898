"""The ``certificates:`` section of the upstreams YAML (pydantic, an edge of the certs package).

    certificates:
      poll_interval: 300          # seconds between looks at every source
      renew_before: 1209600       # seconds before expiry that count as "renew now" (14 days)
      dev_dir: ~/.cmn/certs       # where `source: dev` keeps its CA and leaves
      items:
        partner-mtls: {source: keyvault, vault_name: partner-client, ca_file: /etc/cmn/partner-ca.pem}
        billing:      {source: file, cert: /etc/cmn/billing.pem, key: /etc/cmn/billing-key.pem}
        legacy:       {source: file, pkcs12: /etc/cmn/legacy.p12, password: "..."}
        local:        {source: dev, sans: [localhost, 127.0.0.1]}

The short form, names straight under ``certificates:`` (``certificates: {partner: {source: dev}}``),
means the same items with every setting at its default.

Every item may name ``ca_file`` (the chain must reach that CA) and ``expected_name`` (a SAN must
cover it); both are checked on every load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.config import JsonDict

from gateway.tls import DEFAULT_MIN_VERSION, TlsVersion

DEFAULT_DEV_DIR = Path("~/.cmn/certs")


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    expected_name: str | None = None


class KeyVaultItem(_Item):
    source: Literal["keyvault"]
    vault_name: str | None = None


class FileItem(_Item):
    source: Literal["file"]
    cert: Path | None = None
    key: Path | None = None
    pkcs12: Path | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _one_format(self) -> FileItem:
        if (self.cert is None) == (self.pkcs12 is None):
            raise ValueError("a file certificate needs exactly one of `cert` (PEM) or `pkcs12`")
        if self.key is not None and self.cert is None:
            raise ValueError("`key` goes with `cert`; a PKCS#12 file carries its own key")
        return self


class DevItem(_Item):
    source: Literal["dev"]
    sans: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1"])
    days: float = Field(90.0, gt=0)


CertificateItem = Annotated[KeyVaultItem | FileItem | DevItem, Field(discriminator="source")]


def _short_form_schema(schema: JsonDict) -> None:
    """The JSON Schema accepts what ``_short_form`` does: items named at the top, beside the settings."""
    schema["additionalProperties"] = cast(JsonDict, cast(JsonDict, schema["properties"])["items"])[
        "additionalProperties"
    ]


class CertificatesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_short_form_schema)

    poll_interval: float = Field(300.0, gt=0)
    renew_before: float = Field(14 * 86400.0, ge=0)
    min_version: TlsVersion = DEFAULT_MIN_VERSION
    dev_dir: Path = DEFAULT_DEV_DIR
    items: dict[str, CertificateItem] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "items" in data:
            return data
        named = {k: v for k, v in data.items() if isinstance(v, dict) and "source" in v}
        return {**{k: v for k, v in data.items() if k not in named}, "items": named}

    @field_validator("dev_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def uses_keyvault(self) -> bool:
        return any(isinstance(item, KeyVaultItem) for item in self.items.values())

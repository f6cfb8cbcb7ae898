"""CMN_UPSTREAMS_FILE as one model: ``upstreams``, ``certificates`` and ``security``.

Each section is owned where it is used (gateway/upstream/config.py, gateway/certs/config.py,
gateway/access/config.py); this module only puts them side by side, so that the file is validated
in one pass (every error at once: ``cmn config check``) and published as a JSON Schema for editors
(``schemas/upstreams.schema.json``, written by ``cmn schemas``).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import GenerateJsonSchema

from gateway.access.config import SecurityConfig
from gateway.certs.config import CertificatesConfig
from gateway.upstream.config import UpstreamsFile

SCHEMA_FILE = "upstreams.schema.json"
SCHEMA_ID = "https://cmn.dev/schemas/upstreams.schema.json"


class ConfigDocument(UpstreamsFile):
    """The whole upstreams file. A rejected value may be a URL with a password in it: errors never
    quote the input (``hide_input_in_errors``, as ``UpstreamsFile``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    certificates: CertificatesConfig | None = Field(
        None, description="Certificates the gateway loads and renews (Key Vault, files, development CA)."
    )
    security: SecurityConfig = Field(
        default_factory=SecurityConfig, description="Signing keys and principals (who may call)."
    )


def schema() -> dict[str, Any]:
    """The JSON Schema editors validate the YAML with (yaml-language-server, VS Code, IntelliJ)."""
    document = ConfigDocument.model_json_schema(mode="validation", schema_generator=_StableDefaults)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["$id"] = SCHEMA_ID
    document["title"] = "CMN upstreams file (CMN_UPSTREAMS_FILE)"
    return document


def schema_bytes() -> bytes:
    return orjson.dumps(schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


class _StableDefaults(GenerateJsonSchema):
    """Defaults holding a frozenset (``failure_on``) come out in hash order, which changes from run
    to run: sorted here, so the committed file is checked byte for byte like the others."""

    def encode_default(self, dft: Any) -> Any:
        return super().encode_default(_canonical(dft))


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _canonical(value.model_dump(mode="python"))
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=str)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value

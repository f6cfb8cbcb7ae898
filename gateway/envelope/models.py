"""Wire contract v1: the request, reply and telemetry envelopes. Pure data, no I/O."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import ErrorCode

CONTRACT_VERSION = "1"

# A path must be origin-form: one leading slash, no scheme, no authority, no whitespace or control chars.
_BAD_PATH = re.compile(r"^(?!/)|^//|[\s\x00-\x1f\x7f\\]")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_METHOD = re.compile(r"^[A-Z]{1,16}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RequestEnvelope(_Strict):
    """What a component publishes to ``cmn.requests``."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={"$id": "https://cmn.ariesone.com/schemas/v1/request.json"},
    )

    id: str = Field(min_length=1, max_length=128, description="Request id; the reply carries it.")
    upstream: str = Field(min_length=1, max_length=128, description="Name of a configured upstream.")
    method: str = Field(default="GET", description="HTTP method.", json_schema_extra={"pattern": "^[A-Za-z]{1,16}$"})
    path: str = Field(
        default="/",
        max_length=8192,
        description="Origin-form path and query: a single leading '/', no scheme or host.",
        json_schema_extra={"pattern": "^/(?!/)[^\\s\\\\]*$"},
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Forwarded minus hop-by-hop.")
    json_: Any = Field(default=None, alias="json", description="JSON request body.")
    body: str | bytes | None = Field(default=None, description="Text body (raw bytes in msgpack).")
    body_b64: str | None = Field(default=None, description="Base64-encoded binary body.")
    timeout_ms: int | None = Field(default=None, gt=0, description="Total budget incl. retries.")
    sent_at: int | None = Field(default=None, ge=0, description="Epoch ms of publication.")
    deadline: int | None = Field(default=None, ge=0, description="Absolute epoch-ms deadline.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    tenant: str | None = Field(default=None, min_length=1, max_length=128)
    reply_to: str | None = Field(default=None, min_length=1, max_length=255)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        v = v.upper()
        if not _METHOD.match(v):
            raise ValueError("method must be an HTTP token of letters")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if _BAD_PATH.search(v) or _SCHEME.match(v):
            raise ValueError("path must start with a single '/' and carry no scheme, host or whitespace")
        return v

    @model_validator(mode="before")
    @classmethod
    def _one_body(cls, data: Any) -> Any:
        if isinstance(data, dict):
            present = [k for k in ("json", "body", "body_b64") if data.get(k) is not None]
            if len(present) > 1:
                raise ValueError(f"at most one of json, body, body_b64 may be set (got {', '.join(present)})")
        return data

    @field_validator("body_b64")
    @classmethod
    def _b64(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("body_b64 is not valid base64") from exc
        return v

    def body_bytes(self) -> bytes | None:
        """The request body as bytes, whichever field carried it (JSON is encoded by the codec)."""
        if self.body is not None:
            return self.body if isinstance(self.body, bytes) else self.body.encode()
        if self.body_b64 is not None:
            return base64.b64decode(self.body_b64)
        return None

    @property
    def has_json(self) -> bool:
        return "json_" in self.model_fields_set and self.json_ is not None


class ErrorInfo(_Strict):
    code: ErrorCode
    message: str


class ReplyEnvelope(BaseModel):
    """What the gateway publishes to the requester's reply address."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={"$id": "https://cmn.ariesone.com/schemas/v1/reply.json"},
    )

    id: str
    status: int | None = Field(description="Upstream HTTP status; null when no response was obtained.")
    headers: dict[str, str] = Field(default_factory=dict)
    json_: Any = Field(
        default=None,
        alias="json",
        description=(
            "The upstream's body when it answered JSON; except JSON holding an integer outside 64 bits, "
            "which comes as the exact text in `body`."
        ),
    )
    body: str | bytes | None = Field(
        default=None, description="The body as UTF-8 text (raw bytes in msgpack) when it is not in `json`."
    )
    body_b64: str | None = Field(default=None, description="The body, base64, when it is neither JSON nor text.")
    error: ErrorInfo | None = None
    attempts: int = 0
    duration_ms: float = 0.0
    upstream: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and self.status < 400

    def body_bytes(self) -> bytes | None:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        if self.body_b64 is not None:
            return base64.b64decode(self.body_b64)
        return None


class TelemetryEvent(BaseModel):
    """One event on the ``cmn.telemetry`` stream; ``type`` is also the RabbitMQ routing key."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"$id": "https://cmn.ariesone.com/schemas/v1/telemetry.json"},
    )

    type: str = Field(description="Event type, e.g. request.completed, breaker.state_changed.")
    ts: float = Field(description="Epoch seconds when the gateway emitted it.")
    gateway: str = Field(description="Instance id of the emitting gateway.")
    data: dict[str, Any] = Field(default_factory=dict)
    traceparent: str | None = None


ContentType = Literal["application/json", "application/msgpack"]

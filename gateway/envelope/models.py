"""Wire contract v1: the request, reply and telemetry envelopes. Pure data, no I/O."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal
from unicodedata import normalize
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.errors import ERROR_TYPES, ErrorCode, UpstreamStatusError

CONTRACT_VERSION = "1"

# A path must be origin-form: one leading slash, no scheme, no authority, no whitespace or control chars,
# no fragment (RFC 9112 §3.2.1: the HTTP client cuts it off, after removing a "..#" segment before it).
_BAD_PATH = re.compile(r"^(?!/)|^//|[\s\x00-\x1f\x7f\\#]")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# RFC 9110 §5.6.2: token = 1*tchar. Methods (§9.1) and field names (§5.1) are tokens.
_TCHARS = "!#$%&'*+\\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(f"[{_TCHARS}]+")
_TOKENS = re.compile(f"[{_TCHARS}]+(?: [{_TCHARS}]+)*")  # names joined by spaces
_METHOD = re.compile(f"[{_TCHARS}]{{1,16}}")
_REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})  # a tunnel, and an echo of the request's credentials
# RFC 9110 §5.5: a field value holds no CR, LF or NUL; other controls but HTAB are refused as well.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# "..;" too (servers drop ;params); once decoded, also ".." before whitespace or NUL (servers that trim or
# end strings there) and before "#" or "?".
_DOT_SEGMENT = re.compile(r"(?:^|[/\\])\.\.?(?:;[^/\\]*)?[\s\x00]*(?:[/\\#?]|\Z)")
# Overlong UTF-8 (C0/C1 leads; E0 or F0 followed by too small a byte): '%c0%ae' was '.' to old decoders.
_OVERLONG = re.compile(rb"[\xc0\xc1]|\xe0[\x80-\x9f]|\xf0[\x80-\x8f]")
_ENCODING_ROUNDS = 4  # percent-decoding rounds tried on a path; more layers than that is refused
# Validator error types that mean an attack, not a mistake: the codec raises a security event for them.
SECURITY_ERRORS = frozenset({"invalid_path", "invalid_header"})


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
    method: str = Field(
        default="GET",
        description="HTTP method: an RFC 9110 token; CONNECT and TRACE are refused.",
        json_schema_extra={"pattern": "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]{1,16}$", "not": {"enum": ["CONNECT", "TRACE"]}},
    )
    path: str = Field(
        default="/",
        max_length=8192,
        description=(
            "Origin-form path and query: a single leading '/', no scheme or host, no '.' or '..' segments "
            "(raw or percent-encoded)."
        ),
        json_schema_extra={"pattern": "^/(?!/)[^\\s\\\\#]*$"},
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Forwarded minus hop-by-hop and those named in Connection. Names are RFC 9110 tokens; values "
            "carry no CR, LF, NUL or other control characters but tab."
        ),
        json_schema_extra={
            "propertyNames": {"pattern": "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$"},
            "additionalProperties": {"type": "string", "pattern": "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f]*$"},
        },
    )
    json_: Any = Field(default=None, alias="json", description="JSON request body.")
    body: str | bytes | None = Field(default=None, description="Text body (raw bytes in msgpack).")
    body_b64: str | None = Field(default=None, description="Base64-encoded binary body.")
    timeout_ms: int | None = Field(
        default=None, gt=0, description="Total budget incl. retries, ms; at most the gateway's MAX_TIMEOUT_MS."
    )
    sent_at: int | None = Field(default=None, ge=0, description="Epoch ms of publication.")
    deadline: int | None = Field(default=None, ge=0, description="Absolute epoch-ms deadline.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    tenant: str | None = Field(default=None, min_length=1, max_length=128)
    reply_to: str | None = Field(default=None, min_length=1, max_length=255)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if not _METHOD.fullmatch(v):
            raise ValueError("method must be an RFC 9110 token of at most 16 characters")
        v = v.upper()
        if v in _REFUSED_METHODS:
            raise ValueError(f"method {v} is not forwarded")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if _BAD_PATH.search(v) or _SCHEME.match(v):
            raise PydanticCustomError(
                "invalid_path", "path must start with a single '/' and carry no scheme, host, fragment or whitespace"
            )
        if problem := dot_segment_problem(v.split("?", 1)[0]):
            raise PydanticCustomError("invalid_path", problem)
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        # Two regex calls for all headers; the loop below only runs to name the bad one.
        names = " ".join(v)
        if (
            (not v or (_TOKENS.fullmatch(names) and names.count(" ") == len(v) - 1))
            and not _BAD_VALUE.search("".join(v.values()))
        ):  # fmt: skip
            return v
        for name, value in v.items():
            if not _TOKEN.fullmatch(name):
                raise PydanticCustomError(
                    "invalid_header", "header name {name} is not an RFC 9110 token", {"name": quoted(name)}
                )
            if _BAD_VALUE.search(value):
                raise PydanticCustomError(
                    "invalid_header",
                    "header {name} has a control character (CR, LF, NUL ...) in its value",
                    {"name": quoted(name)},
                )
        return v  # pragma: no cover - the joined checks and the loop agree

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


def dot_segment_problem(path: str) -> str | None:
    """Does this path (no query) hold a ``.`` or ``..`` segment, raw or percent-encoded, once or
    several times over (``%2e``, ``%252e``), with ``%2F`` or ``%5C`` as separators? HTTP clients and
    servers remove dot segments, so they would climb out of the endpoint's base path."""
    if "." not in path and "%" not in path and path.isascii():
        return None
    for _ in range(_ENCODING_ROUNDS + 1):
        if _DOT_SEGMENT.search(path) or (not path.isascii() and _DOT_SEGMENT.search(normalize("NFKC", path))):
            return "path must not hold '.' or '..' segments (raw or percent-encoded)"
        if "%" not in path:
            return None
        raw = unquote_to_bytes(path)
        if _OVERLONG.search(raw):
            return "path holds an overlong UTF-8 sequence"
        decoded = raw.decode("utf-8", "replace")
        if decoded == path:
            return None
        path = decoded
    return f"path is percent-encoded more than {_ENCODING_ROUNDS} times over"


def quoted(name: str, limit: int = 64) -> str:
    """A caller's string made safe to put in an error message: ASCII-escaped and truncated."""
    return ascii(name[:limit]) + ("..." if len(name) > limit else "")


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
            "The upstream's body when it answered JSON; except JSON holding an integer outside 64 bits or "
            "more than 100,000 values, which comes as the exact text in `body`."
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

    def raise_for_error(self) -> ReplyEnvelope:
        """This reply when ``ok``; else the error it stands for (as httpx's ``raise_for_status``): the
        gateway's error code as its exception (``timeout`` → ``UpstreamTimeoutError`` ...), or
        ``UpstreamStatusError`` for an upstream answer of 4xx or 5xx."""
        if self.error is not None:
            raise ERROR_TYPES[self.error.code](self.error.message, attempts=self.attempts)
        if self.status is None or self.status >= 400:
            raise UpstreamStatusError(
                f"{self.upstream or 'the upstream'} answered {self.status}", status=self.status or 0,
                attempts=self.attempts,
            )  # fmt: skip
        return self

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

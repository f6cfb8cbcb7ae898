"""JSON and msgpack codecs for the envelopes. Pure functions, no I/O.

Decoding maps every failure to a wire error (``invalid_request`` / ``payload_too_large``) that carries
whatever request id could be salvaged, so even unreadable input gets a correlated error reply.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
from pydantic import ValidationError

from gateway.envelope.bounds import (
    DecodeLimits,
    json_may_be_deep,
    json_nodes_exceeded,
    json_value_problem,
    msgpack_shape_exceeded,
)
from gateway.envelope.models import SECURITY_ERRORS as _SECURITY_ERRORS
from gateway.envelope.models import RequestEnvelope, quoted
from gateway.errors import GatewayError, InvalidRequestError, PayloadTooLargeError

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_ALIASES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})


def normalise_content_type(content_type: str | None) -> str:
    """Map a message's content type onto one of the two codecs; unknown types are rejected later."""
    base = (content_type or JSON).split(";", 1)[0].strip().lower()
    if base in _MSGPACK_ALIASES:
        return MSGPACK
    return JSON if base in ("", JSON, "text/json") else base


class DecodeError(InvalidRequestError):
    """The request could not be decoded; ``request_id`` is what could be salvaged for the reply, and
    ``upstream`` the name the envelope claimed (unchecked: the pipeline keeps it only if configured)."""

    def __init__(
        self, message: str, request_id: str | None, *, security_kind: str | None = None, upstream: str | None = None
    ) -> None:
        super().__init__(message, security_kind=security_kind)
        self.request_id = request_id
        self.upstream = upstream


class OversizeError(PayloadTooLargeError):
    def __init__(self, message: str, request_id: str | None) -> None:
        super().__init__(message)
        self.request_id = request_id


def decode_request(raw: bytes, content_type: str, limits: DecodeLimits) -> RequestEnvelope:
    """Bytes off the bus → a validated request envelope, or a DecodeError/OversizeError.

    The size is checked before anything is parsed, the node count of a message that could exceed
    it before parsing (see ``bounds``), depth and value types right after.
    """
    codec = normalise_content_type(content_type)
    if codec not in (JSON, MSGPACK):
        raise DecodeError(f"unsupported content type {content_type!r} (use {JSON} or {MSGPACK})", None)
    if len(raw) > limits.max_bytes:
        raise OversizeError(f"request is {len(raw)} bytes, over the {limits.max_bytes}-byte limit", leading_id(raw))
    data = _parse(raw, codec, limits)
    if not isinstance(data, dict):
        raise DecodeError("envelope must be a JSON object / msgpack map", None)
    request_id, upstream = _salvage_id(data), _salvage(data, "upstream")
    if (codec == MSGPACK or json_may_be_deep(raw, limits)) and (
        problem := json_value_problem(data.get("json"), limits)
    ):
        raise DecodeError(problem, request_id, upstream=upstream)
    try:
        return RequestEnvelope.model_validate(data)
    except ValidationError as exc:
        raise DecodeError(_describe(exc), request_id, security_kind=_security_kind(exc), upstream=upstream) from exc


def _parse(raw: bytes, codec: str, limits: DecodeLimits) -> Any:
    if len(raw) > limits.max_nodes:  # n bytes hold at most n values: smaller messages need no count
        scan = json_nodes_exceeded if codec == JSON else msgpack_shape_exceeded
        if problem := scan(raw, limits):
            raise DecodeError(problem, leading_id(raw))
    try:
        return orjson.loads(raw) if codec == JSON else msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # the parsers raise a variety: ValueError, StackError, ExtraData ...
        raise DecodeError(f"body is not valid {codec.split('/')[1]}: {_short(exc)}", leading_id(raw)) from exc


# The id when it is the envelope's first key (as the SDK writes it): found without parsing the rest.
_LEADING_JSON_ID = re.compile(rb'\A\s{0,64}\{\s{0,64}"id"\s{0,64}:\s{0,64}"([^"\\\x00-\x1f]{1,128})"')
_MSGPACK_MAPS = {**{b: 1 for b in range(0x80, 0x90)}, 0xDE: 3, 0xDF: 5}  # map header → its size in bytes


def leading_id(raw: bytes) -> str | None:
    """The request id, when it is the first key of the envelope, read without parsing (either codec)."""
    match = _LEADING_JSON_ID.match(raw)
    if match is not None:
        return _text(match.group(1))
    head = _MSGPACK_MAPS.get(raw[0]) if raw else None
    if head is None or raw[head : head + 3] != b"\xa2id" or len(raw) <= head + 3:
        return None
    first = raw[head + 3]
    if 0xA1 <= first <= 0xBF:
        start, size = head + 4, first & 0x1F
    elif first == 0xD9 and len(raw) > head + 4:
        start, size = head + 5, raw[head + 4]
    else:
        return None
    return _text(raw[start : start + size]) if len(raw) >= start + size else None


def _text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if 0 < len(text) <= 128 else None


def _salvage_id(data: Mapping[Any, Any]) -> str | None:
    return _salvage(data, "id")


def _salvage(data: Mapping[Any, Any], field: str) -> str | None:
    value = data.get(field)
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


def _short(exc: Exception) -> str:
    """A parser's complaint, bounded: it may quote the input."""
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _security_kind(exc: ValidationError) -> str | None:
    """A refused path or header is an attack worth a security event (the validators name their type)."""
    for err in exc.errors():
        if err["type"] in _SECURITY_ERRORS:
            return str(err["type"])
    return None


_PLAIN_LOC = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _loc_part(part: str | int) -> str:
    """A field name, or the caller's own key (an extra field, a header name) quoted safely."""
    text = str(part)
    return text if _PLAIN_LOC.fullmatch(text) else quoted(text)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(_loc_part(p) for p in err["loc"]) or "envelope"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the pipeline knows about one answer before encoding it for the wire."""

    id: str
    status: int | None = None
    headers: Mapping[str, str] | None = None
    body: bytes | None = None
    body_content_type: str | None = None
    error: GatewayError | None = None
    attempts: int = 0
    duration_ms: float = 0.0
    upstream: str | None = None

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error is not None else None


def encode_reply(reply: Reply, content_type: str) -> bytes:
    codec = normalise_content_type(content_type)
    doc = reply_document(reply, binary=codec == MSGPACK)
    if codec == MSGPACK:
        return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]  # untyped library
    return dumps_json(doc)


def dumps_json(doc: Any) -> bytes:
    """orjson, trimmed: its output keeps a 4 KiB allocation even for a 100-byte document, and replies
    and telemetry events are held until the broker confirms them (63 MiB at 10,000 in flight)."""
    data = orjson.dumps(doc)
    return bytes(memoryview(data)) if len(data) < 2048 else data


def reply_document(reply: Reply, *, binary: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": reply.id,
        "status": reply.status,
        "headers": dict(reply.headers or {}),
        "error": None if reply.error is None else {"code": reply.error.code, "message": reply.error.message},
        "attempts": reply.attempts,
        "duration_ms": round(reply.duration_ms, 3),
        "upstream": reply.upstream,
    }
    if reply.body is not None:
        doc.update(_body_fields(reply.body, reply.body_content_type, binary=binary))
    return doc


# A reply's JSON body is parsed to be re-encoded, at ~90 bytes per value: a hostile upstream's 10 MB of
# "[{},...]" would take ~300 MB. Past this many values (the request default, MAX_ENVELOPE_NODES) the body
# stays exact text in ``body``, counted before parsing.
REPLY_JSON_MAX_NODES = 100_000
_REPLY_LIMITS = DecodeLimits(max_bytes=0, max_depth=0, max_nodes=REPLY_JSON_MAX_NODES)  # only nodes are read


def _body_fields(body: bytes, content_type: str | None, *, binary: bool) -> dict[str, Any]:
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if (ctype == JSON or ctype.endswith("+json")) and not _too_many_values(body) and not _beyond_64_bits(body):
        try:
            return {"json": orjson.loads(body)} if body else {"body": ""}
        except orjson.JSONDecodeError:
            pass  # a server that lies about JSON: fall through to text/bytes
    if binary:
        return {"body": body}
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_b64": base64.b64encode(body).decode("ascii")}


# Nineteen digits or more: the only integers that may fall outside 64 bits (-2**63 - 1 has 19).
_LONG_DIGITS = re.compile(rb"\d{19}")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class _BeyondInt64(Exception):
    pass


def _int64(text: str) -> int:
    value = int(text)
    if not _INT64_MIN <= value <= _UINT64_MAX:
        raise _BeyondInt64
    return value


def _too_many_values(body: bytes) -> bool:
    return len(body) > REPLY_JSON_MAX_NODES and json_nodes_exceeded(body, _REPLY_LIMITS) is not None


def _beyond_64_bits(body: bytes) -> bool:
    """Does this JSON hold an integer outside 64 bits? orjson would make it a float and lose digits,
    and neither orjson nor msgpack can write it back; such a body goes out as text, exactly as sent."""
    if _LONG_DIGITS.search(body) is None:
        return False
    try:
        json.loads(body, parse_int=_int64)
    except _BeyondInt64:
        return True
    except (ValueError, RecursionError):
        return False  # not JSON at all, or too deep for orjson as well: the caller finds out
    return False


def encode_request(envelope: Mapping[str, Any], content_type: str = JSON) -> bytes:
    """For requesters (the SDK, tests, benchmarks): a request map → wire bytes."""
    if normalise_content_type(content_type) == MSGPACK:
        return msgpack.packb(dict(envelope), use_bin_type=True)  # type: ignore[no-any-return]  # untyped library
    return orjson.dumps(dict(envelope))


def decode_reply(raw: bytes, content_type: str) -> dict[str, Any]:
    """For requesters: reply bytes → the reply map (validated by ReplyEnvelope in the SDK)."""
    binary = normalise_content_type(content_type) == MSGPACK
    data = msgpack.unpackb(raw, raw=False) if binary else orjson.loads(raw)
    if not isinstance(data, dict):
        raise DecodeError("reply is not a map", None)
    return data


def request_json_body(envelope: RequestEnvelope) -> bytes | None:
    """The outbound body: JSON encoded when the envelope carried ``json``, else the raw body."""
    if envelope.has_json:
        return orjson.dumps(envelope.json_)
    return envelope.body_bytes()

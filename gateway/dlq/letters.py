"""What one dead letter says, read without trusting it: a summary, filters and a redacted view.

The body is parsed leniently (no envelope validation: a dead letter is often one that failed it),
only when it is small enough, and only for the fields a table needs. The principal is the AMQP
``user_id`` when the message carries one (the broker checked it), else the principal of the signing
key the message names, labelled ``(claimed)``: the signature is not verified here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

from gateway.access import signature
from gateway.access.config import SecurityConfig
from gateway.bus.base import ERROR_HEADER, TOPIC_HEADER
from gateway.bus.dead_letters import DeadLetter
from gateway.envelope.codec import MSGPACK, normalise_content_type
from gateway.parking import ticket as park_headers
from gateway.telemetry.redaction import REDACTED, Redactor

PARSE_LIMIT = 1024 * 1024  # larger bodies are not parsed for a summary
NOT_IDEMPOTENT = frozenset({"POST", "PATCH"})


@dataclass(frozen=True, slots=True)
class Summary:
    """One table row, and what replay needs to decide."""

    id: str
    code: str
    reason: str
    upstream: str | None
    method: str | None
    idempotency_key: str | None
    age: float | None  # seconds; None when the broker gave no timestamp
    principal: str | None

    @property
    def idempotent(self) -> bool:
        """Safe to send twice: a method other than POST/PATCH, or an idempotency key (the gateway
        answers a repeat from its record). An undecodable request is not known to be safe."""
        if self.idempotency_key:
            return True
        return self.method is not None and self.method.upper() not in NOT_IDEMPOTENT


@dataclass(frozen=True, slots=True)
class Filters:
    code: str | None = None
    since: float | None = None  # seconds: only letters younger than this
    upstream: str | None = None

    def match(self, summary: Summary) -> bool:
        if self.code is not None and summary.code != self.code:
            return False
        if self.upstream is not None and summary.upstream != self.upstream:
            return False
        return self.since is None or (summary.age is not None and summary.age <= self.since)


def envelope_fields(letter: DeadLetter) -> dict[str, Any]:
    """The envelope as a mapping when the body decodes to one, else empty."""
    if not letter.body or len(letter.body) > PARSE_LIMIT:
        return {}
    try:
        if normalise_content_type(letter.content_type) == MSGPACK:
            data = msgpack.unpackb(letter.body, raw=False, strict_map_key=False)
        else:
            data = orjson.loads(letter.body)
    except Exception:  # noqa: BLE001 - any parser failure means "does not decode"
        return {}
    return data if isinstance(data, dict) else {}


def summarise(letter: DeadLetter, *, now: float, security: SecurityConfig | None = None) -> Summary:
    fields = envelope_fields(letter)
    code, _, reason = letter.headers.get(ERROR_HEADER, "").partition(":")
    age = None if letter.timestamp_ms is None else max(0.0, now - letter.timestamp_ms / 1000)
    return Summary(
        id=_text(fields.get("id")) or letter.ref,
        code=code.strip() or "-",
        reason=reason.strip(),
        upstream=_text(fields.get("upstream")),
        method=_text(fields.get("method")),
        idempotency_key=_text(fields.get("idempotency_key")),
        age=age,
        principal=principal(letter, security),
    )


def principal(letter: DeadLetter, security: SecurityConfig | None) -> str | None:
    if letter.user_id:
        return letter.user_id
    key_id = letter.headers.get(signature.KEY_ID)
    if not key_id:
        return None
    key = security.keys.get(key_id) if security is not None else None
    return f"{key.principal if key is not None else 'key ' + key_id} (claimed)"


def redacted(letter: DeadLetter, summary: Summary) -> dict[str, Any]:
    """The letter as a document for ``cmn dlq show``: secrets in headers and body replaced."""
    redactor = Redactor()
    headers = redactor.mapping(letter.headers)
    if signature.SIGNATURE in headers:
        headers[signature.SIGNATURE] = REDACTED
    fields = envelope_fields(letter)
    body: Any = redactor.mapping(fields) if fields else _raw(letter.body)
    return {
        "id": summary.id,
        "ref": letter.ref,
        "code": summary.code,
        "reason": redactor.value(summary.reason),
        "upstream": summary.upstream,
        "age_s": None if summary.age is None else round(summary.age, 1),
        "principal": summary.principal,
        "idempotent": summary.idempotent,
        "correlation_id": letter.correlation_id,
        "reply_to": letter.reply_to,
        "content_type": letter.content_type,
        "headers": headers,
        "body": redactor.value(body),
    }


def _raw(body: bytes) -> str:
    text = body[:4096].decode("utf-8", "replace")
    return text + (f" ... ({len(body)} bytes)" if len(body) > 4096 else "")


def _text(value: object) -> str | None:
    return value[:256] if isinstance(value, str) and value else None


def headers_for_replay(headers: Mapping[str, str]) -> dict[str, str]:
    """The letter's headers without ``x-cmn-error``, ``x-cmn-topic``, the x-cmn signature headers and a
    parked copy's park headers: the gateway accepts a signature (and a park seal) once, so a replay
    carries the replaying operator's signature or none, and starts its park count and deadline afresh."""
    drop = {ERROR_HEADER, TOPIC_HEADER, *signature.HEADERS, *park_headers.HEADERS}
    return {name: value for name, value in headers.items() if name not in drop}

"""The signed-envelope scheme, v1: HMAC-SHA256 over the transport's addressing and the raw body.

Three message headers, the same on AMQP and Kafka, so any language can produce them::

    x-cmn-key-id     the key's id (named under ``security.keys`` in the upstreams file)
    x-cmn-signed-at  epoch milliseconds
    x-cmn-signature  "v1=" + lowercase hex HMAC-SHA256(secret bytes,
                     f"{signed_at}\\n{key_id}\\n{correlation_id}\\n{reply_to}\\n".encode() + body)

``correlation_id`` and ``reply_to`` are the transport's values (AMQP properties, Kafka headers), ""
when absent: binding them means a captured message cannot be replayed with replies sent elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

KEY_ID = "x-cmn-key-id"
SIGNED_AT = "x-cmn-signed-at"
SIGNATURE = "x-cmn-signature"
HEADERS = (KEY_ID, SIGNED_AT, SIGNATURE)
VERSION = "v1="

# RabbitMQ rewrites a published "amq.rabbitmq.reply-to" into a per-channel name on delivery; the
# requester could only have signed the name it published.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def signature(secret: bytes, *, signed_at: int, key_id: str, correlation_id: str, reply_to: str, body: bytes) -> str:
    """The ``x-cmn-signature`` value."""
    mac = hmac.new(secret, f"{signed_at}\n{key_id}\n{correlation_id}\n{reply_to}\n".encode(), hashlib.sha256)
    mac.update(body)
    return VERSION + mac.hexdigest()


def sign(
    key_id: str, secret: bytes, *, now_ms: int, correlation_id: str | None, reply_to: str | None, body: bytes
) -> dict[str, str]:
    """The three headers for one message (what ``GatewayClient`` adds when given a key)."""
    value = signature(
        secret, signed_at=now_ms, key_id=key_id, correlation_id=correlation_id or "", reply_to=reply_to or "", body=body
    )
    return {KEY_ID: key_id, SIGNED_AT: str(now_ms), SIGNATURE: value}


def matches(
    secret: bytes, claimed: str, *, signed_at: int, key_id: str, correlation_id: str, reply_to: str, body: bytes
) -> bool:
    """Constant-time comparison, trying the published form of a direct reply-to name too."""
    candidates = [reply_to]
    if reply_to.startswith(DIRECT_REPLY_TO + "."):
        candidates.append(DIRECT_REPLY_TO)
    expected = [
        signature(secret, signed_at=signed_at, key_id=key_id, correlation_id=correlation_id, reply_to=r, body=body)
        for r in candidates
    ]
    claimed_bytes = claimed.encode("ascii", "replace")
    return any(hmac.compare_digest(e.encode(), claimed_bytes) for e in expected)


def present(headers: Mapping[str, str]) -> bool:
    return any(name in headers for name in HEADERS)

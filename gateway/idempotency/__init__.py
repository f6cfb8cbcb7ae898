"""Idempotency keys: a duplicate inside the window is answered from the first result.

``key`` scopes a caller's key and fingerprints the request; ``store`` is the one store protocol, with
an in-memory store bounded by bytes and a Redis store shared by replicas; ``dedupe`` is the
``Deduplicator`` the pipeline calls.
"""

from gateway.idempotency.dedupe import Deduplicator
from gateway.idempotency.key import IdempotencyKey, fingerprint
from gateway.idempotency.store import (
    DEFAULT_MEMORY_BYTES,
    ClaimingStore,
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
)

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "ClaimingStore",
    "Deduplicator",
    "IdempotencyKey",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "RedisIdempotencyStore",
    "fingerprint",
]

"""A caller's idempotency key, scoped to its caller and upstream, with the fingerprint of its request.

The scope is ``principal:upstream:key`` (``anonymous`` for callers without a principal), so no caller
ever sees another's result. The fingerprint covers method, path, body and forwarded headers: the same
key on a different request is refused with ``invalid_request``, as Stripe and the IETF
Idempotency-Key draft answer it, rather than answered with a response to something else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass


def fingerprint(method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> bytes:
    """SHA-256 of method, path, headers (names in any case) and body: equal only for the same request."""
    digest = hashlib.sha256()
    for part in (method, path, *sorted(f"{k.lower()}:{v}" for k, v in headers.items())):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(body or b"")
    return digest.digest()


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A caller's idempotency key, scoped, with the fingerprint of the request it was first used for."""

    scope: str
    fingerprint: bytes

    @classmethod
    def of(
        cls,
        *,
        principal: str,
        upstream: str,
        key: str,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> IdempotencyKey:
        # Length prefixes delimit the parts: a user name or upstream may itself contain ':'.
        scope = f"{len(principal)}:{principal}:{len(upstream)}:{upstream}:{key}"
        return cls(scope, fingerprint(method, path, body, headers))

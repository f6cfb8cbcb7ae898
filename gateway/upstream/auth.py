"""The credential the gateway sends to an upstream, resolved once at start-up from its ``auth:``.

The router sets it on every attempt, replacing any header of the same name the caller sent: a
caller can neither override the gateway's credential nor choose its own under that name. The value
lives only in ``Credential.value``; the holder's repr, and every message about it, names where it
came from, never what it is.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.errors import ConfigError
from gateway.secrets import SecretRef, SecretResolver
from gateway.upstream.config import AuthConfig, UpstreamsFile

_FORBIDDEN_IN_VALUE = frozenset("\r\n\x00")


@dataclass(frozen=True, slots=True)
class Credential:
    """One header (``name`` lower-case) that carries the upstream's credential."""

    name: str
    value: str = field(repr=False)
    source: str  # "bearer env:VAR" and the like: where the value came from, for reprs and messages

    def apply(self, headers: Mapping[str, str]) -> dict[str, str]:
        """``headers`` with the credential set and any caller header of the same name dropped, in
        any case, or with '_' for '-' (CGI-style servers read ``X_Api_Key`` as ``X-Api-Key``)."""
        same = self.name.replace("_", "-")
        kept = {k: v for k, v in headers.items() if k.lower().replace("_", "-") != same}
        kept[self.name] = self.value
        return kept

    def __repr__(self) -> str:
        return f"<Credential {self.name} from {self.source}>"

    __str__ = __repr__


async def resolve_upstream_auth(upstreams: UpstreamsFile, resolver: SecretResolver) -> dict[str, Credential]:
    """Each upstream with ``auth:`` → its credential; a missing or unusable secret is a ConfigError."""
    return {
        name: await resolve_credential(name, config.auth, resolver)
        for name, config in upstreams.upstreams.items()
        if config.auth is not None
    }


async def resolve_credential(upstream: str, auth: AuthConfig, resolver: SecretResolver) -> Credential:
    purpose = f"upstream {upstream} auth"
    if auth.bearer is not None:
        token = await _secret(auth.bearer, resolver, purpose)
        return Credential("authorization", f"Bearer {token}", f"bearer {auth.bearer.describe()}")
    if auth.basic is not None:
        password = await _secret(auth.basic.password, resolver, purpose)
        pair = base64.b64encode(f"{auth.basic.username}:{password}".encode()).decode("ascii")
        return Credential("authorization", f"Basic {pair}", f"basic {auth.basic.password.describe()}")
    assert auth.header is not None  # AuthConfig holds exactly one
    value = await _secret(auth.header.value, resolver, purpose)
    return Credential(auth.header.name.lower(), value, f"header {auth.header.value.describe()}")


async def _secret(ref: SecretRef, resolver: SecretResolver, purpose: str) -> str:
    value = await resolver.resolve(ref, purpose=purpose)
    if not _FORBIDDEN_IN_VALUE.isdisjoint(value):
        raise ConfigError(f"{purpose}: secret {ref.describe()} holds a line break or NUL, which no header may carry")
    return value

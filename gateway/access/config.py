"""The upstreams file's security parts, pydantic at the edge.

::

    security:
      keys:                                  # signing keys for x-cmn-signature
        billing-2026: {principal: billing, secret: {env: CMN_KEY_BILLING}}
      principals:                            # optional: the tenants a principal may act for
        billing: {tenants: [acme, globex]}

    upstreams:
      payments:
        endpoints: [https://payments.internal]
        access:
          allow: [billing, {principal: reports, methods: [GET], path_prefixes: [/v1/reports/]}]
          methods: [GET, POST]               # narrows every entry that does not say otherwise
          path_prefixes: [/v1/]

An upstream without ``access`` is open to every caller (set REQUIRE_IDENTITY to refuse callers
without a principal).
"""

from __future__ import annotations

import re
from typing import cast

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from gateway.secrets import SecretRef

# Principal and key names: what a RabbitMQ user name or a header value can safely be, and a label;
# "anonymous" is the name of callers without a principal, so it can be no principal's.
NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
ANONYMOUS = "anonymous"


def _not_reserved(name: str) -> str:
    if name == ANONYMOUS:
        raise ValueError(f"{ANONYMOUS!r} names callers without a principal and cannot be a principal")
    return name


_METHOD = re.compile(r"^[A-Z]{1,16}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _methods(v: frozenset[str] | None) -> frozenset[str] | None:
    if v is None:
        return None
    upper = frozenset(m.upper() for m in v)
    bad = sorted(m for m in upper if not _METHOD.match(m))
    if bad:
        raise ValueError(f"not HTTP methods: {', '.join(bad)}")
    return upper


def _prefixes(v: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if v is None:
        return None
    for prefix in v:
        if not prefix.startswith("/") or ".." in prefix.split("/"):
            raise ValueError(f"path prefix {prefix!r} must start with '/' and hold no dot segments")
    return v


class AccessRule(_Model):
    """One principal's permission on one upstream; unset fields take the access block's values."""

    principal: str = Field(pattern=NAME)
    methods: frozenset[str] | None = None
    path_prefixes: tuple[str, ...] | None = None

    _check_principal = field_validator("principal")(_not_reserved)

    _check_methods = field_validator("methods")(_methods)
    _check_prefixes = field_validator("path_prefixes")(_prefixes)


def _bare_name_schema(schema: JsonDict) -> None:
    """The JSON Schema accepts what ``_bare_names`` does: an allow entry written as the principal alone."""
    allow = cast(JsonDict, cast(JsonDict, schema["properties"])["allow"])
    allow["items"] = {"anyOf": [{"type": "string", "pattern": NAME}, allow["items"]]}


class AccessConfig(_Model):
    model_config = ConfigDict(json_schema_extra=_bare_name_schema)

    allow: tuple[AccessRule, ...] = Field(min_length=1)
    methods: frozenset[str] | None = None
    path_prefixes: tuple[str, ...] | None = None

    _check_methods = field_validator("methods")(_methods)
    _check_prefixes = field_validator("path_prefixes")(_prefixes)

    @field_validator("allow", mode="before")
    @classmethod
    def _bare_names(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            return [{"principal": item} if isinstance(item, str) else item for item in v]
        return v


class KeyConfig(_Model):
    principal: str = Field(pattern=NAME)
    secret: SecretRef

    _check_principal = field_validator("principal")(_not_reserved)


class PrincipalConfig(_Model):
    tenants: frozenset[str] = frozenset()


class SecurityConfig(_Model):
    keys: dict[str, KeyConfig] = Field(default_factory=dict)
    principals: dict[str, PrincipalConfig] = Field(default_factory=dict)

    @field_validator("keys", "principals")
    @classmethod
    def _names(cls, v: dict[str, object]) -> dict[str, object]:
        for name in v:
            if not re.match(NAME, name):
                raise ValueError(f"name {name!r} must be 1-128 letters, digits, '.', '_', '@' or '-'")
        return v

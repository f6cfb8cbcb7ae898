"""Static checks of the upstreams file: access, TLS, retries, rate limits and secrets written in it.

Rules chosen here (and in the README's Security section):

- An upstream without ``access`` is open to every caller (CMN-AUTH-001, medium).
- Retries are flagged (CMN-RETRY-001) when an upstream makes more than one attempt and its budget
  lets a storm through: ``budget_ratio`` of 0.5 or more (Finagle and linkerd use 0.2), or a floor
  ``budget_min_per_second`` above 100. The budget allows ``min * window + ratio * requests`` retries
  per window, so ``ratio: 0`` with ``min: 0`` allows none at all: not a risk, and not flagged.
- Secrets: a literal value under a key that names a secret (password, secret, token, api key,
  authorization, bearer, private key, credential) that is not a ``{env|file|keyvault}`` reference;
  any ``Bearer``/``Basic`` value; any URL with a user or password in it. Values are never echoed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway.app import defaults_from
from gateway.security.audit import findings as r
from gateway.security.audit.context import AuditContext, is_loopback
from gateway.security.audit.findings import Finding, finding
from gateway.security.audit.locate import YamlLocator
from gateway.upstream.config import UpstreamConfig

_SECRET_KEY_PARTS = ("password", "passwd", "secret", "token", "apikey", "authorization", "bearer", "privatekey")
_REFERENCE_KEYS = frozenset({"env", "file", "keyvault"})
_RATIO_LIMIT = 0.5
_FLOOR_LIMIT = 100.0


def static_findings(ctx: AuditContext) -> Iterator[Finding]:
    for name, upstream in ctx.config.upstreams.upstreams.items():
        yield from _upstream(ctx, name, upstream)
    yield from secret_findings(ctx.locator, ctx.document)


def _upstream(ctx: AuditContext, name: str, upstream: UpstreamConfig) -> Iterator[Finding]:
    at = ctx.locator.at
    if upstream.access is None:
        yield finding(r.OPEN_UPSTREAM, f"upstream {name} is open to every caller", at("upstreams", name))
    yield from _endpoints(ctx, name, upstream)
    if upstream.tls is not None and upstream.tls.min_version == "1.2":
        yield finding(r.TLS_12, f"upstream {name} accepts TLS 1.2", at("upstreams", name, "tls", "min_version"))
    if upstream.tls is not None and not upstream.tls.verify_hostname:
        yield finding(
            r.NO_HOSTNAME_CHECK,
            f"upstream {name} accepts any certificate its CA signed, for any host",
            at("upstreams", name, "tls", "verify_hostname"),
        )
    yield from _retry(ctx, name, upstream)
    limits = upstream.rate_limit
    if limits.shared and not ctx.settings.redis_url:
        yield finding(
            r.SHARED_WITHOUT_REDIS,
            f"upstream {name}: each replica keeps its own buckets, so the limit is multiplied by the replicas",
            at("upstreams", name, "rate_limit", "shared"),
        )
    if limits.per_tenant is None:
        yield finding(
            r.NO_TENANT_LIMIT, f"upstream {name} has no per-tenant limit", at("upstreams", name, "rate_limit")
        )


def _endpoints(ctx: AuditContext, name: str, upstream: UpstreamConfig) -> Iterator[Finding]:
    has_auth = isinstance(_raw_upstream(ctx, name).get("auth"), Mapping)
    for index, endpoint in enumerate(upstream.endpoints):
        parts = urlsplit(endpoint.url)
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            also = " with its `auth:` credentials" if has_auth else ""
            yield finding(
                r.PLAIN_HTTP,
                f"upstream {name} sends requests{also} unencrypted to {parts.hostname}",
                ctx.locator.at("upstreams", name, "endpoints", index),
            )


def _retry(ctx: AuditContext, name: str, upstream: UpstreamConfig) -> Iterator[Finding]:
    retry = upstream.retry
    attempts = retry.attempts or defaults_from(ctx.settings).retry_attempts
    if attempts <= 1:
        return
    loose = []
    if retry.budget_ratio >= _RATIO_LIMIT:
        loose.append(f"budget_ratio {retry.budget_ratio:g} lets retries add {retry.budget_ratio:.0%} to the load")
    if retry.budget_min_per_second > _FLOOR_LIMIT:
        loose.append(f"budget_min_per_second {retry.budget_min_per_second:g} lets that many retries through")
    if loose:
        yield finding(
            r.RETRY_UNBUDGETED,
            f"upstream {name} makes {attempts} attempts and its " + "; ".join(loose),
            ctx.locator.at("upstreams", name, "retry"),
        )


def _raw_upstream(ctx: AuditContext, name: str) -> Mapping[str, Any]:
    upstreams = ctx.document.get("upstreams")
    raw = upstreams.get(name) if isinstance(upstreams, Mapping) else None
    return raw if isinstance(raw, Mapping) else {}


def secret_findings(locator: YamlLocator, document: Mapping[str, Any]) -> Iterator[Finding]:
    """Secrets written in the raw document; needs no valid configuration (a refused file is in git too)."""
    return _secrets(locator, document, ())


def _secrets(ctx: YamlLocator, node: Any, path: tuple[str | int, ...], secret: bool = False) -> Iterator[Finding]:
    """Walk the document; ``secret`` is set below a key that names a secret, where every scalar that
    is not a reference's ``env``/``file``/``keyvault`` value is the secret itself."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = (*path, str(key))
            if secret and str(key) in _REFERENCE_KEYS and len(node) == 1:
                continue
            inside = secret or _names_secret(str(key))
            if inside and _is_literal(value):
                yield finding(r.LITERAL_SECRET, f"{key} holds a literal value (not shown)", ctx.at(*here))
            else:
                yield from _secrets(ctx, value, here, inside)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _secrets(ctx, item, (*path, index), secret)
    elif isinstance(node, str):
        yield from _secret_text(ctx, node, path)


def _secret_text(ctx: YamlLocator, text: str, path: tuple[str | int, ...]) -> Iterator[Finding]:
    scheme, _, rest = text.strip().partition(" ")
    if scheme.lower() in ("bearer", "basic") and rest.strip():
        yield finding(r.LITERAL_SECRET, f"a {scheme} credential is written in the file (not shown)", ctx.at(*path))
    elif "://" in text:
        try:
            parts = urlsplit(text.strip())
            user, password = parts.username, parts.password
        except ValueError:
            return
        if user or password:
            yield finding(
                r.URL_CREDENTIALS,
                f"the URL to {parts.hostname} carries a {'password' if password else 'user name'} (not shown)",
                ctx.at(*path),
            )


def _names_secret(key: str) -> bool:
    flat = key.lower().replace("-", "").replace("_", "")
    return any(part in flat for part in _SECRET_KEY_PARTS) or flat in ("apikey", "pass")


def _is_literal(value: Any) -> bool:
    """A scalar secret (not a reference, not empty). Booleans are switches, not secrets; URLs are
    checked as URLs."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and bool(value.strip()) and "://" not in value

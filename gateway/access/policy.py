"""What a caller may do: the per-upstream allow lists, and the tenant a request is counted under.

Decisions are pure and synchronous; the pipeline calls ``authorize`` after identifying the caller
and before any network I/O. A refusal is ``forbidden`` and never reaches the upstream.

Tenants follow the principal: a known principal may act for itself and the tenants it declares; a
request naming no tenant is counted under its principal, or under ``anonymous``, so the per-tenant
limit always applies. Tenants that belong to a principal are reserved: an anonymous caller cannot
spend them, nor the name of any principal this policy knows (declared under ``principals``, in an
allow list, or owning a signing key: the root passes key principals in ``principals``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.access.config import ANONYMOUS, AccessConfig, PrincipalConfig
from gateway.access.identity import Caller
from gateway.errors import ForbiddenError

# Headers some frameworks and proxies read as the request's real method or path (Rails, ASP.NET,
# Symfony, IIS rewrite, Google APIs): a rule narrowed to methods or paths would be checked in vain.
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
TARGET_OVERRIDES = METHOD_OVERRIDES | {"x-original-url", "x-rewrite-url"}


@dataclass(frozen=True, slots=True)
class _Rule:
    methods: frozenset[str] | None
    path_prefixes: tuple[str, ...] | None

    def permits(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.path_prefixes is None or any(_under(path, p) for p in self.path_prefixes)

    @property
    def narrowed(self) -> bool:
        return self.methods is not None or self.path_prefixes is not None


def _folded(name: str) -> str:
    """A header name as CGI-style servers read it: any case, '_' for '-'."""
    return name.lower().replace("_", "-")


def _under(path: str, prefix: str) -> bool:
    """Segment-aware: ``/v1`` covers ``/v1``, ``/v1/x`` and ``/v1?q``, not ``/v1admin``."""
    path = path.split("?", 1)[0]
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


class AccessPolicy:
    def __init__(self, upstreams: Mapping[str, AccessConfig | None], principals: Mapping[str, PrincipalConfig]) -> None:
        self._rules = {name: _rules(access) for name, access in upstreams.items() if access is not None}
        self._tenants = {name: config.tenants | {name} for name, config in principals.items()}
        allowed = frozenset(name for rules in self._rules.values() for name in rules)
        self._reserved = allowed.union(*self._tenants.values())  # every name a principal may act for

    def authorize(
        self,
        caller: Caller,
        *,
        upstream: str,
        method: str,
        path: str,
        tenant: str | None,
        headers: Iterable[str] = (),
    ) -> str:
        """The tenant to count the request under; ForbiddenError when the caller may not send it.
        ``headers`` are the request's header names (for the method and path override headers)."""
        effective = self._tenant(caller, tenant)
        rules = self._rules.get(upstream)
        if rules is None:
            return effective  # no access block: open to every caller
        rule = rules.get(caller.principal) if caller.principal is not None else None
        if rule is None:
            raise ForbiddenError(f"{caller.name} may not use upstream {upstream}")
        if not rule.permits(method, path):
            raise ForbiddenError(f"{caller.name} may not {method} this path on upstream {upstream}")
        if rule.narrowed and (override := next((h for h in headers if _folded(h) in TARGET_OVERRIDES), None)):
            raise ForbiddenError(f"header {override} would override the method or path checked on upstream {upstream}")
        return effective

    def _tenant(self, caller: Caller, tenant: str | None) -> str:
        principal = caller.principal
        if principal is None:
            if tenant is not None and tenant in self._reserved:
                raise ForbiddenError(f"tenant {tenant} belongs to a principal: an anonymous request may not use it")
            return tenant or ANONYMOUS
        if tenant is None or tenant == principal:
            return principal
        if tenant not in self._tenants.get(principal, frozenset()):
            raise ForbiddenError(f"{principal} may not act for tenant {tenant}")
        return tenant

    def open_upstreams(self, names: list[str]) -> list[str]:
        """Upstreams any caller may use (for start-up warnings and the audit)."""
        return [n for n in names if n not in self._rules]

    def __repr__(self) -> str:
        return f"<AccessPolicy [{len(self._rules)} guarded upstreams, {len(self._tenants)} principals]>"


def _rules(access: AccessConfig) -> dict[str, _Rule]:
    return {
        rule.principal: _Rule(
            rule.methods if rule.methods is not None else access.methods,
            rule.path_prefixes if rule.path_prefixes is not None else access.path_prefixes,
        )
        for rule in access.allow
    }

"""The access policy: allow lists narrowed by methods and path prefixes; tenants follow the principal."""

from __future__ import annotations

import pytest

from gateway.access.config import AccessConfig, PrincipalConfig
from gateway.access.identity import ANONYMOUS_CALLER, Caller
from gateway.access.policy import AccessPolicy
from gateway.errors import ForbiddenError

BILLING = Caller("billing", "signature")
REPORTS = Caller("reports", "user_id")
MALLORY = Caller("mallory", "user_id")


def policy() -> AccessPolicy:
    payments = AccessConfig.model_validate(
        {
            "allow": ["billing", {"principal": "reports", "methods": ["GET"], "path_prefixes": ["/v1/reports"]}],
            "methods": ["GET", "POST"],
            "path_prefixes": ["/v1/"],
        }
    )
    return AccessPolicy(
        {"payments": payments, "public": None}, {"billing": PrincipalConfig(tenants=frozenset({"acme"}))}
    )


def allowed(caller: Caller, method: str = "GET", path: str = "/v1/charges", upstream: str = "payments") -> bool:
    try:
        policy().authorize(caller, upstream=upstream, method=method, path=path, tenant=None)
    except ForbiddenError:
        return False
    return True


def test_only_listed_principals_use_a_guarded_upstream() -> None:
    assert allowed(BILLING)
    assert not allowed(MALLORY)
    assert not allowed(ANONYMOUS_CALLER)


def test_an_upstream_without_access_is_open() -> None:
    assert allowed(MALLORY, upstream="public")
    assert allowed(ANONYMOUS_CALLER, "DELETE", "/anything", upstream="public")


def test_methods_and_path_prefixes_narrow_the_allow_list() -> None:
    assert allowed(BILLING, "POST", "/v1/charges")
    assert not allowed(BILLING, "DELETE", "/v1/charges")
    assert not allowed(BILLING, "GET", "/admin")
    assert allowed(REPORTS, "GET", "/v1/reports")
    assert allowed(REPORTS, "GET", "/v1/reports/2026?x=1")
    assert not allowed(REPORTS, "GET", "/v1/reportsadmin")  # segment-aware
    assert not allowed(REPORTS, "POST", "/v1/reports")
    assert not allowed(REPORTS, "GET", "/v1/charges")


def test_a_refusal_is_forbidden_with_a_security_kind() -> None:
    with pytest.raises(ForbiddenError, match="mallory may not use upstream payments") as refused:
        policy().authorize(MALLORY, upstream="payments", method="GET", path="/v1/x", tenant=None)
    assert (refused.value.code, refused.value.security_kind, refused.value.dead_letter) == (
        "forbidden",
        "forbidden",
        False,
    )


def tenant(caller: Caller, claimed: str | None) -> str:
    return policy().authorize(caller, upstream="public", method="GET", path="/", tenant=claimed)


def test_tenants_follow_the_principal() -> None:
    assert tenant(BILLING, None) == "billing"
    assert tenant(BILLING, "acme") == "acme"
    assert tenant(MALLORY, None) == "mallory"
    with pytest.raises(ForbiddenError, match="may not act for tenant acme"):
        tenant(MALLORY, "acme")
    with pytest.raises(ForbiddenError):
        tenant(REPORTS, "billing")


def test_anonymous_requests_count_under_anonymous_and_cannot_spend_a_principals_tenant() -> None:
    assert tenant(ANONYMOUS_CALLER, None) == "anonymous"
    assert tenant(ANONYMOUS_CALLER, "walk-in") == "walk-in"
    for reserved in ("acme", "billing"):
        with pytest.raises(ForbiddenError, match="belongs to a principal"):
            tenant(ANONYMOUS_CALLER, reserved)


def test_anonymous_is_no_principals_name() -> None:
    from pydantic import ValidationError

    from gateway.access.config import KeyConfig

    with pytest.raises(ValidationError, match="cannot be a principal"):
        AccessConfig.model_validate({"allow": ["anonymous"]})
    with pytest.raises(ValidationError, match="cannot be a principal"):
        KeyConfig.model_validate({"principal": "anonymous", "secret": {"env": "K"}})

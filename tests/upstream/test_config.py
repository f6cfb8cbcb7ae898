"""The upstreams file: minimal form, defaults, and one clear error per bad field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.upstream.config import EndpointConfig, UpstreamDefaults, UpstreamsFile
from gateway.upstream.policies import pool_policy, route_policy


def test_minimal_form_normalises_bare_urls() -> None:
    parsed = UpstreamsFile.model_validate(
        {"upstreams": {"pay": {"endpoints": ["http://a:1/", {"url": "https://b:2", "weight": 3}]}}}
    )
    endpoints = parsed.upstreams["pay"].endpoints
    assert endpoints == [
        EndpointConfig(url="http://a:1", weight=1),
        EndpointConfig(url="https://b:2", weight=3),
    ]
    assert parsed.upstreams["pay"].load_balancer == "least_request"
    assert parsed.upstreams["pay"].tls is None


def test_unset_settings_fall_back_to_environment_defaults() -> None:
    config = UpstreamsFile.model_validate({"upstreams": {"pay": {"endpoints": ["http://a:1"]}}}).upstreams["pay"]
    defaults = UpstreamDefaults(pool_size=7, connect_timeout=3.0, retry_attempts=5, request_timeout=9.0)
    assert pool_policy(config, defaults).max_size == 7
    route = route_policy(config, defaults)
    assert (route.connect_timeout, route.attempt_timeout, route.retry.attempts) == (3.0, 9.0, 5)


@pytest.mark.parametrize(
    ("upstream", "field"),
    [
        ({"endpoints": []}, "endpoints"),
        ({"endpoints": ["ftp://a:1"]}, "endpoints.0.url"),
        ({"endpoints": ["http://a:1", "http://a:1/"]}, "endpoints"),
        ({"endpoints": ["http://a:1"], "surprise": 1}, "surprise"),
        ({"endpoints": ["http://a:1"], "pool": {"max_size": 0}}, "pool.max_size"),
        ({"endpoints": ["http://a:1"], "load_balancer": "fastest"}, "load_balancer"),
        ({"endpoints": ["http://a:1"], "tls": {"min_version": "1.0"}}, "tls.min_version"),
    ],
)
def test_bad_field_is_named(upstream: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UpstreamsFile.model_validate({"upstreams": {"pay": upstream}})
    locations = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert any(loc.startswith(f"upstreams.pay.{field}") for loc in locations), locations

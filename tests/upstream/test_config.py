"""The upstreams file: minimal form, defaults, and one clear error per bad field."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import yaml
from pydantic import ValidationError

from gateway.upstream.config import EndpointConfig, UpstreamDefaults, UpstreamsFile
from gateway.upstream.policies import breaker_policy, bulkhead_policy, pool_policy, rates, route_policy

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

EVERY_SETTING = """
upstreams:
  payments:
    endpoints:
      - https://pay-a.internal:8443
      - {url: https://pay-b.internal:8443, weight: 2}
    load_balancer: least_request        # round_robin | weighted | random
    pool: {max_size: 50, acquire_timeout: 5.0, idle_timeout: 30.0}   # max_size defaults to POOL_SIZE
    timeouts: {connect: 2.0, attempt: 5.0}                           # defaults: CONNECTION_TIMEOUT, request timeout
    retry:
      attempts: 3                       # total, first included; default RETRY_ATTEMPTS
      backoff_base: 0.025
      backoff_max: 1.0
      on_statuses: [502, 503, 504]
      respect_retry_after: true
      max_retry_after: 5.0
      budget_ratio: 0.2                 # retries ≤ 20 % of requests over the window ...
      budget_min_per_second: 10         # ... plus this floor
      budget_window: 10
    breaker:
      window_type: count                # or time (window_size is then seconds)
      window_size: 50
      minimum_calls: 10
      failure_rate_threshold: 50
      slow_call_rate_threshold: 100
      slow_call_duration: 10
      open_duration: 10
      half_open_calls: 3
      failure_on: [connect_error, timeout, reset, 5xx]
    outlier_detection:
      consecutive_failures: 5
      base_ejection_time: 5
      max_ejection_time: 300
      max_ejection_percent: 50
    health_check: {path: /healthz, interval: 5, timeout: 2, healthy_threshold: 2, unhealthy_threshold: 3}
    limits: {max_concurrent: 500, max_queued: 100, max_request_bytes: 1048576, max_response_bytes: 10485760}
    rate_limit:
      upstream: {rate: 200, burst: 400}
      per_tenant: {rate: 20}
      wait: false
      shared: true                      # through Redis when REDIS_URL is set
    tls: {ca_file: /etc/cmn/ca.pem, client_certificate: payments-client, min_version: "1.3", verify_hostname: true}
  echo:
    endpoints: [http://127.0.0.1:8080]
"""


def test_every_setting_of_the_documented_example_is_accepted_and_resolved() -> None:
    config = UpstreamsFile.model_validate(yaml.safe_load(EVERY_SETTING)).upstreams["payments"]
    defaults = UpstreamDefaults()
    assert [e.weight for e in config.endpoints] == [1, 2]
    assert pool_policy(config, defaults).max_size == 50
    route = route_policy(config, defaults)
    assert (route.connect_timeout, route.attempt_timeout, route.max_request_bytes) == (2.0, 5.0, 1048576)
    assert route.retry.on_statuses == frozenset({502, 503, 504})
    breaker = breaker_policy(config)
    assert breaker is not None and breaker.failure_on == frozenset({"connect_error", "timeout", "reset", "5xx"})
    assert bulkhead_policy(config) is not None
    upstream_rate, tenant_rate = rates(config)
    assert upstream_rate is not None and (upstream_rate.rate, upstream_rate.burst) == (200, 400)
    assert tenant_rate is not None and tenant_rate.burst == 20  # burst defaults to the rate
    assert config.tls is not None and config.tls.client_certificate == "payments-client"


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


def test_the_readmes_every_setting_block_loads() -> None:
    """The README promises its block lists every per-upstream setting in a form the gateway accepts."""
    import re
    from pathlib import Path

    import yaml

    from gateway.app import load_config
    from gateway.settings import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    marker = readme.index("Every per-upstream setting")
    block = re.search(r"```yaml\n(.*?)```", readme[marker:], re.S)
    assert block is not None
    config = load_config(Settings.model_validate({}), yaml.safe_load(block.group(1)))
    payments = config.upstreams.upstreams["payments"]
    assert payments.access is not None and payments.auth is not None
    documented = set(yaml.safe_load(block.group(1))["upstreams"]["payments"])
    assert documented == set(type(payments).model_fields), "the README's block misses a setting"


NOT_DEFAULT = {
    "endpoints": ["http://a:1"],
    "pool": {"max_size": 3, "acquire_timeout": 1.5, "idle_timeout": 7.0},
    "retry": {
        "attempts": 4, "backoff_base": 0.5, "backoff_max": 2.5, "on_statuses": [500], "on_connect_error": False,
        "on_timeout": False, "respect_retry_after": False, "max_retry_after": 1.0,
        "budget_ratio": 0.5, "budget_min_per_second": 3.0, "budget_window": 4.0,
    },
    "breaker": {
        "window_type": "time", "window_size": 9, "minimum_calls": 4, "failure_rate_threshold": 25.0,
        "slow_call_rate_threshold": 75.0, "slow_call_duration": 2.0, "open_duration": 3.0, "half_open_calls": 2,
        "failure_on": ["5xx"],
    },
    "outlier_detection": {
        "consecutive_failures": 2, "base_ejection_time": 1.0, "max_ejection_time": 9.0, "max_ejection_percent": 30.0
    },
    "health_check": {
        "path": "/h", "interval": 1.0, "timeout": 0.5, "healthy_threshold": 4, "unhealthy_threshold": 5,
        "expected_statuses": [204],
    },
    "limits": {"max_concurrent": 8, "max_queued": 6},
}  # fmt: skip


def test_every_policy_field_comes_from_the_upstreams_file_not_a_dataclass_default() -> None:
    """Each config value set away from its default reaches the component's policy under the same name."""
    from dataclasses import asdict, fields

    from gateway.upstream.policies import budget_policy, health_policy, outlier_policy, retry_policy

    config = UpstreamsFile.model_validate({"upstreams": {"pay": NOT_DEFAULT}}).upstreams["pay"]
    defaults = UpstreamDefaults()
    resolved: dict[str, DataclassInstance | None] = {
        "pool": pool_policy(config, defaults),
        "retry": retry_policy(config, defaults),
        "breaker": breaker_policy(config),
        "outlier_detection": outlier_policy(config),
        "health_check": health_policy(config),
        "limits": bulkhead_policy(config),
    }
    for section, policy in resolved.items():
        assert policy is not None
        given = NOT_DEFAULT[section]
        assert isinstance(given, dict)
        for f in fields(policy):
            value = asdict(policy)[f.name]
            expected = given[f.name]
            assert value == (frozenset(expected) if isinstance(value, frozenset) else expected), (section, f.name)
    budget = budget_policy(config)
    assert (budget.ratio, budget.min_per_second, budget.window) == (0.5, 3.0, 4.0)


def test_a_policy_field_without_a_config_field_is_an_error_not_a_silent_default() -> None:
    from dataclasses import dataclass

    from gateway.upstream.config import PoolConfig
    from gateway.upstream.policies import derive

    @dataclass(frozen=True)
    class Grown:
        max_size: int = 1
        warm_up: float = 0.0  # a policy field the upstreams file does not offer

    with pytest.raises(TypeError, match=r"Grown\.warm_up has no PoolConfig\.warm_up"):
        derive(Grown, PoolConfig(max_size=2))
    assert derive(Grown, PoolConfig(max_size=2), warm_up=1.0) == Grown(2, 1.0)


def test_components_take_their_literals_from_kinds_not_the_pydantic_edge() -> None:
    """breaker, outlier, balancer, outcome and cluster sit below config.py: they may not import it."""
    import ast
    from pathlib import Path

    from gateway.upstream import config, kinds
    from gateway.upstream.outcome import AttemptTimeoutError, ConnectFailedError, ConnectionDroppedError

    package = Path(kinds.__file__).parent
    for name in ("breaker", "outlier", "balancer", "outcome", "cluster"):
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "gateway.upstream.config" not in imported, name
        assert "gateway.upstream.kinds" in imported, name
    assert config.BreakerConfig().failure_on == kinds.FAILURE_KINDS
    assert {ConnectFailedError.kind, ConnectionDroppedError.kind, AttemptTimeoutError.kind} < kinds.FAILURE_KINDS

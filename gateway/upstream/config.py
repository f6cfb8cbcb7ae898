"""The upstreams file: pydantic at the edge, resolved into the frozen policies each component takes.

Minimal form::

    upstreams:
      payments:
        endpoints: [http://10.0.0.5:8080, http://10.0.0.6:8080]

Everything else has a default; settings left unset here fall back to ``UpstreamDefaults``
(filled by ``app.py`` from POOL_SIZE, CONNECTION_TIMEOUT, RETRY_ATTEMPTS).

An endpoint URL never carries credentials (``user:password@``): they would end up in telemetry,
metric labels and error messages. The upstream's ``auth:`` names where the credential lives instead::

    auth: {bearer: {env: PAYMENTS_TOKEN}}
    auth: {basic: {username: cmn, password: {file: /run/secrets/payments}}}
    auth: {header: {name: X-Api-Key, value: {keyvault: payments-api-key}}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator
from pydantic.config import JsonDict

from gateway.access.config import AccessConfig
from gateway.secrets import SecretRef
from gateway.tls import DEFAULT_TLS, TlsVersion
from gateway.upstream.hedge import MAX_HEDGES
from gateway.upstream.kinds import FAILURE_KINDS, FailureKind, LoadBalancer, WindowType

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamDefaults:
    """Process-wide defaults from the environment; per-upstream settings override them."""

    pool_size: int = 10  # POOL_SIZE, the per-endpoint maximum
    connect_timeout: float = 30.0  # CONNECTION_TIMEOUT
    retry_attempts: int = 3  # RETRY_ATTEMPTS, total attempts including the first
    request_timeout: float = 30.0
    max_request_bytes: int = 10 * MIB
    max_response_bytes: int = 10 * MIB


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CREDENTIALS_IN_URL = (
    "endpoint URLs may not carry credentials; set the upstream's auth: instead, "
    "e.g. auth: {bearer: {env: VAR}} or auth: {basic: {username: u, password: {env: VAR}}}"
)


class EndpointConfig(_Model):
    url: str
    weight: int = Field(default=1, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        # Checked on the raw text before any parser sees it, and the message never quotes the URL.
        if "@" in urlsplit(v).netloc:
            raise ValueError(CREDENTIALS_IN_URL)
        parsed = HttpUrl(v)
        if parsed.username or parsed.password:
            raise ValueError(CREDENTIALS_IN_URL)
        if parsed.scheme not in ("http", "https"):
            raise ValueError("endpoint url must be http:// or https://")
        if parsed.query or parsed.fragment:
            raise ValueError("endpoint url must not carry a query or fragment")
        return v.rstrip("/")


class PoolConfig(_Model):
    max_size: int | None = Field(default=None, ge=1, description="Per endpoint; default POOL_SIZE.")
    acquire_timeout: float = Field(default=5.0, gt=0, description="Wait for a free slot, then pool_exhausted.")
    idle_timeout: float = Field(default=30.0, gt=0, description="Idle keep-alive connections close after this.")


class TimeoutsConfig(_Model):
    connect: float | None = Field(default=None, gt=0, description="Default CONNECTION_TIMEOUT.")
    attempt: float | None = Field(default=None, gt=0, description="Per attempt; default request_timeout.")


class BreakerConfig(_Model):
    enabled: bool = True
    window_type: WindowType = "count"
    window_size: int = Field(default=50, ge=1, description="Calls (count) or seconds (time).")
    minimum_calls: int = Field(default=10, ge=1)
    failure_rate_threshold: float = Field(default=50.0, gt=0, le=100, description="Percent.")
    slow_call_rate_threshold: float = Field(default=100.0, gt=0, le=100, description="Percent.")
    slow_call_duration: float = Field(default=10.0, gt=0, description="Seconds.")
    open_duration: float = Field(default=10.0, gt=0, description="Seconds before half-open.")
    half_open_calls: int = Field(default=3, ge=1, description="Probe calls allowed in half-open.")
    failure_on: frozenset[FailureKind] = FAILURE_KINDS


class RetryConfig(_Model):
    attempts: int | None = Field(default=None, ge=1, le=20, description="Total attempts; default RETRY_ATTEMPTS.")
    backoff_base: float = Field(default=0.025, gt=0)
    backoff_max: float = Field(default=1.0, gt=0)
    on_statuses: frozenset[int] = frozenset({502, 503, 504})
    on_connect_error: bool = True
    on_timeout: bool = True
    respect_retry_after: bool = True
    max_retry_after: float = Field(default=5.0, ge=0)
    budget_ratio: float = Field(default=0.2, ge=0, le=1, description="Retries per request, over the window.")
    budget_min_per_second: float = Field(default=10.0, ge=0)
    budget_window: float = Field(default=10.0, gt=0)


class HedgeConfig(_Model):
    """``hedge: {after_ms: 50, max: 1}``: a second attempt on another endpoint when the first is slow."""

    after_ms: Annotated[int, Field(gt=0, le=3_600_000, strict=True)] | Literal["p95"] = Field(
        description="Milliseconds, or p95: the upstream's recent p95 attempt latency, measured by the gateway."
    )
    max: int = Field(default=1, ge=1, le=MAX_HEDGES, description="Hedges per request.")


class OutlierConfig(_Model):
    enabled: bool = True
    consecutive_failures: int = Field(default=5, ge=1)
    base_ejection_time: float = Field(default=5.0, gt=0)
    max_ejection_time: float = Field(default=300.0, gt=0)
    max_ejection_percent: float = Field(default=50.0, ge=0, le=100)


class HealthCheckConfig(_Model):
    path: str = Field(pattern=r"^/")
    interval: float = Field(default=5.0, gt=0)
    timeout: float = Field(default=2.0, gt=0)
    healthy_threshold: int = Field(default=2, ge=1)
    unhealthy_threshold: int = Field(default=3, ge=1)
    expected_statuses: frozenset[int] = frozenset(range(200, 300))


class LimitsConfig(_Model):
    max_concurrent: int | None = Field(default=None, ge=1, description="Bulkhead; unset = no limit.")
    max_queued: int = Field(default=0, ge=0, description="Waiting beyond max_concurrent; overflow fails fast.")
    max_request_bytes: int | None = Field(default=None, ge=0)
    max_response_bytes: int | None = Field(default=None, ge=0)


class RateConfig(_Model):
    rate: float = Field(gt=0, description="Tokens per second.")
    burst: float | None = Field(default=None, gt=0, description="Bucket size; default max(rate, 1).")


class RateLimitConfig(_Model):
    upstream: RateConfig | None = None
    per_tenant: RateConfig | None = None
    wait: bool = Field(default=False, description="Wait for a token (within the deadline) instead of failing.")
    shared: bool = Field(default=False, description="Share the buckets across replicas through Redis.")


class TlsConfig(_Model):
    """The ``tls:`` block; ``policies.tls_by_upstream`` turns it into ``gateway.tls.TlsSettings``."""

    ca_file: str | None = DEFAULT_TLS.ca_file
    client_certificate: str | None = Field(
        default=DEFAULT_TLS.client_certificate, description="Name known to the certificate manager."
    )
    min_version: TlsVersion = DEFAULT_TLS.min_version
    verify_hostname: bool = DEFAULT_TLS.verify_hostname


_TOKEN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # nosec B105  # RFC 9110 token (a header name), not a credential
# Headers the HTTP client frames the message with: a credential may not take their place.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive", "te", "upgrade"}
)


class BasicAuthConfig(_Model):
    username: str = Field(min_length=1, max_length=256, pattern=r"^[^:\x00-\x1f\x7f]+$")
    password: SecretRef


class HeaderAuthConfig(_Model):
    name: str = Field(min_length=1, max_length=128, pattern=_TOKEN)
    value: SecretRef

    @field_validator("name")
    @classmethod
    def _not_framing(cls, v: str) -> str:
        if v.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {v} frames the HTTP message and cannot carry a credential")
        return v


class AuthConfig(_Model):
    """Exactly one of ``bearer``, ``basic`` or ``header``; the secret is resolved once at start-up."""

    bearer: SecretRef | None = None
    basic: BasicAuthConfig | None = None
    header: HeaderAuthConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AuthConfig:
        given = [k for k in ("bearer", "basic", "header") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("auth is exactly one of bearer, basic or header")
        return self


class ParkConfig(_Model):
    """``park: {delays: [1, 5, 30]}``: durable retries on the bus, one tier per delay (seconds, in order)."""

    delays: list[int] = Field(min_length=1, max_length=10, description="Seconds each tier holds a request.")
    try_budget: float | None = Field(
        default=None,
        gt=0,
        description="Seconds one try of a request that may park holds a worker slot before it parks; unset: no cap.",
    )

    @field_validator("delays")
    @classmethod
    def _bounded(cls, v: list[int]) -> list[int]:
        # A tier is a queue or topic named after its delay: one per distinct value, within an hour.
        if any(d < 1 or d > 3600 for d in v):
            raise ValueError("park delays are whole seconds from 1 to 3600")
        return v


def _bare_url_schema(schema: JsonDict) -> None:
    """The JSON Schema accepts what ``_bare_urls`` does: an endpoint written as its URL alone."""
    endpoints = cast(JsonDict, cast(JsonDict, schema["properties"])["endpoints"])
    endpoints["items"] = {"anyOf": [{"type": "string", "minLength": 1}, endpoints["items"]]}


class UpstreamConfig(_Model):
    model_config = ConfigDict(json_schema_extra=_bare_url_schema)

    endpoints: list[EndpointConfig] = Field(min_length=1)
    load_balancer: LoadBalancer = "least_request"
    pool: PoolConfig = PoolConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    outlier_detection: OutlierConfig = OutlierConfig()
    health_check: HealthCheckConfig | None = None
    limits: LimitsConfig = LimitsConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    tls: TlsConfig | None = None
    access: AccessConfig | None = Field(default=None, description="Who may call; absent = every caller.")
    auth: AuthConfig | None = Field(default=None, description="The credential the gateway sends upstream.")
    hedge: HedgeConfig | None = Field(default=None, description="Hedged requests; absent = off.")
    park: ParkConfig | None = Field(default=None, description="Durable retries on the bus; absent = off.")

    @field_validator("endpoints", mode="before")
    @classmethod
    def _bare_urls(cls, v: object) -> object:
        if isinstance(v, list):
            return [{"url": item} if isinstance(item, str) else item for item in v]
        return v

    @field_validator("endpoints")
    @classmethod
    def _distinct(cls, v: list[EndpointConfig]) -> list[EndpointConfig]:
        urls = [e.url for e in v]
        if len(set(urls)) != len(urls):
            raise ValueError("endpoint urls must be distinct")
        return v


class UpstreamsFile(_Model):
    # A rejected value may be a URL with a password in it: str() of the error must not quote it.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    upstreams: dict[str, UpstreamConfig]

    def parking(self) -> list[str]:
        """The upstreams with ``park:``, by name: their parked copies are sealed with PARK_SECRET."""
        return sorted(name for name, upstream in self.upstreams.items() if upstream.park is not None)

    @field_validator("upstreams")
    @classmethod
    def _names(cls, v: dict[str, UpstreamConfig]) -> dict[str, UpstreamConfig]:
        for name in v:
            if not name or len(name) > 128:
                raise ValueError(f"upstream name {name!r} must be 1-128 characters")
        return v

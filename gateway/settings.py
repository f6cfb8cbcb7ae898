"""Configuration from the environment (and the upstreams YAML file). Read only by app.py and cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.errors import ConfigError

DEFAULT_HEARTBEAT_MS = 5000  # SHARED_HEALTH_HEARTBEAT_MS unset: the one place the shared-health heartbeat is set


class Settings(BaseSettings):
    """Every knob the gateway reads from its environment. Names are the public contract."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # Network settings (the spec's)
    pool_size: int = Field(10, gt=0, alias="POOL_SIZE", description="Per-endpoint connection maximum.")
    connection_timeout: float = Field(30.0, gt=0, alias="CONNECTION_TIMEOUT", description="Connect timeout, s.")
    retry_attempts: int = Field(
        3, ge=1, le=20, alias="RETRY_ATTEMPTS", description="Attempts per request, the first included (1: no retry)."
    )
    request_timeout: float = Field(30.0, gt=0, alias="REQUEST_TIMEOUT", description="Default total budget, s.")
    max_request_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        alias="MAX_REQUEST_BYTES",
        description="Largest request message (raw bytes, checked before parsing) and request body.",
    )
    max_response_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        alias="MAX_RESPONSE_BYTES",
        description="Largest upstream response body; a larger one is answered payload_too_large.",
    )
    max_timeout_ms: int = Field(300_000, gt=0, alias="MAX_TIMEOUT_MS", description="Cap on a request's timeout_ms.")
    max_envelope_depth: int = Field(
        32, ge=2, le=256, alias="MAX_ENVELOPE_DEPTH", description="Nesting depth a request envelope may reach."
    )
    max_envelope_nodes: int = Field(
        100_000, ge=100, alias="MAX_ENVELOPE_NODES", description="Values (maps, arrays, scalars) in one envelope."
    )

    # Security: who is calling, and where replies may go
    require_identity: bool = Field(
        False, alias="REQUIRE_IDENTITY", description="Refuse requests without a principal (unauthenticated)."
    )
    signature_max_age: float = Field(
        300.0, gt=0, alias="SIGNATURE_MAX_AGE", description="Seconds a signed envelope stays valid."
    )
    reply_queue_pattern: str = Field(
        "cmn.replies.*",
        min_length=1,
        alias="REPLY_QUEUE_PATTERN",
        description="RabbitMQ queues replies may go to, besides direct reply-to and amq.gen-* (glob).",
    )
    reply_topic_pattern: str = Field(
        "cmn.replies.*", min_length=1, alias="REPLY_TOPIC_PATTERN", description="Kafka topics replies may go to (glob)."
    )
    control_principals: str = Field(
        "",
        alias="CONTROL_PRINCIPALS",
        description="Comma-separated principals allowed to send state-changing commands on cmn.control.",
    )
    shared_health: bool = Field(
        True,
        alias="SHARED_HEALTH",
        description="Share endpoint verdicts on cmn.control; a quorum of replicas takes a dead endpoint out.",
    )
    shared_health_quorum: int | None = Field(
        None,
        ge=2,
        alias="SHARED_HEALTH_QUORUM",
        description="Replicas (this one counted) whose verdicts take an endpoint out; default a majority of live ones.",
    )
    shared_health_heartbeat_ms: int = Field(
        DEFAULT_HEARTBEAT_MS,
        ge=100,
        le=10_000,
        alias="SHARED_HEALTH_HEARTBEAT_MS",
        description="How often a replica announces its verdicts on cmn.control; 3 own heartbeats unheard: degraded.",
    )
    control_key_id: str | None = Field(
        None,
        min_length=1,
        alias="CONTROL_KEY_ID",
        description="A key of security.keys this gateway signs its cmn.control notices with (Kafka).",
    )

    # Brokers
    amqp_url: str | None = Field(
        None,
        alias="AMQP_URL",
        description="RabbitMQ to consume from (amqp:// or amqps://); unset: no RabbitMQ worker.",
        repr=False,  # it carries the AMQP password
    )
    kafka_bootstrap_servers: str | None = Field(
        None,
        alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Kafka to consume from (host:port,...); unset with AMQP_URL unset: the embedded broker.",
    )
    kafka_group_id: str = Field(
        "cmn-gateway", alias="KAFKA_GROUP_ID", description="The gateways' consumer group on the requests topic."
    )
    kafka_fetch_max_wait_ms: int = Field(
        5,
        ge=0,
        alias="KAFKA_FETCH_MAX_WAIT_MS",
        description="How long a Kafka fetch waits for records, ms (latency against fetch count).",
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        alias="KAFKA_SESSION_TIMEOUT_MS",
        description="Kafka group session; a replica silent this long loses its partitions, ms.",
    )
    max_in_flight: int = Field(512, gt=0, alias="MAX_IN_FLIGHT", description="Per worker, per broker.")
    requests_queue: str = Field(
        "cmn.requests",
        alias="CMN_REQUESTS_QUEUE",
        description="Override only to run side-by-side deployments.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, alias="KAFKA_SASL_MECHANISM", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (the SASL_* protocols)."
    )
    kafka_sasl_username: str | None = Field(None, alias="KAFKA_SASL_USERNAME", description="The SASL login.")
    kafka_sasl_password: str | None = Field(
        None, alias="KAFKA_SASL_PASSWORD", description="The SASL password (never logged).", repr=False
    )
    kafka_ssl_ca_file: Path | None = Field(None, alias="KAFKA_SSL_CA_FILE", description="CA bundle for SSL.")
    kafka_ssl_certificate: str | None = Field(
        None, alias="KAFKA_SSL_CERTIFICATE", description="Client certificate (a name under certificates:)."
    )
    embedded_broker_port: int = Field(
        9092,
        ge=0,
        le=65535,
        alias="EMBEDDED_BROKER_PORT",
        description="Port of the embedded Kafka-protocol broker (no broker configured: development only).",
    )

    # Upstreams, dedupe, shared limits
    upstreams_file: Path | None = Field(
        None,
        alias="CMN_UPSTREAMS_FILE",
        description="The upstreams YAML: the egress allowlist, certificates and signing keys.",
    )
    redis_url: str | None = Field(
        None,
        alias="REDIS_URL",
        description="Shares rate limits, idempotency results and the signature record across replicas.",
        repr=False,  # it may carry the Redis password
    )
    idempotency_ttl: float = Field(300.0, gt=0, alias="IDEMPOTENCY_TTL", description="Dedupe window, s.")
    park_secret: str | None = Field(
        None,
        alias="PARK_SECRET",
        repr=False,
        min_length=16,
        description="Seals parked copies (park:); the same on every replica. Unset: random per process.",
    )

    # Azure Key Vault
    azure_vault_url: str | None = Field(
        None, alias="AZURE_VAULT_URL", description="Azure Key Vault for certificates and secrets ({keyvault: NAME})."
    )
    azure_client_id: str | None = Field(
        None,
        alias="AZURE_CLIENT_ID",
        description="Service principal for Key Vault (else the default Azure credential chain).",
    )
    azure_client_secret: str | None = Field(
        None, alias="AZURE_CLIENT_SECRET", description="Its secret (never logged).", repr=False
    )
    azure_tenant_id: str | None = Field(None, alias="AZURE_TENANT_ID", description="Its tenant.")

    # Monitoring
    otlp_endpoint: str | None = Field(
        None, alias="OTLP_ENDPOINT", description="OpenTelemetry collector for traces; unset: no export."
    )
    otlp_protocol: Literal["http", "grpc"] = Field(
        "http", alias="OTLP_PROTOCOL", description="http (4318) or grpc (4317)."
    )
    trace_sampling_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        alias="TRACE_SAMPLING_RATIO",
        description="Share of requests traced (parent-based), 0 to 1.",
    )
    enable_metrics: bool = Field(
        False,
        alias="ENABLE_METRICS",
        description="Serve /metrics, /healthz, /readyz and /admin/upstreams on METRICS_PORT.",
    )
    metrics_port: int = Field(
        9090, ge=0, le=65535, alias="METRICS_PORT", description="Port of the metrics and probe server."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        alias="LOG_LEVEL",
        description="DEBUG, INFO, WARNING or ERROR (any case); INFO logs one line per request.",
    )
    log_format: Literal["json", "console", "auto"] = Field(
        "auto", alias="LOG_FORMAT", description="json, console, or auto (console on a terminal, else JSON)."
    )
    instance: str | None = Field(
        None, alias="CMN_INSTANCE", description="This replica's name in status, telemetry and logs (default: host-pid)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value  # LOG_LEVEL=debug works too

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            scheme = value.partition("://")[0].lower() if "://" in value else ""
            if scheme not in ("amqp", "amqps"):
                # Never quote the URL: it may carry the broker password.
                raise ValueError(
                    f"must start with amqp:// or amqps:// (got {scheme + '://' if scheme else 'no scheme'})"
                )
        return value or None

    @property
    def embedded(self) -> bool:
        """No broker configured: `cmn serve` starts the embedded Kafka-protocol broker."""
        return not self.amqp_url and not self.kafka_bootstrap_servers


KNOWN_ENV_VARS: frozenset[str] = frozenset(
    field.alias for field in Settings.model_fields.values() if field.alias is not None
)
"""Every variable ``Settings`` reads (its aliases): deploy checks that manifests set nothing else."""


def environment_table() -> str:
    """Every variable with its default and meaning, as the Markdown table the README carries (between
    its ``env-table`` markers; tests/test_settings.py checks they agree). ``cmn config env`` prints it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in Settings.model_fields.values():
        rows.append(f"| `{field.alias}` | {_default_text(field.default)} | {field.description} |")
    return "\n".join(rows) + "\n"


def _default_text(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "empty"
    return f"`{value}`"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a bad value stops start-up with one message naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_first_problem(exc, "environment")) from exc


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"CMN_UPSTREAMS_FILE: cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"CMN_UPSTREAMS_FILE: {path} is not valid YAML{at}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"CMN_UPSTREAMS_FILE: {path} must hold a mapping with an 'upstreams' key")
    return data


def _first_problem(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or where
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"invalid configuration: {field}: {message}{more}"


def describe_validation_error(exc: ValidationError, where: str) -> str:
    return _first_problem(exc, where)


def principals(text: str) -> frozenset[str]:
    """A comma-separated list of principals (CONTROL_PRINCIPALS) as a set; blanks ignored."""
    return frozenset(name.strip() for name in text.split(",") if name.strip())

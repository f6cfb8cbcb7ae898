"""What the audit reports: rules (a stable id, a default severity, a title and a fix) and findings.

Ids are stable: a rule keeps its id for good, so a code-scanning UI can track a finding over runs
and a suppression can name it. A finding may carry a severity other than its rule's default when
the same mistake is worse in one place than another (guest credentials on a remote broker).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Severity(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: Severity
    title: str
    fix: str


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding is: a key in the upstreams file (with its line), or an environment variable."""

    file: str | None = None
    key: str | None = None
    line: int | None = None
    env: str | None = None

    def __str__(self) -> str:
        if self.env is not None:
            return f"env {self.env}"
        where = f"{self.file}:{self.line}" if self.file and self.line else self.file or ""
        return f"{where}: {self.key}" if self.key else where


@dataclass(frozen=True, slots=True)
class Finding:
    rule: Rule
    message: str
    location: Location
    severity: Severity

    @property
    def id(self) -> str:
        return self.rule.id

    @property
    def title(self) -> str:
        return self.rule.title

    @property
    def fix(self) -> str:
        return self.rule.fix


def finding(rule: Rule, message: str, location: Location, severity: Severity | None = None) -> Finding:
    return Finding(rule, message, location, rule.severity if severity is None else severity)


def _rule(id: str, severity: Severity, title: str, fix: str) -> Rule:
    return Rule(id, severity, title, fix)


H, M, L = Severity.HIGH, Severity.MEDIUM, Severity.LOW

# Who may call
OPEN_UPSTREAM = _rule(
    "CMN-AUTH-001", M, "upstream has no access policy", "add `access: {allow: [principal, ...]}` to the upstream"
)
IDENTITY_OPTIONAL = _rule(
    "CMN-AUTH-002",
    M,
    "REQUIRE_IDENTITY is off",
    "set REQUIRE_IDENTITY=true once every caller sends a RabbitMQ user_id or a signed envelope",
)
CONTROL_NOBODY = _rule(
    "CMN-CTL-001",
    L,
    "CONTROL_PRINCIPALS is empty",
    "list the operators' principals in CONTROL_PRINCIPALS; until then no one may change state over cmn.control",
)
CONTROL_UNIDENTIFIED = _rule(
    "CMN-CTL-002",
    M,
    "identity is not configured for control commands",
    "add signing keys (security.keys) or set REQUIRE_IDENTITY=true; `cmn status` answers anonymous callers",
)
PARK_UNSEALED = _rule(
    "CMN-PARK-001",
    M,
    "upstreams park but PARK_SECRET is unset",
    "set one PARK_SECRET (16+ characters, from a secret store) on every replica; else each seals with its own",
)
# Transport security to upstreams
TLS_12 = _rule("CMN-TLS-001", M, "TLS 1.2 allowed", 'set `min_version: "1.3"` (the default) unless the peer lacks 1.3')
NO_HOSTNAME_CHECK = _rule(
    "CMN-TLS-002",
    H,
    "hostname verification off",
    "remove `verify_hostname: false`; give the peer a certificate naming it",
)
PLAIN_HTTP = _rule(
    "CMN-TLS-003", H, "plaintext http:// to a remote host", "use https:// (and `tls: {ca_file: ...}` for a private CA)"
)
# Secrets
LITERAL_SECRET = _rule(
    "CMN-SECRET-001",
    H,
    "secret written in the upstreams file",
    "reference it instead: {env: VAR}, {file: /run/secrets/NAME} or {keyvault: NAME}",
)
URL_CREDENTIALS = _rule(
    "CMN-SECRET-002",
    H,
    "credentials in a URL",
    "move them to the upstream's `auth:` (e.g. `auth: {basic: {username: u, password: {env: VAR}}}`)",
)
# Resilience that doubles as abuse protection
RETRY_UNBUDGETED = _rule(
    "CMN-RETRY-001",
    M,
    "retries not held back by the retry budget",
    "keep `retry.budget_ratio` at 0.2 (the default) or below, and `budget_min_per_second` small",
)
SHARED_WITHOUT_REDIS = _rule(
    "CMN-LIMIT-001", M, "shared rate limit without REDIS_URL", "set REDIS_URL, or drop `shared: true`"
)
NO_TENANT_LIMIT = _rule(
    "CMN-LIMIT-002",
    L,
    "no per-tenant rate limit",
    "add `rate_limit: {per_tenant: {rate: N}}` so one caller cannot use the whole upstream",
)
REQUEST_TOO_LARGE = _rule(
    "CMN-LIMIT-003",
    H,
    "MAX_REQUEST_BYTES too large for the memory limit",
    "lower MAX_REQUEST_BYTES (or MAX_IN_FLIGHT), or raise the pod's memory limit",
)
DEBUG_LOGS = _rule("CMN-LOG-001", L, "LOG_LEVEL=DEBUG", "use LOG_LEVEL=INFO in production")
# Brokers and Redis
DEFAULT_BROKER_ACCOUNT = _rule(
    "CMN-BUS-001", H, "default broker credentials", "give the gateway its own RabbitMQ user; delete `guest`"
)
PLAINTEXT_AMQP = _rule("CMN-BUS-002", H, "plaintext AMQP to a remote broker", "use amqps:// (port 5671)")
PLAINTEXT_KAFKA = _rule(
    "CMN-BUS-003", H, "plaintext Kafka to a remote broker", "set KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL"
)
PLAINTEXT_REDIS = _rule(
    "CMN-BUS-004", H, "plaintext Redis to a remote host", "use rediss:// with a password (or an ACL user)"
)
# Certificates
CERT_EXPIRING = _rule(
    "CMN-CERT-001",
    M,
    "certificate expires within renew_before",
    "upload a renewed certificate to its source (the manager picks it up on its next poll)",
)
CERT_UNUSABLE = _rule(
    "CMN-CERT-002", H, "certificate cannot be loaded or is invalid", "fix the certificate source (`cmn certs list`)"
)
DEV_CERT = _rule(
    "CMN-CERT-003",
    M,
    "development CA certificate configured",
    "use a `file` or `keyvault` certificate outside development",
)
# Live checks (--live)
OLD_PROTOCOL = _rule(
    "CMN-LIVE-001", H, "endpoint accepts TLS below 1.2", "disable SSL 3, TLS 1.0 and 1.1 on the server"
)
TLS12_BESIDE_13 = _rule(
    "CMN-LIVE-002", L, "endpoint accepts TLS 1.2 as well as 1.3", "offer TLS 1.3 only when every client has it"
)
NO_TLS13 = _rule("CMN-LIVE-003", M, "endpoint lacks TLS 1.3", "enable TLS 1.3 on the server")
UNTRUSTED_CHAIN = _rule(
    "CMN-LIVE-004",
    H,
    "endpoint certificate chain not trusted",
    "serve the full chain, or point `tls.ca_file` at the CA that issued it",
)
NAME_MISMATCH = _rule(
    "CMN-LIVE-005",
    H,
    "endpoint certificate does not name the host",
    "issue the server a certificate whose SAN names it",
)
ENDPOINT_CERT_EXPIRY = _rule(
    "CMN-LIVE-006", H, "endpoint certificate expired or expiring", "renew the server's certificate"
)
SCAN_FAILED = _rule(
    "CMN-LIVE-007", M, "endpoint could not be scanned", "check that the endpoint is reachable and speaks TLS"
)
GUEST_ACCEPTED = _rule(
    "CMN-LIVE-008", H, "broker accepts guest/guest", "delete the guest user (`rabbitmqctl delete_user guest`)"
)

RULES: tuple[Rule, ...] = (
    OPEN_UPSTREAM,
    IDENTITY_OPTIONAL,
    TLS_12,
    NO_HOSTNAME_CHECK,
    PLAIN_HTTP,
    LITERAL_SECRET,
    URL_CREDENTIALS,
    RETRY_UNBUDGETED,
    SHARED_WITHOUT_REDIS,
    NO_TENANT_LIMIT,
    REQUEST_TOO_LARGE,
    DEBUG_LOGS,
    DEFAULT_BROKER_ACCOUNT,
    PLAINTEXT_AMQP,
    PLAINTEXT_KAFKA,
    PLAINTEXT_REDIS,
    CERT_EXPIRING,
    CERT_UNUSABLE,
    DEV_CERT,
    OLD_PROTOCOL,
    TLS12_BESIDE_13,
    NO_TLS13,
    UNTRUSTED_CHAIN,
    NAME_MISMATCH,
    ENDPOINT_CERT_EXPIRY,
    SCAN_FAILED,
    GUEST_ACCEPTED,
)

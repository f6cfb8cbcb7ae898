"""How every Kafka client of ours authenticates and encrypts: one frozen value, one function to aiokafka.

    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "cmn", password, ssl_context=context)
    AIOKafkaProducer(bootstrap_servers=..., **security.client_kwargs())

``KafkaOptions.client_kwargs`` (records.py) merges it into every producer, consumer and admin
client the transport and the requester create. Combinations are checked when the value is made, so
a gateway with half a configuration stops at start-up with a ``ConfigError`` naming the settings;
no message ever carries the password.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from aiokafka.errors import KafkaError

from gateway.errors import ConfigError
from gateway.tls import client_context

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PROTOCOLS: tuple[SecurityProtocol, ...] = SecurityProtocol.__args__  # type: ignore[attr-defined]  # Literal members
MECHANISMS: tuple[SaslMechanism, ...] = SaslMechanism.__args__  # type: ignore[attr-defined]  # Literal members


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Security protocol, SASL mechanism and credentials, TLS context. PLAINTEXT by default.

    TLS protocols without a context trust the system store, with the defaults of every other TLS
    connection (``gateway.tls.client_context()``: TLS 1.3 minimum, certificate and name verified).
    """

    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"Kafka security protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.sasl:
            self._check_sasl()
        elif self.mechanism is not None or self.username is not None or self.password is not None:
            raise ConfigError(
                f"Kafka SASL mechanism/username/password are set but security protocol {self.protocol} "
                "does not authenticate with them: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        if self.tls and self.ssl_context is None:
            object.__setattr__(self, "ssl_context", client_context())
        elif not self.tls and self.ssl_context is not None:
            raise ConfigError(
                f"a TLS context is given but Kafka security protocol {self.protocol} does not use TLS: "
                "use SSL or SASL_SSL"
            )

    def _check_sasl(self) -> None:
        missing = [
            what
            for what, value in (("mechanism", self.mechanism), ("username", self.username), ("password", self.password))
            if not value
        ]
        if missing:
            raise ConfigError(f"Kafka security protocol {self.protocol} needs a SASL {', '.join(missing)}")
        if self.mechanism not in MECHANISMS:
            raise ConfigError(f"Kafka SASL mechanism {self.mechanism!r} is not one of {', '.join(MECHANISMS)}")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def with_ssl_context(self, context: ssl.SSLContext) -> KafkaSecurity:
        return replace(self, ssl_context=context)

    def client_kwargs(self) -> dict[str, Any]:
        """The security keyword arguments of aiokafka's producer, consumer and admin client."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol, "ssl_context": self.ssl_context}
        if self.sasl:
            kwargs.update(
                sasl_mechanism=self.mechanism, sasl_plain_username=self.username, sasl_plain_password=self.password
            )
        return kwargs

    def describe(self) -> str:
        """For logs and errors: protocol, mechanism and user, never the password."""
        if not self.sasl:
            return self.protocol
        return f"{self.protocol} {self.mechanism} user {self.username!r}"


PLAINTEXT = KafkaSecurity()


class KafkaSecuritySettings(Protocol):
    """The KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* values of gateway.settings.Settings."""

    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str | None: ...
    @property
    def kafka_sasl_username(self) -> str | None: ...
    @property
    def kafka_sasl_password(self) -> str | None: ...
    @property
    def kafka_ssl_ca_file(self) -> Path | None: ...
    @property
    def kafka_ssl_certificate(self) -> str | None: ...
    @property
    def embedded(self) -> bool: ...


def security_from_settings(settings: KafkaSecuritySettings) -> KafkaSecurity:
    """Checked settings → ``KafkaSecurity`` (its TLS context, if any, is added by the caller with
    ``with_ssl_context``: the CA file and client certificate are the certificate layer's business)."""
    protocol = settings.kafka_security_protocol
    if settings.embedded and protocol != "PLAINTEXT":
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_BOOTSTRAP_SERVERS: the embedded broker is PLAINTEXT only"
        )
    if protocol not in ("SSL", "SASL_SSL"):
        tls_only = [
            name
            for name, value in (
                ("KAFKA_SSL_CA_FILE", settings.kafka_ssl_ca_file),
                ("KAFKA_SSL_CERTIFICATE", settings.kafka_ssl_certificate),
            )
            if value
        ]
        if tls_only:
            raise ConfigError(f"{' and '.join(tls_only)} need KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, not {protocol}")
    try:
        security = KafkaSecurity(
            protocol,  # type: ignore[arg-type]  # checked in __post_init__
            settings.kafka_sasl_mechanism,  # type: ignore[arg-type]  # checked in __post_init__
            settings.kafka_sasl_username,
            settings.kafka_sasl_password,
        )
    except ConfigError as exc:
        raise ConfigError(f"{exc.message} (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*)") from None
    return security


# aiokafka reports a refused SASL login in several shapes: its own errors when the broker answers
# with an error code, and a bare KeyError (aiokafka 0.14) when a SCRAM server-final message carries
# ``e=unknown-user`` or ``e=invalid-proof`` instead of the ``v=`` signature it expects.
START_ERRORS = (KafkaError, KeyError, ValueError)


def login_refused(security: KafkaSecurity, exc: BaseException) -> bool:
    """Whether a client that failed to start was refused its SASL login (as far as aiokafka tells)."""
    if not security.sasl:
        return False
    name = type(exc).__name__
    return not isinstance(exc, KafkaError) or "Sasl" in name or "Authentication" in name

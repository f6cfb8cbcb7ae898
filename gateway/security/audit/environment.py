"""Static checks of the environment: identity, logging, brokers, Redis and memory.

Rules chosen here (and in the README's Security section):

- REQUIRE_IDENTITY off (CMN-AUTH-002) is high while any upstream has no ``access`` (a caller
  with no identity at all reaches it), medium when every upstream has an allow list (those lists
  already refuse callers without a principal, but the tenant of such a request is ``anonymous``).
- ``guest`` in AMQP_URL, or an AMQP_URL without a user (the client then logs in as guest/guest), is
  CMN-BUS-001: high on a remote broker, medium on loopback, where RabbitMQ's default
  ``loopback_users`` lets guest in from the same host only (a development set-up).
- Plaintext ``amqp://``, Kafka PLAINTEXT/SASL_PLAINTEXT and ``redis://`` to a host that is not
  loopback are high; ``redis://`` that does carry a password is medium (the password and the cached
  replies still cross the network in the clear).
- Memory (CMN-LIMIT-003): decoding a request may take up to ``DECODE_FACTOR`` (3) times its size
  (issue 9's bound on the hardened decoder), on top of a ``BASELINE`` of 128 MiB (an idle gateway
  measured 98 MB RSS). High when one maximum-size request does not fit beside the baseline; medium
  when ``MAX_IN_FLIGHT`` of them per broker (the prefetch lets that many arrive at once) do not.
- Parking without PARK_SECRET (CMN-PARK-001) is medium: each replica seals parked copies with its own
  random secret, so a copy that comes back to another replica loses its sealed caller and deadline.
- The control channel: an empty CONTROL_PRINCIPALS (CMN-CTL-001) is low (nobody may change state,
  the safe default, but `cmn breaker` and `cmn dlq replay` will be refused); no identity at all (no
  signing keys and REQUIRE_IDENTITY off, CMN-CTL-002) is medium.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from gateway.security.audit import findings as r
from gateway.security.audit.context import MIB, AuditContext, is_loopback
from gateway.security.audit.findings import Finding, Location, Severity, finding
from gateway.settings import principals

DECODE_FACTOR = 3
BASELINE = 128 * MIB


def environment_findings(ctx: AuditContext) -> Iterator[Finding]:
    yield from _identity(ctx)
    yield from _control(ctx)
    yield from _parking(ctx)
    if ctx.settings.log_level == "DEBUG":
        yield finding(r.DEBUG_LOGS, "debug logs carry request details", Location(env="LOG_LEVEL"))
    yield from _amqp(ctx.settings.amqp_url)
    yield from _kafka(ctx)
    yield from _redis(ctx.settings.redis_url)
    yield from _memory(ctx)


def _identity(ctx: AuditContext) -> Iterator[Finding]:
    if ctx.settings.require_identity:
        return
    upstreams = ctx.config.upstreams.upstreams
    open_ones = sorted(name for name, upstream in upstreams.items() if upstream.access is None)
    if open_ones:
        message = f"callers without any identity reach {', '.join(open_ones)}"
        yield finding(r.IDENTITY_OPTIONAL, message, Location(env="REQUIRE_IDENTITY"), Severity.HIGH)
    else:
        message = "requests without a principal are admitted (as tenant anonymous) and refused only by allow lists"
        yield finding(r.IDENTITY_OPTIONAL, message, Location(env="REQUIRE_IDENTITY"))


def _control(ctx: AuditContext) -> Iterator[Finding]:
    """The control channel (cmn.control): who may change state, and whether callers are identified."""
    if not principals(ctx.settings.control_principals):
        message = "no principal may send state-changing control commands (breaker, dlq replay)"
        yield finding(r.CONTROL_NOBODY, message, Location(env="CONTROL_PRINCIPALS"))
    if not ctx.config.security.keys and not ctx.settings.require_identity:
        message = "no signing keys and REQUIRE_IDENTITY off: control commands arrive from anonymous callers"
        yield finding(r.CONTROL_UNIDENTIFIED, message, Location(env="REQUIRE_IDENTITY"))


def _parking(ctx: AuditContext) -> Iterator[Finding]:
    """Parked copies are sealed with PARK_SECRET; unset, each process draws its own, so a copy coming back
    to another replica is treated as a fresh publish (a signed one is then refused as a replay)."""
    parking = ctx.config.upstreams.parking()
    if parking and ctx.settings.park_secret is None:
        message = f"{', '.join(parking)} park requests, and no PARK_SECRET is shared by the replicas"
        yield finding(r.PARK_UNSEALED, message, Location(env="PARK_SECRET"))


def _amqp(url: str | None) -> Iterator[Finding]:
    if not url:
        return
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    remote = not is_loopback(host)
    user = parts.username or "guest"
    if "guest" in (user, parts.password):
        yield finding(
            r.DEFAULT_BROKER_ACCOUNT,
            f"AMQP_URL logs in to {host} with RabbitMQ's default guest account",
            Location(env="AMQP_URL"),
            Severity.HIGH if remote else Severity.MEDIUM,
        )
    if parts.scheme == "amqp" and remote:
        yield finding(
            r.PLAINTEXT_AMQP,
            f"credentials and messages cross the network to {host} in the clear",
            Location(env="AMQP_URL"),
        )


def _kafka(ctx: AuditContext) -> Iterator[Finding]:
    settings = ctx.settings
    servers = [s.strip() for s in (settings.kafka_bootstrap_servers or "").split(",") if s.strip()]
    remote = sorted({host for host in (_host(server) for server in servers) if not is_loopback(host)})
    if remote and settings.kafka_security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        what = "messages and SASL credentials" if settings.kafka_security_protocol == "SASL_PLAINTEXT" else "messages"
        yield finding(
            r.PLAINTEXT_KAFKA,
            f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}: {what} cross the network to "
            f"{', '.join(remote)} in the clear",
            Location(env="KAFKA_SECURITY_PROTOCOL"),
        )


def _host(server: str) -> str:
    return urlsplit(f"//{server}").hostname or server


def _redis(url: str | None) -> Iterator[Finding]:
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme != "redis" or is_loopback(parts.hostname):
        return
    if parts.password:
        yield finding(
            r.PLAINTEXT_REDIS,
            f"the Redis password and cached replies cross the network to {parts.hostname} in the clear",
            Location(env="REDIS_URL"),
            Severity.MEDIUM,
        )
    else:
        message = f"anyone who reaches {parts.hostname} reads cached replies and drains the shared rate limits"
        yield finding(r.PLAINTEXT_REDIS, message, Location(env="REDIS_URL"))


def _memory(ctx: AuditContext) -> Iterator[Finding]:
    settings, limit = ctx.settings, ctx.memory
    one = DECODE_FACTOR * settings.max_request_bytes
    lanes = int(bool(settings.amqp_url)) + int(bool(settings.kafka_bootstrap_servers or settings.embedded))
    in_flight = settings.max_in_flight * lanes
    room = max(limit.bytes - BASELINE, 0)
    suggested = room // (DECODE_FACTOR * in_flight)
    where = f"the {limit.bytes / MIB:.0f} MiB memory limit ({limit.source})"
    if BASELINE + one > limit.bytes:
        message = (
            f"one {settings.max_request_bytes / MIB:.1f} MiB request may take {one / MIB:.0f} MiB to decode, "
            f"beyond {where}"
        )
        yield finding(r.REQUEST_TOO_LARGE, message, Location(env="MAX_REQUEST_BYTES"))
    elif BASELINE + one * in_flight > limit.bytes:
        message = (
            f"{in_flight} in flight x {settings.max_request_bytes / MIB:.1f} MiB x {DECODE_FACTOR} = "
            f"{one * in_flight / MIB:,.0f} MiB exceeds {where}; at most {suggested:,} bytes fit"
        )
        yield finding(r.REQUEST_TOO_LARGE, message, Location(env="MAX_REQUEST_BYTES"), Severity.MEDIUM)

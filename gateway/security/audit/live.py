"""Live checks (``cmn audit --live``): a TLS scan of every ``https`` endpoint, and a guest login.

The TLS scan uses sslyze (one scan per endpoint, all at once): the protocol versions the server
accepts, its certificate chain against the upstream's ``tls.ca_file`` (else sslyze's Mozilla store,
the public CAs), whether the leaf names the host (RFC 6125, as the gateway checks it) and its
expiry. A chain failure is reported only when expiry and name are fine, so one bad certificate
gives one finding, not three.

The guest check logs in to AMQP_URL's host and vhost as guest/guest and closes at once. RabbitMQ
lets guest in only over loopback by default (``loopback_users``), so a login accepted on a remote
host is high (anyone on the network has a broker account); accepted on loopback it is medium: the
account exists and any process on that host may use it. The login itself is
``gateway.bus.rabbitmq.connection.try_login`` (a bare login, not a transport): only ``gateway.bus``
imports the broker libraries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509

from gateway.certs.validation import names_match
from gateway.security.audit import findings as r
from gateway.security.audit.certificates import certificates_config
from gateway.security.audit.context import AuditContext, is_loopback
from gateway.security.audit.findings import Finding, Location, Severity, finding

DAY = 86400.0
LOGIN_TIMEOUT = 10.0
_OLD = ("SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1")


@dataclass(frozen=True, slots=True)
class Target:
    """One https endpoint to scan and what its certificate must satisfy."""

    upstream: str
    host: str
    port: int
    ca_file: str | None
    location: Location


@dataclass(frozen=True, slots=True)
class Scan:
    """What sslyze saw, reduced to what the rules need; ``error`` set when the scan did not run."""

    target: Target
    protocols: frozenset[str] = frozenset()
    leaf: x509.Certificate | None = None
    chain_error: str | None = None
    error: str | None = None


def targets(ctx: AuditContext) -> list[Target]:
    found = []
    for name, upstream in ctx.config.upstreams.upstreams.items():
        ca_file = upstream.tls.ca_file if upstream.tls is not None else None
        for index, endpoint in enumerate(upstream.endpoints):
            parts = urlsplit(endpoint.url)
            if parts.scheme == "https" and parts.hostname:
                where = ctx.locator.at("upstreams", name, "endpoints", index)
                found.append(Target(name, parts.hostname, parts.port or 443, ca_file, where))
    return found


async def tls_findings(ctx: AuditContext) -> list[Finding]:
    scans = await asyncio.to_thread(scan_all, targets(ctx))
    renew_before = certificates_config(ctx).renew_before
    return [f for scan in scans for f in judge(scan, now=ctx.now, renew_before=renew_before)]


def scan_all(wanted: list[Target]) -> list[Scan]:
    """Blocking: sslyze runs its own threads. Imported here so a static audit does not load it."""
    from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
    from sslyze.plugins.scan_commands import ScanCommand
    from sslyze.scanner.models import ScanCommandsExtraArguments, ServerScanRequest
    from sslyze.scanner.scanner import Scanner
    from sslyze.server_setting import ServerNetworkLocation

    if not wanted:
        return []
    versions = {
        "SSL 2.0": ScanCommand.SSL_2_0_CIPHER_SUITES,
        "SSL 3.0": ScanCommand.SSL_3_0_CIPHER_SUITES,
        "TLS 1.0": ScanCommand.TLS_1_0_CIPHER_SUITES,
        "TLS 1.1": ScanCommand.TLS_1_1_CIPHER_SUITES,
        "TLS 1.2": ScanCommand.TLS_1_2_CIPHER_SUITES,
        "TLS 1.3": ScanCommand.TLS_1_3_CIPHER_SUITES,
    }
    by_id = {}
    for target in wanted:
        ca = Path(target.ca_file) if target.ca_file else None
        request = ServerScanRequest(
            ServerNetworkLocation(target.host, target.port),
            scan_commands={ScanCommand.CERTIFICATE_INFO, *versions.values()},
            scan_commands_extra_arguments=ScanCommandsExtraArguments(
                certificate_info=CertificateInfoExtraArgument(custom_ca_file=ca) if ca else None
            ),
        )
        by_id[request.uuid] = (request, target)
    scanner = Scanner()
    scanner.queue_scans([request for request, _ in by_id.values()])
    scans = {result.uuid: _reduce(by_id[result.uuid][1], result, versions) for result in scanner.get_results()}
    return [scans[request.uuid] for request, _ in by_id.values()]


def _reduce(target: Target, result: Any, versions: Mapping[str, Any]) -> Scan:
    """sslyze's result → Scan. ``result`` is a ``sslyze.ServerScanResult`` (typed Any: sslyze is loaded lazily)."""
    if result.scan_result is None:
        trace = result.connectivity_error_trace
        reason = str(trace).strip().splitlines()[-1] if trace is not None else str(result.connectivity_status)
        return Scan(target, error=f"cannot connect: {reason}")
    scan = result.scan_result
    accepted = set()
    for label, command in versions.items():
        attempt = getattr(scan, command.value)
        if attempt.result is not None and attempt.result.accepted_cipher_suites:
            accepted.add(label)
    info = scan.certificate_info
    if info.result is None or not info.result.certificate_deployments:
        return Scan(target, frozenset(accepted), error=f"no certificate information ({info.error_reason})")
    deployment = info.result.certificate_deployments[0]
    store = "Supplied CA file" if target.ca_file else "Mozilla"
    validation = next((p for p in deployment.path_validation_results if p.trust_store.name == store), None)
    chain_error = None
    if validation is None or not validation.was_validation_successful:
        chain_error = validation.validation_error if validation is not None else f"no {store} validation"
    return Scan(target, frozenset(accepted), deployment.received_certificate_chain[0], chain_error)


def judge(scan: Scan, *, now: float, renew_before: float) -> Iterator[Finding]:
    """The findings one scan supports: pure, so each rule is tested without a server."""
    target = scan.target
    endpoint = f"{target.upstream} ({target.host}:{target.port})"
    if scan.error is not None:
        yield finding(r.SCAN_FAILED, f"{endpoint}: {scan.error}", target.location)
        return
    old = [v for v in _OLD if v in scan.protocols]
    if old:
        yield finding(r.OLD_PROTOCOL, f"{endpoint} accepts {', '.join(old)}", target.location)
    if "TLS 1.3" not in scan.protocols:
        yield finding(r.NO_TLS13, f"{endpoint} offers no TLS 1.3; the gateway needs min_version 1.2", target.location)
    elif "TLS 1.2" in scan.protocols:
        yield finding(r.TLS12_BESIDE_13, f"{endpoint} accepts TLS 1.2 beside 1.3", target.location)
    if scan.leaf is None:
        return
    expired_or_due = _expiry(scan.leaf, endpoint, now, renew_before, target.location)
    if expired_or_due is not None:
        yield expired_or_due
    mismatch = not names_match(scan.leaf, target.host)
    if mismatch:
        yield finding(r.NAME_MISMATCH, f"{endpoint}: no subject alternative name covers {target.host}", target.location)
    if scan.chain_error is not None and expired_or_due is None and not mismatch:
        trust = f"ca_file {target.ca_file}" if target.ca_file else "the public CAs (Mozilla store)"
        message = f"{endpoint}: chain does not verify against {trust}: {scan.chain_error}"
        yield finding(r.UNTRUSTED_CHAIN, message, target.location)


def _expiry(leaf: x509.Certificate, endpoint: str, now: float, renew_before: float, where: Location) -> Finding | None:
    left = leaf.not_valid_after_utc.timestamp() - now
    if left <= 0:
        when = leaf.not_valid_after_utc.strftime("%Y-%m-%d")
        return finding(r.ENDPOINT_CERT_EXPIRY, f"{endpoint}: certificate expired on {when}", where)
    if left <= renew_before:
        message = f"{endpoint}: certificate expires in {left / DAY:.1f} days"
        return finding(r.ENDPOINT_CERT_EXPIRY, message, where, Severity.MEDIUM)
    return None


async def broker_findings(ctx: AuditContext) -> list[Finding]:
    """Try guest/guest against AMQP_URL's broker. Kafka has no default account to try."""
    url = ctx.settings.amqp_url
    if not url:
        return []
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"guest:guest@{host}" + (f":{parts.port}" if parts.port else "")
    guest_url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    where = Location(env="AMQP_URL")
    outcome = await try_login(guest_url)
    if outcome is True:
        remote = not is_loopback(host)
        scope = "from the network" if remote else "from this host (RabbitMQ's loopback_users)"
        message = f"{host} accepted a guest/guest login {scope}"
        return [finding(r.GUEST_ACCEPTED, message, where, Severity.HIGH if remote else Severity.MEDIUM)]
    if isinstance(outcome, str):
        return [finding(r.SCAN_FAILED, f"broker {host}: guest login not tried: {outcome}", where)]
    return []


async def try_login(url: str) -> bool | str:
    """True when the broker accepted the login, False when it refused it, else why it was not tried."""
    from gateway.bus.rabbitmq.connection import try_login as bare_login

    return await bare_login(url, timeout=LOGIN_TIMEOUT)

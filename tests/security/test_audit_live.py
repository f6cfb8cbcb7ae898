"""`cmn audit --live` against real peers: HTTPS servers on 127.0.0.1 scanned by sslyze, and the local
RabbitMQ for the guest login."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.tls import server_context
from gateway.security.audit.context import MIB, MemoryLimit
from gateway.security.audit.findings import Finding, Location, Severity
from gateway.security.audit.live import Scan, Target, judge
from gateway.security.audit.run import audit_context, run_audit
from gateway.settings import load_settings
from tests.fixtures.certs import StartTlsUpstream, _tls_app
from tests.fixtures.upstreams import start_app
from tests.security.audit_helpers import GOOD_ENV, write

DAY = 86400.0


async def live_audit(tmp_path: Path, document: dict[str, Any], env: dict[str, str]) -> list[Finding]:
    path = write(tmp_path, document)
    settings = load_settings(**{**GOOD_ENV, **env, "CMN_UPSTREAMS_FILE": str(path)})
    return await run_audit(audit_context(settings, MemoryLimit(512 * MIB, "--memory-limit")), live=True)


def upstream(url: str, ca_file: Path) -> dict[str, Any]:
    return {
        "endpoints": [url],
        "access": {"allow": ["billing"]},
        "rate_limit": {"per_tenant": {"rate": 10}},
        "tls": {"ca_file": str(ca_file)},
    }


async def test_tls_scan_of_real_servers(
    tmp_path: Path, dev_ca: DevCertificateAuthority, start_tls_upstream: StartTlsUpstream
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(dev_ca.ca_pem)
    good = await start_tls_upstream(min_version="1.3")
    lenient = await start_tls_upstream(sans=("other.example",))  # TLS 1.2 and 1.3, a certificate for another name
    old_only = await start_tls_upstream(max_version="1.2")
    now = time.time()
    expired_bundle = dev_ca.issue("expired", ["127.0.0.1"], now=now, not_before=now - 100 * DAY, days=30)
    runner, expired_port = await start_app(_tls_app([]), ssl_context=server_context(expired_bundle))
    stranger = DevCertificateAuthority.create(now=time.time(), common_name="Someone else's CA")
    runner2, stranger_port = await start_app(
        _tls_app([]), ssl_context=server_context(stranger.issue("s", ["127.0.0.1"], now=time.time()))
    )
    try:
        document = {
            "upstreams": {
                "good": upstream(good.url, ca_file),
                "lenient": upstream(lenient.url, ca_file),
                "old": upstream(old_only.url, ca_file),
                "expired": upstream(f"https://127.0.0.1:{expired_port}", ca_file),
                "stranger": upstream(f"https://127.0.0.1:{stranger_port}", ca_file),
            }
        }
        found = await live_audit(tmp_path, document, {"AMQP_URL": ""})
    finally:
        await runner.cleanup()
        await runner2.cleanup()
    by_upstream: dict[str, set[tuple[str, Severity]]] = {}
    for item in found:
        name = (item.location.key or "").split(".")[1]
        by_upstream.setdefault(name, set()).add((item.id, item.severity))
    assert "good" not in by_upstream, by_upstream
    assert by_upstream["lenient"] == {("CMN-LIVE-002", Severity.LOW), ("CMN-LIVE-005", Severity.HIGH)}
    assert by_upstream["old"] == {("CMN-LIVE-003", Severity.MEDIUM)}
    assert by_upstream["expired"] == {("CMN-LIVE-006", Severity.HIGH)}  # server_context: TLS 1.3 only
    assert by_upstream["stranger"] == {("CMN-LIVE-004", Severity.HIGH)}


def test_protocols_below_tls_12_are_high() -> None:
    target = Target("legacy", "legacy.example", 443, None, Location(file="u.yaml", key="upstreams.legacy"))
    found = list(judge(Scan(target, frozenset({"TLS 1.0", "TLS 1.2"})), now=time.time(), renew_before=14 * DAY))
    assert [(f.id, f.severity) for f in found] == [("CMN-LIVE-001", Severity.HIGH), ("CMN-LIVE-003", Severity.MEDIUM)]
    assert "TLS 1.0" in found[0].message


async def test_unreachable_endpoint_is_reported(tmp_path: Path, dev_ca: DevCertificateAuthority) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(dev_ca.ca_pem)
        document = {"upstreams": {"gone": upstream(f"https://127.0.0.1:{port}", ca_file)}}
        found = await live_audit(tmp_path, document, {"AMQP_URL": ""})
    assert [(f.id, f.location.key) for f in found] == [("CMN-LIVE-007", "upstreams.gone.endpoints[0]")]


async def test_guest_login_on_the_local_broker(tmp_path: Path, amqp_url: str) -> None:
    ca_file = tmp_path / "ca.pem"
    document = {"upstreams": {"local": {**upstream("http://127.0.0.1:1", ca_file), "tls": None}}}
    found = await live_audit(tmp_path, document, {"AMQP_URL": "amqp://127.0.0.1:5672/"})
    live = [f for f in found if f.id.startswith("CMN-LIVE")]
    assert [(f.id, f.severity) for f in live] == [("CMN-LIVE-008", Severity.MEDIUM)]
    assert "loopback" in live[0].message


async def test_guest_login_not_tried_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"amqp://127.0.0.1:{sock.getsockname()[1]}/"
        document = {"upstreams": {"local": {**upstream("http://127.0.0.1:1", tmp_path), "tls": None}}}
        found = await live_audit(tmp_path, document, {"AMQP_URL": url})
    assert [f.id for f in found if f.id.startswith("CMN-LIVE")] == ["CMN-LIVE-007"]


async def test_keyvault_certificates_are_read_only_when_live(tmp_path: Path) -> None:
    document = {
        "upstreams": {"local": {**upstream("http://127.0.0.1:1", tmp_path), "tls": None}},
        "certificates": {"partner": {"source": "keyvault"}},
    }
    path = write(tmp_path, document)
    settings = load_settings(**{**GOOD_ENV, "AMQP_URL": "", "CMN_UPSTREAMS_FILE": str(path)})
    ctx = audit_context(settings, MemoryLimit(512 * MIB, "--memory-limit"))
    assert "CMN-CERT-002" not in {f.id for f in await run_audit(ctx)}
    (unusable,) = [f for f in await run_audit(ctx, live=True) if f.id == "CMN-CERT-002"]
    assert unusable.location.key == "certificates.partner"
    assert "AZURE_VAULT_URL" in unusable.message

"""Each static check fires on a bad configuration, at the right place, and not on a good one."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.certs.devca import DevCertificateAuthority
from gateway.security.audit.findings import Severity
from gateway.security.audit.run import RefusedConfig
from tests.security.audit_helpers import GOOD, audit, ids

DAY = 86400.0


def good() -> dict[str, Any]:
    return copy.deepcopy(GOOD)


def payments(document: dict[str, Any]) -> dict[str, Any]:
    upstream: dict[str, Any] = document["upstreams"]["payments"]
    return upstream


async def test_a_good_configuration_has_no_findings(tmp_path: Path) -> None:
    assert await audit(tmp_path, good()) == []


def _no_access(d: dict[str, Any]) -> None:
    del payments(d)["access"]


def _tls12(d: dict[str, Any]) -> None:
    payments(d)["tls"]["min_version"] = "1.2"


def _no_hostname(d: dict[str, Any]) -> None:
    payments(d)["tls"]["verify_hostname"] = False


def _remote_http(d: dict[str, Any]) -> None:
    payments(d)["endpoints"].append("http://10.0.0.5:8080")


def _loose_budget(d: dict[str, Any]) -> None:
    payments(d)["retry"] = {"attempts": 3, "budget_ratio": 1.0}


def _shared(d: dict[str, Any]) -> None:
    payments(d)["rate_limit"]["shared"] = True


def _no_tenant_limit(d: dict[str, Any]) -> None:
    payments(d)["rate_limit"] = {"upstream": {"rate": 100}}


def _literal_password(d: dict[str, Any]) -> None:
    d["certificates"] = {"legacy": {"source": "file", "pkcs12": "/nonexistent.p12", "password": "hunter2"}}


@pytest.mark.parametrize(
    ("change", "env", "rule", "key"),
    [
        (_no_access, {}, "CMN-AUTH-001", "upstreams.payments"),
        (_tls12, {}, "CMN-TLS-001", "upstreams.payments.tls.min_version"),
        (_no_hostname, {}, "CMN-TLS-002", "upstreams.payments.tls.verify_hostname"),
        (_remote_http, {}, "CMN-TLS-003", "upstreams.payments.endpoints[2]"),
        (_loose_budget, {}, "CMN-RETRY-001", "upstreams.payments.retry"),
        (_shared, {"REDIS_URL": ""}, "CMN-LIMIT-001", "upstreams.payments.rate_limit.shared"),
        (_no_tenant_limit, {}, "CMN-LIMIT-002", "upstreams.payments.rate_limit"),
        (_literal_password, {}, "CMN-SECRET-001", "certificates.legacy.password"),
    ],
)
async def test_file_checks_fire_where_the_mistake_is(
    tmp_path: Path, change: Any, env: dict[str, str], rule: str, key: str
) -> None:
    document = good()
    change(document)
    found = [f for f in await audit(tmp_path, document, env) if f.id == rule]
    assert [f.location.key for f in found] == [key]
    line = found[0].location.line
    assert line is not None
    text = (tmp_path / "upstreams.yaml").read_text().splitlines()[line - 1]
    assert key.rsplit(".", 1)[-1].split("[")[0] in text or text.lstrip().startswith("-")


async def test_a_literal_secret_is_never_echoed(tmp_path: Path) -> None:
    document = good()
    _literal_password(document)
    for finding in await audit(tmp_path, document):
        assert "hunter2" not in finding.message


@pytest.mark.parametrize(
    ("env", "rule", "severity"),
    [
        ({"LOG_LEVEL": "DEBUG"}, "CMN-LOG-001", Severity.LOW),
        ({"AMQP_URL": "amqps://guest:guest@rabbit.example.com/"}, "CMN-BUS-001", Severity.HIGH),
        ({"AMQP_URL": "amqp://127.0.0.1:5672/"}, "CMN-BUS-001", Severity.MEDIUM),  # no user = guest
        ({"AMQP_URL": "amqp://cmn:pw@rabbit.example.com/"}, "CMN-BUS-002", Severity.HIGH),
        ({"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "CMN-BUS-003", Severity.HIGH),
        ({"REDIS_URL": "redis://redis.example.com:6379/0"}, "CMN-BUS-004", Severity.HIGH),
        ({"REDIS_URL": "redis://:pw@redis.example.com:6379/0"}, "CMN-BUS-004", Severity.MEDIUM),
        ({"MAX_REQUEST_BYTES": str(200 * 1024 * 1024)}, "CMN-LIMIT-003", Severity.HIGH),
        ({"MAX_REQUEST_BYTES": str(10 * 1024 * 1024)}, "CMN-LIMIT-003", Severity.MEDIUM),
    ],
)
async def test_environment_checks(tmp_path: Path, env: dict[str, str], rule: str, severity: Severity) -> None:
    found = [f for f in await audit(tmp_path, good(), env) if f.id == rule]
    assert [f.severity for f in found] == [severity]
    assert found[0].location.env is not None


@pytest.mark.parametrize(
    "env",
    [
        {"AMQP_URL": "amqp://cmn:pw@127.0.0.1:5672/"},
        {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
        {"REDIS_URL": "redis://127.0.0.1:6379/0"},
    ],
)
async def test_plaintext_to_loopback_is_not_flagged(tmp_path: Path, env: dict[str, str]) -> None:
    assert await audit(tmp_path, good(), env) == []


async def test_memory_rule_follows_the_limit(tmp_path: Path) -> None:
    # 64 in flight x 2 brokers x 1 MiB x 3 = 384 MiB, plus the 128 MiB baseline: fits 512 MiB, not 500.
    assert "CMN-LIMIT-003" not in ids(await audit(tmp_path, good(), memory=512 * 1024 * 1024))
    assert "CMN-LIMIT-003" in ids(await audit(tmp_path, good(), memory=500 * 1024 * 1024))


async def test_identity_off_is_high_while_an_upstream_is_open(tmp_path: Path) -> None:
    env = {"REQUIRE_IDENTITY": "false"}
    (guarded,) = [f for f in await audit(tmp_path, good(), env) if f.id == "CMN-AUTH-002"]
    assert guarded.severity is Severity.MEDIUM
    document = good()
    _no_access(document)
    (open_one,) = [f for f in await audit(tmp_path, document, env) if f.id == "CMN-AUTH-002"]
    assert open_one.severity is Severity.HIGH
    assert "payments" in open_one.message


async def test_certificates_expiring_within_renew_before(tmp_path: Path, dev_ca: DevCertificateAuthority) -> None:
    now = time.time()
    for name, days in (("soon", 5), ("later", 60)):
        bundle = dev_ca.issue(name, ["client.example"], now=now, days=days)
        (tmp_path / f"{name}.pem").write_bytes(bundle.chain_pem() + bundle.key_pem())
    document = good()
    document["certificates"] = {
        "renew_before": 14 * DAY,
        "items": {
            "soon": {"source": "file", "cert": str(tmp_path / "soon.pem")},
            "later": {"source": "file", "cert": str(tmp_path / "later.pem")},
            "missing": {"source": "file", "cert": str(tmp_path / "missing.pem")},
            "local": {"source": "dev"},
        },
    }
    found = await audit(tmp_path, document)
    assert {(f.id, f.location.key) for f in found} == {
        ("CMN-CERT-001", "certificates.items.soon"),
        ("CMN-CERT-002", "certificates.items.missing"),
        ("CMN-CERT-003", "certificates.items.local"),
    }


async def test_control_channel_without_principals_or_identity_is_flagged(tmp_path: Path) -> None:
    (nobody,) = [f for f in await audit(tmp_path, good(), {"CONTROL_PRINCIPALS": " , "}) if f.id == "CMN-CTL-001"]
    assert nobody.severity is Severity.LOW
    assert "CMN-CTL-002" not in ids(await audit(tmp_path, good()))  # REQUIRE_IDENTITY on
    unidentified = await audit(tmp_path, good(), {"REQUIRE_IDENTITY": "false"})
    assert "CMN-CTL-002" in ids(unidentified)
    keyed = good()
    keyed["security"] = {"keys": {"k1": {"principal": "ops", "secret": {"env": "K1_SECRET"}}}}
    assert "CMN-CTL-002" not in ids(await audit(tmp_path, keyed, {"REQUIRE_IDENTITY": "false"}))


async def test_parking_without_a_shared_park_secret_is_flagged(tmp_path: Path) -> None:
    parked = good()
    payments(parked)["park"] = {"delays": [1, 5]}
    (unsealed,) = [f for f in await audit(tmp_path, parked) if f.id == "CMN-PARK-001"]
    assert unsealed.severity is Severity.MEDIUM and unsealed.location.env == "PARK_SECRET"
    assert "payments" in unsealed.message
    assert "CMN-PARK-001" not in ids(await audit(tmp_path, parked, {"PARK_SECRET": "s" * 32}))
    assert "CMN-PARK-001" not in ids(await audit(tmp_path, good()))  # nothing parks


async def test_secrets_written_where_a_reference_belongs_are_named_by_key_and_never_shown(tmp_path: Path) -> None:
    """A literal signing key or upstream credential stops the configuration from loading (`cmn audit`
    exits 2); the audit still names each one, by line and key, as CMN-SECRET-001, without its value."""
    text = (
        "security:\n"
        "  keys:\n"
        '    k1: {principal: billing, secret: "hunter2-literal"}\n'
        "upstreams:\n"
        "  p:\n"
        "    endpoints: [https://h.example]\n"
        '    auth: {bearer: "tok-literal-9"}\n'
    )
    with pytest.raises(RefusedConfig) as refused:
        await audit(tmp_path, text)
    found = [(f.id, f.location.line, f.location.key) for f in refused.value.secrets]
    assert found == [("CMN-SECRET-001", 3, "security.keys.k1.secret"), ("CMN-SECRET-001", 7, "upstreams.p.auth.bearer")]
    shown = refused.value.message + "".join(f"{f.message} {f.fix} {f.location}" for f in refused.value.secrets)
    assert "hunter2-literal" not in shown and "tok-literal-9" not in shown

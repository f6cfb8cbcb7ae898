"""Run an audit on a YAML text and an environment, the way `cmn audit` reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.security.audit.context import MIB, MemoryLimit
from gateway.security.audit.findings import Finding
from gateway.security.audit.run import audit_context, run_audit
from gateway.settings import load_settings

# A configuration that passes every static check: the negative case of each rule.
GOOD: dict[str, Any] = {
    "upstreams": {
        "payments": {
            "endpoints": ["https://payments.example.com", "http://127.0.0.1:8080"],
            "access": {"allow": ["billing"]},
            "rate_limit": {"per_tenant": {"rate": 10}},
            "tls": {"min_version": "1.3", "verify_hostname": True},
        }
    }
}
GOOD_ENV: dict[str, str] = {
    "REQUIRE_IDENTITY": "true",
    "CONTROL_PRINCIPALS": "ops",
    "MAX_REQUEST_BYTES": str(MIB),
    "MAX_IN_FLIGHT": "64",
    "AMQP_URL": "amqps://cmn:pw@rabbit.example.com:5671/",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.example.com:9093",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "REDIS_URL": "rediss://:pw@redis.example.com:6380/0",
    "LOG_LEVEL": "INFO",
}


def write(tmp_path: Path, document: dict[str, Any] | str) -> Path:
    path = tmp_path / "upstreams.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


async def audit(
    tmp_path: Path, document: dict[str, Any] | str, env: dict[str, str] | None = None, memory: int = 512 * MIB
) -> list[Finding]:
    path = write(tmp_path, document)
    settings = load_settings(**{**GOOD_ENV, **(env or {}), "CMN_UPSTREAMS_FILE": str(path)})
    return await run_audit(audit_context(settings, MemoryLimit(memory, "--memory-limit")))


def ids(findings: list[Finding]) -> set[str]:
    return {f.id for f in findings}

"""deploy/k8s/audit-cronjob.yaml: `cmn audit` monthly, with the gateway's image, environment, upstreams
file and hardening (as kustomize renders it; strict validation is in tests/deploy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.deploy.manifests import container, k8s_documents, k8s_gateway_env, pod_spec
from tests.deploy.tools import only

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The Secret cmn-service-secrets, shaped as kustomization.yaml documents it.
SECRET_SHAPES = {
    "AMQP_URL": "amqps://cmn-gateway:made-up@rabbitmq.example:5671/",
    "REDIS_URL": "rediss://:made-up@redis.cmn.svc:6380/0",
    "KAFKA_SASL_PASSWORD": "made-up",
}


def audit_pod() -> Mapping[str, Any]:
    spec: Mapping[str, Any] = only(k8s_documents(), "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def test_runs_the_audit_monthly() -> None:
    cron = only(k8s_documents(), "CronJob")["spec"]
    assert cron["schedule"] == "0 3 1 * *"
    assert cron["concurrencyPolicy"] == "Forbid"
    (audit,) = audit_pod()["containers"]
    assert audit["args"] == ["audit", "--fail-on", "high"]
    assert audit_pod()["restartPolicy"] == "Never"


def test_reads_what_the_gateway_reads() -> None:
    (audit,) = audit_pod()["containers"]
    gateway = container()
    assert audit["image"] == gateway["image"]
    assert audit["envFrom"] == gateway["envFrom"]
    assert audit["env"] == gateway["env"]
    assert audit["volumeMounts"] == gateway["volumeMounts"]
    assert audit_pod()["volumes"] == pod_spec()["volumes"]
    # The audit judges MAX_REQUEST_BYTES against its own cgroup limit: it must be the gateway's.
    assert audit["resources"]["limits"]["memory"] == gateway["resources"]["limits"]["memory"]


def test_is_locked_down_like_the_gateway() -> None:
    (audit,) = audit_pod()["containers"]
    assert audit["securityContext"] == container()["securityContext"]
    assert audit_pod()["securityContext"] == pod_spec()["securityContext"]
    assert audit_pod()["automountServiceAccountToken"] is False


def test_the_shipped_base_passes_its_own_monthly_audit() -> None:
    """The CronJob fails on a high finding, so the base as shipped must have none: the settings the
    gateway reads from its ConfigMap, the upstreams file it mounts and its memory limit, plus the
    Secret's keys in the shape kustomization.yaml documents (values made up)."""
    environ = {k: v for k, v in os.environ.items() if k not in k8s_gateway_env() and k not in SECRET_SHAPES}
    environ.update({**k8s_gateway_env(), **SECRET_SHAPES, "CMN_UPSTREAMS_FILE": str(K8S / "upstreams.yaml")})
    limit = container()["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    memory = str(int(limit.removesuffix("Mi")) * 1024 * 1024)
    command = [str(Path(sys.executable).parent / "cmn"), "audit", "--format", "json", "--memory-limit", memory]
    result = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60, check=False)
    findings = json.loads(result.stdout)["findings"]
    high = [finding["id"] for finding in findings if finding["severity"] == "high"]
    assert result.returncode == 0 and not high, result.stdout + result.stderr
    # The memory check passes for the right reason: MAX_REQUEST_BYTES was sized for the limit.
    assert "CMN-LIMIT-003" not in {finding["id"] for finding in findings}

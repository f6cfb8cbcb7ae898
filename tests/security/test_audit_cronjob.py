"""deploy/k8s/audit-cronjob.yaml: `cmn audit` monthly, with the gateway's image, environment, upstreams
file and hardening (as kustomize renders it; strict validation is in tests/deploy)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.deploy.manifests import container, k8s_documents, pod_spec
from tests.deploy.tools import only


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

"""The kustomize base in deploy/k8s: renders offline, passes strict schema validation, and says what the
gateway needs (replicas and resources from the spec, probes on METRICS_PORT, non-root, drain, config)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import aiohttp
import yaml

from tests.deploy.conftest import OpsPort
from tests.deploy.manifests import config_maps, container, pod_spec, rendered_k8s
from tests.deploy.manifests import k8s_documents as documents
from tests.deploy.manifests import k8s_gateway_env as gateway_env
from tests.deploy.tools import explain, find, only, run

EXPECTED = {
    ("ServiceAccount", "cmn-service"),
    ("Deployment", "cmn-service"),
    ("Service", "cmn-service-metrics"),
    ("PodDisruptionBudget", "cmn-service"),
    ("HorizontalPodAutoscaler", "cmn-service"),
    ("NetworkPolicy", "cmn-service"),
    ("CronJob", "cmn-audit"),
}


def test_rendered_manifests_pass_strict_validation(tmp_path: Path) -> None:
    output = tmp_path / "rendered.yaml"
    output.write_text(rendered_k8s())
    result = run("kubernetes-validate", "--strict", output)
    assert result.returncode == 0, explain(result)
    for kind, name in EXPECTED:
        assert f"passed for resource {kind.lower()}/{name} " in result.stdout, explain(result)
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in documents()} >= EXPECTED


def test_strict_validation_rejects_a_broken_deployment(tmp_path: Path) -> None:
    docs = documents()
    deployment = only(docs, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    result = run("kubernetes-validate", "--strict", broken)
    assert result.returncode != 0, explain(result)
    assert "deployment/cmn-service" in result.stdout, explain(result)
    assert "paht" in result.stdout, explain(result)


def test_deployment_matches_the_spec() -> None:
    deployment = only(documents(), "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert container()["image"] == f"ariesone/cmn-service:{metadata.version('cmn-gateway')}"
    assert container()["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }


def test_probes_use_the_metrics_port() -> None:
    (port,) = container()["ports"]
    assert port == {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
    assert gateway_env()["METRICS_PORT"] == "9090"
    assert gateway_env()["ENABLE_METRICS"] == "true"
    probes = {name: container()[name]["httpGet"] for name in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"] == {"path": "/healthz", "port": "metrics"}
    assert probes["readinessProbe"] == {"path": "/readyz", "port": "metrics"}


def test_pod_runs_locked_down() -> None:
    assert pod_spec()["securityContext"]["runAsNonRoot"] is True
    assert pod_spec()["securityContext"]["runAsUser"] != 0
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec()["automountServiceAccountToken"] is False


def test_sigterm_drain_has_a_grace_period() -> None:
    assert pod_spec()["terminationGracePeriodSeconds"] >= 30
    assert "preStop" not in container().get("lifecycle", {}), "SIGTERM itself starts the drain"


def test_secret_values_come_from_a_secret() -> None:
    secret_refs = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in container()["env"]
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert secret_refs["AZURE_CLIENT_SECRET"]["key"] == "AZURE_CLIENT_SECRET"
    assert "AMQP_URL" in secret_refs, "the AMQP URL carries credentials"
    for config_map in config_maps().values():
        assert not {"AZURE_CLIENT_SECRET", "AMQP_URL"} & set(config_map["data"])
    assert not list(find(documents(), "Secret")), "the base ships no secret values"


def test_upstreams_file_is_mounted_where_the_gateway_looks() -> None:
    upstreams_file = Path(gateway_env()["CMN_UPSTREAMS_FILE"])
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    (mount,) = (m for m in container()["volumeMounts"] if Path(m["mountPath"]) == upstreams_file.parent)
    config_map = config_maps()[volumes[mount["name"]]["configMap"]["name"]]
    assert upstreams_file.name in config_map["data"]
    assert mount["readOnly"] is True


def test_selectors_pick_the_gateway_pods() -> None:
    labels = only(documents(), "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [
        only(documents(), "Deployment")["spec"]["selector"]["matchLabels"],
        only(documents(), "Service")["spec"]["selector"],
        only(documents(), "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        only(documents(), "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector
        assert selector.items() <= labels.items(), selector


def test_availability_objects_agree_with_the_deployment() -> None:
    replicas = only(documents(), "Deployment")["spec"]["replicas"]
    assert only(documents(), "PodDisruptionBudget")["spec"]["minAvailable"] < replicas
    hpa = only(documents(), "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cmn-service"}
    assert hpa["minReplicas"] == replicas <= hpa["maxReplicas"]
    (port,) = only(documents(), "Service")["spec"]["ports"]
    assert port["targetPort"] == "metrics"


def test_network_policy_admits_only_the_metrics_port() -> None:
    policy = only(documents(), "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = [port["port"] for rule in policy["ingress"] for port in rule["ports"]]
    assert ingress_ports == ["metrics"]
    egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert {53, 5672, 9092, 6379, 4318, 443} <= egress_ports


async def test_probe_paths_are_served_by_the_gateway(ops_port: OpsPort) -> None:
    probes = [container()[name]["httpGet"]["path"] for name in ("startupProbe", "livenessProbe", "readinessProbe")]
    async with aiohttp.ClientSession() as session:
        for path in probes:
            async with session.get(f"http://127.0.0.1:{ops_port.port}{path}") as response:
                assert response.status == 200, path
        ops_port.ready = False
        async with session.get(f"http://127.0.0.1:{ops_port.port}/readyz") as response:
            assert response.status == 503

"""docker-compose.yml: valid for the compose binary, and wired the way the gateway and helpers expect."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.bus.base import DEAD_LETTERS, REQUESTS, TELEMETRY
from tests.deploy import dockerfile
from tests.deploy.conftest import OpsPort
from tests.deploy.manifests import compose_config, compose_service
from tests.deploy.tools import (
    COMPOSE_FILE,
    DOCKERFILE,
    REPO,
    explain,
    run,
    run_probe,
)

SERVICES = {"gateway", "rabbitmq", "kafka", "kafka-init", "redis", "prometheus", "grafana", "jaeger"}
BROKERS = {"rabbitmq", "kafka", "redis"}


def gateway() -> Mapping[str, Any]:
    return compose_service("gateway")


def test_compose_config_is_valid() -> None:
    result = run("docker-compose", "--project-directory", REPO, "-f", COMPOSE_FILE, "config", "-q")
    assert result.returncode == 0, explain(result)
    assert set(compose_config()["services"]) >= SERVICES


def test_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    document["services"]["gateway"]["depends_on"]["zookeeper"] = {"condition": "service_healthy"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(document))
    result = run("docker-compose", "--project-directory", REPO, "-f", broken, "config", "-q")
    assert result.returncode != 0, explain(result)
    assert "zookeeper" in result.stderr, explain(result)


def test_gateway_is_configured_for_both_brokers_and_telemetry() -> None:
    environment = set(gateway()["environment"])
    required = {"AMQP_URL", "KAFKA_BOOTSTRAP_SERVERS", "CMN_UPSTREAMS_FILE", "OTLP_ENDPOINT", "REDIS_URL"}
    assert required | {"POOL_SIZE", "CONNECTION_TIMEOUT", "RETRY_ATTEMPTS"} <= environment
    assert gateway()["environment"]["ENABLE_METRICS"] == "true"
    assert gateway()["environment"]["METRICS_PORT"] == "9090"


def test_gateway_runs_cmn_serve_from_the_dockerfile_image() -> None:
    instructions = dockerfile.parse(DOCKERFILE)
    (entrypoint,) = [i.arguments for i in instructions if i.keyword == "ENTRYPOINT"]
    assert gateway()["build"]["context"] == str(REPO)
    assert gateway()["entrypoint"] is None, "the image's ENTRYPOINT is kept"
    assert dockerfile.exec_form(entrypoint) + gateway()["command"] == ["cmn", "serve"]


def test_gateway_waits_for_healthy_brokers() -> None:
    depends_on = gateway()["depends_on"]
    for name in BROKERS:
        assert depends_on[name]["condition"] == "service_healthy", name
        assert "healthcheck" in compose_config()["services"][name], f"{name} has no health check to wait for"


def test_kafka_topics_are_created_before_the_gateway_starts() -> None:
    init = compose_service("kafka-init")
    assert gateway()["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = init["command"]
    script = script.replace("$$", "$")  # compose's escape for a literal `$`
    assert {REQUESTS, TELEMETRY, DEAD_LETTERS} <= set(re.findall(r"[\w.-]+", script))
    syntax = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr


def test_upstreams_file_is_mounted_where_the_gateway_looks() -> None:
    targets = {volume["target"]: volume["source"] for volume in gateway()["volumes"]}
    mounted = targets[gateway()["environment"]["CMN_UPSTREAMS_FILE"]]
    assert Path(mounted) == REPO / "deploy" / "upstreams.example.yaml"


@pytest.mark.parametrize("service", ["gateway", "prometheus", "grafana"])
def test_bind_mount_sources_exist(service: str) -> None:
    volumes = compose_config()["services"][service]["volumes"]
    assert volumes
    for volume in volumes:
        assert volume["type"] == "bind"
        assert Path(volume["source"]).exists(), f"{service} mounts {volume['source']}, which is missing"


def test_prometheus_scrapes_the_gateway_and_loads_its_rules() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert f"gateway:{gateway()['environment']['METRICS_PORT']}" in targets
    mounted = {volume["target"] for volume in compose_config()["services"]["prometheus"]["volumes"]}
    for rule_file in config.get("rule_files", []):
        assert str(Path("/etc/prometheus") / rule_file) in mounted, f"rule file {rule_file} is not mounted"


def test_grafana_dashboard_provider_reads_the_mounted_dashboards() -> None:
    providers = REPO / "deploy" / "grafana" / "provisioning" / "dashboards"
    paths = {
        provider["options"]["path"]
        for file in sorted(providers.glob("*.y*ml"))
        for provider in yaml.safe_load(file.read_text()).get("providers", [])
    }
    assert paths, f"no dashboard provider in {providers}"
    mounted = {volume["target"] for volume in compose_config()["services"]["grafana"]["volumes"]}
    assert paths <= mounted


def test_grafana_datasource_reaches_the_prometheus_service() -> None:
    datasources = REPO / "deploy" / "grafana" / "provisioning" / "datasources"
    urls = {
        source["url"]
        for file in sorted(datasources.glob("*.y*ml"))
        for source in yaml.safe_load(file.read_text()).get("datasources", [])
        if source["type"] == "prometheus"
    }
    assert urls == {"http://prometheus:9090"}
    assert "prometheus" in compose_config()["services"]


async def test_gateway_healthcheck_follows_readyz(ops_port: OpsPort) -> None:
    command = gateway()["healthcheck"]["test"]
    assert command[0] == "CMD"
    assert await run_probe(command[1:], ops_port.port) == 0
    ops_port.ready = False
    assert await run_probe(command[1:], ops_port.port) != 0, "healthy must mean connected and consuming"

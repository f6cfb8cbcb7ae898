"""Every setting the deployment hands the gateway is one it reads, with a value it accepts, and every
upstreams file it mounts is one the gateway loads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from gateway.app import load_config
from gateway.settings import Settings
from tests.deploy import dockerfile
from tests.deploy.manifests import compose_service, container, k8s_env_names, k8s_gateway_env
from tests.deploy.tools import CONTRACT_ENV_VARS, DOCKERFILE, REPO, known_env_vars

# The process's own variables, which the image sets for Python and the OS rather than for the gateway.
RUNTIME_ENV = {
    "HOME",  # a writable home (/tmp) for a user that has none, under a read-only root filesystem
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_NO_CACHE_DIR",
}

UPSTREAMS_FILES = [REPO / "deploy" / "upstreams.example.yaml", REPO / "deploy" / "k8s" / "upstreams.yaml"]


def image_env() -> dict[str, str]:
    values = dockerfile.env_values(dockerfile.last_stage(dockerfile.parse(DOCKERFILE)))
    return {name: value for name, value in values.items() if name not in RUNTIME_ENV}


def literal_environments() -> dict[str, Mapping[str, str]]:
    return {
        "Dockerfile": image_env(),
        "docker-compose.yml": compose_service("gateway")["environment"],
        "deploy/k8s": k8s_gateway_env(),
    }


def test_the_gateway_reads_every_contract_env_var() -> None:
    assert known_env_vars() >= CONTRACT_ENV_VARS


def secret_env_names() -> set[str]:
    """Variables the mounted upstreams files name as secrets ({env: VAR}): the gateway reads those too."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                names.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in UPSTREAMS_FILES:
        walk(yaml.safe_load(path.read_text()))
    return names


@pytest.mark.parametrize("where", ["Dockerfile", "docker-compose.yml", "deploy/k8s"])
def test_deployment_sets_only_known_env_vars(where: str) -> None:
    names = set(literal_environments()[where]) | (k8s_env_names() if where == "deploy/k8s" else set())
    assert names, f"{where} sets no gateway variables"
    unknown = names - known_env_vars() - secret_env_names()
    assert not unknown, f"{where} sets variables the gateway does not read: {sorted(unknown)}"


@pytest.mark.parametrize("where", ["Dockerfile", "docker-compose.yml", "deploy/k8s"])
def test_gateway_settings_accept_the_deployed_values(where: str) -> None:
    # model_validate reads only the mapping given, not this process's environment.
    parsed = Settings.model_validate(literal_environments()[where])
    assert parsed.metrics_port == 9090
    assert parsed.enable_metrics is True


@pytest.mark.parametrize("where", ["docker-compose.yml", "deploy/k8s"])
def test_deployment_names_its_upstreams_file_and_brokers(where: str) -> None:
    parsed = Settings.model_validate(literal_environments()[where])
    assert parsed.upstreams_file is not None
    assert parsed.kafka_bootstrap_servers
    # Kubernetes takes REDIS_URL (it carries a password) from the Secret, not the ConfigMap.
    assert parsed.redis_url or (where == "deploy/k8s" and "REDIS_URL" in k8s_env_names())


@pytest.mark.parametrize("path", UPSTREAMS_FILES, ids=lambda path: path.name)
def test_upstreams_files_load(path: Path) -> None:
    loaded = load_config(Settings.model_validate({}), yaml.safe_load(path.read_text()))  # as `cmn serve` does
    assert loaded.upstreams.upstreams


def test_the_image_home_is_on_a_writable_volume_under_the_read_only_root_filesystem() -> None:
    # Development certificates default to ~/.cmn/certs: HOME must be writable where the root is not.
    home = dockerfile.env_values(dockerfile.last_stage(dockerfile.parse(DOCKERFILE)))["HOME"]
    gateway = container()
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m["mountPath"] for m in gateway["volumeMounts"] if not m.get("readOnly", False)]
    assert any(home == path or home.startswith(path.rstrip("/") + "/") for path in writable), (home, writable)

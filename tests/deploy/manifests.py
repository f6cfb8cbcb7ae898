"""The deployment artefacts as their own tools resolve them: compose through `docker compose config`,
Kubernetes through `kubectl kustomize`. Cached per test session; callers must not mutate the results."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from tests.deploy.tools import COMPOSE_FILE, REPO, explain, find, load_documents, only, render_kustomize, run


@cache
def compose_config() -> Mapping[str, Any]:
    """docker-compose.yml resolved by the compose binary (anchors merged, paths absolute, defaults filled)."""
    result = run("docker-compose", "--project-directory", REPO, "-f", COMPOSE_FILE, "config", "--format", "json")
    assert result.returncode == 0, explain(result)
    loaded: Mapping[str, Any] = json.loads(result.stdout)
    return loaded


def compose_service(name: str) -> Mapping[str, Any]:
    service: Mapping[str, Any] = compose_config()["services"][name]
    return service


@cache
def rendered_k8s() -> str:
    return render_kustomize()


def k8s_documents() -> list[dict[str, Any]]:
    """A fresh parse each call, so a test may edit its copy."""
    return load_documents(rendered_k8s())


def pod_spec() -> Mapping[str, Any]:
    spec: Mapping[str, Any] = only(k8s_documents(), "Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> Mapping[str, Any]:
    (gateway,) = pod_spec()["containers"]
    assert isinstance(gateway, Mapping)
    return gateway


def config_maps() -> dict[str, Mapping[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in find(k8s_documents(), "ConfigMap")}


def k8s_gateway_env() -> dict[str, str]:
    """The container's literal environment: its envFrom ConfigMaps, then its own `value` entries."""
    env: dict[str, str] = {}
    for source in container().get("envFrom", []):
        env.update(config_maps()[source["configMapRef"]["name"]]["data"])
    env.update({entry["name"]: entry["value"] for entry in container().get("env", []) if "value" in entry})
    return env


def k8s_env_names() -> set[str]:
    """Every variable the container gets, those filled from Secrets included."""
    return set(k8s_gateway_env()) | {entry["name"] for entry in container().get("env", [])}

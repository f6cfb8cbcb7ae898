"""Every setting the deployment hands the gateway is one it reads, with a value it accepts, and every
upstreams file it mounts is one the gateway loads."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import dockerfile
from tests.deploy.manifests import compose_service, k8s_gateway_env
from tests.deploy.tools import DOCKERFILE, FALLBACK_ENV_VARS, REPO, known_env_vars

# The interpreter's own variables, which the image sets for Python rather than for the gateway.
RUNTIME_ENV = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_NO_CACHE_DIR",
}

UPSTREAMS_FILES = [REPO / "deploy" / "upstreams.example.yaml", REPO / "deploy" / "k8s" / "upstreams.yaml"]


def deployed_environments() -> dict[str, Mapping[str, str]]:
    return {
        "docker-compose.yml": compose_service("gateway")["environment"],
        "deploy/k8s": k8s_gateway_env(),
    }


def test_known_env_vars_cover_the_brief() -> None:
    assert known_env_vars() >= FALLBACK_ENV_VARS


@pytest.mark.parametrize("where", ["docker-compose.yml", "deploy/k8s"])
def test_deployment_sets_only_known_env_vars(where: str) -> None:
    unknown = set(deployed_environments()[where]) - known_env_vars()
    assert not unknown, f"{where} sets variables the gateway does not read: {sorted(unknown)}"


def test_dockerfile_sets_only_known_env_vars() -> None:
    names = dockerfile.env_names(dockerfile.parse(DOCKERFILE)) - RUNTIME_ENV
    assert names, "the image sets no gateway defaults"
    assert names <= known_env_vars(), sorted(names - known_env_vars())


@pytest.mark.parametrize("where", ["docker-compose.yml", "deploy/k8s"])
def test_gateway_settings_accept_the_deployed_values(where: str) -> None:
    settings = pytest.importorskip("gateway.settings")
    literal = {
        name: value for name, value in deployed_environments()[where].items() if not value.startswith("<")
    }
    parsed = settings.Settings.model_validate(literal)
    assert parsed.metrics_port == 9090
    assert parsed.enable_metrics is True
    assert str(parsed.upstreams_file) == literal["CMN_UPSTREAMS_FILE"]


@pytest.mark.parametrize("path", UPSTREAMS_FILES, ids=lambda path: path.name)
def test_upstreams_files_load(path: Path) -> None:
    document: Any = yaml.safe_load(path.read_text())
    config = _upstreams_model()
    if config is None:
        assert all(spec["endpoints"] for spec in document["upstreams"].values())
        return
    loaded = config.model_validate(document)
    assert loaded.upstreams


def _upstreams_model() -> Any:
    """gateway.upstream.config.UpstreamsFile when it exists; the minimal form is checked otherwise."""
    try:
        module = importlib.import_module("gateway.upstream.config")
    except ImportError:
        return None
    return getattr(module, "UpstreamsFile", None)

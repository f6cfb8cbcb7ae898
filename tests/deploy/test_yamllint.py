"""yamllint over every YAML file of the deployment (deploy/ and docker-compose.yml)."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.tools import COMPOSE_FILE, K8S_BASE, REPO, YAMLLINT_CONFIG, explain, run

DEPLOY = REPO / "deploy"


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), COMPOSE_FILE])


def test_deployment_yaml_is_lint_clean() -> None:
    files = yaml_files()
    assert K8S_BASE / "deployment.yaml" in files
    result = run("yamllint", "-f", "parsable", "-c", YAMLLINT_CONFIG, *files)
    assert result.returncode == 0, explain(result)


def test_compose_and_kubernetes_yaml_have_no_warnings() -> None:
    files = [COMPOSE_FILE, DEPLOY / "upstreams.example.yaml", *sorted(K8S_BASE.glob("*.yaml"))]
    result = run("yamllint", "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, *files)
    assert result.returncode == 0, explain(result)


def test_yamllint_reports_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text((K8S_BASE / "service.yaml").read_text() + "spec:\n  type: NodePort\n")
    result = run("yamllint", "-f", "parsable", "-c", YAMLLINT_CONFIG, broken)
    assert result.returncode != 0, explain(result)
    assert "key-duplicates" in result.stdout, explain(result)

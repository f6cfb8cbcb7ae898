"""yamllint over every YAML file of the deployment (deploy/ and docker-compose.yml)."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.tools import COMPOSE_FILE, REPO, YAMLLINT_CONFIG, explain, run


def yaml_files() -> list[Path]:
    return sorted(
        [*REPO.joinpath("deploy").rglob("*.yaml"), *REPO.joinpath("deploy").rglob("*.yml"), COMPOSE_FILE]
    )


def test_deployment_yaml_is_lint_clean() -> None:
    files = yaml_files()
    assert REPO / "deploy" / "k8s" / "deployment.yaml" in files
    result = run("yamllint", "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, *files)
    assert result.returncode == 0, explain(result)


def test_yamllint_reports_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text((REPO / "deploy" / "k8s" / "service.yaml").read_text() + "spec:\n  type: NodePort\n")
    result = run("yamllint", "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, broken)
    assert result.returncode != 0, explain(result)
    assert "key-duplicates" in result.stdout, explain(result)

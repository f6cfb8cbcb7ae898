"""The Dockerfile: hadolint-clean, and the image it describes is the one Kubernetes and compose expect."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.deploy import dockerfile
from tests.deploy.conftest import OpsPort
from tests.deploy.tools import (
    DOCKERFILE,
    REPO,
    dockerignore_patterns,
    dockerignored,
    explain,
    run,
    run_probe,
)

INSTRUCTIONS = dockerfile.parse(DOCKERFILE)
RUNTIME = dockerfile.last_stage(INSTRUCTIONS)


def arguments_of(keyword: str, instructions: list[dockerfile.Instruction] = RUNTIME) -> list[str]:
    return [instruction.arguments for instruction in instructions if instruction.keyword == keyword]


def test_hadolint_passes() -> None:
    result = run("hadolint", "--no-color", DOCKERFILE)
    assert result.returncode == 0, explain(result)
    assert result.stdout.strip() == "", explain(result)


def test_hadolint_rejects_a_root_image(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = run("hadolint", "--no-color", broken)
    assert result.returncode != 0, explain(result)
    assert "DL3002" in result.stdout, explain(result)  # "Last USER should not be root"


def test_both_stages_build_from_python_311_slim() -> None:
    images = [arguments.split()[0] for arguments in arguments_of("FROM", INSTRUCTIONS)]
    assert len(images) >= 2, "the build is meant to be multi-stage"
    assert set(images) == {"python:3.11-slim"}


def test_runtime_stage_runs_cmn_serve_as_a_non_root_user() -> None:
    (user,) = arguments_of("USER")
    uid, _, gid = user.partition(":")
    # Numeric ids let Kubernetes' runAsNonRoot verify the user.
    assert uid.isdigit(), user
    assert gid.isdigit(), user
    assert int(uid) != 0
    assert int(gid) != 0
    (entrypoint,) = arguments_of("ENTRYPOINT")
    (command,) = arguments_of("CMD")
    assert dockerfile.exec_form(entrypoint) + dockerfile.exec_form(command) == ["cmn", "serve"]
    assert arguments_of("EXPOSE") == ["9090"]
    assert arguments_of("STOPSIGNAL") == ["SIGTERM"]


def test_entrypoint_is_the_packaged_console_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = arguments_of("ENTRYPOINT")
    assert dockerfile.exec_form(entrypoint)[0] in scripts


def test_pip_installs_the_project_without_extras() -> None:
    installs = [run_ for run_ in arguments_of("RUN", INSTRUCTIONS) if "pip install" in run_]
    assert installs, "no pip install"
    words = installs[-1].split()
    assert words[-1] == ".", f"expected `pip install ... .`, got {installs[-1]}"
    assert "--no-cache-dir" in words


def test_copied_sources_exist_and_are_not_dockerignored() -> None:
    patterns = dockerignore_patterns()
    copies = [arguments.split() for arguments in arguments_of("COPY", INSTRUCTIONS)]
    sources = [source for words in copies if not words[0].startswith("--from") for source in words[:-1]]
    assert "gateway" in sources
    for source in sources:
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
        assert not dockerignored(source, patterns), f".dockerignore excludes {source}"
    for path in ("gateway/__init__.py", "gateway/py.typed"):
        assert not dockerignored(path, patterns), f".dockerignore excludes {path}"
    assert dockerignored(".venv/bin/python", patterns)
    assert dockerignored("gateway/__pycache__/clock.cpython-311.pyc", patterns)


async def test_healthcheck_command_probes_the_gateway_healthz(ops_port: OpsPort) -> None:
    (healthcheck,) = arguments_of("HEALTHCHECK")
    command = dockerfile.healthcheck_command(healthcheck)
    assert await run_probe(command, ops_port.port) == 0
    await ops_port.server.aclose()
    assert await run_probe(command, ops_port.port) != 0, "a dead gateway must fail its health check"

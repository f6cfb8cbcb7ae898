"""`cmn audit` as a command: table, JSON and SARIF 2.1.0 output, exit codes with --fail-on, config errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.security.audit.findings import RULES
from tests.security.audit_helpers import GOOD, GOOD_ENV, write

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in GOOD_ENV and k != "CMN_UPSTREAMS_FILE"}
    environ.update({**GOOD_ENV, **(env or {}), "COLUMNS": "80"})
    command = [str(BIN / "cmn"), "audit", *args]
    return subprocess.run(command, env=environ, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def medium_only() -> dict[str, Any]:
    """One medium finding (TLS 1.2 allowed) and nothing else."""
    document = copy.deepcopy(GOOD)
    document["upstreams"]["payments"]["tls"]["min_version"] = "1.2"
    return document


def bad() -> dict[str, Any]:
    document = medium_only()
    document["upstreams"]["payments"]["tls"]["verify_hostname"] = False
    document["upstreams"]["payments"]["endpoints"].append("http://10.0.0.5")
    return document


def test_exit_code_follows_fail_on(tmp_path: Path) -> None:
    config = str(write(tmp_path, medium_only()))
    assert run("--config", config).returncode == 0, "medium only: below the default (high)"
    assert run("--config", config, "--fail-on", "medium").returncode == 1
    assert run("--config", config, "--fail-on", "low").returncode == 1
    assert run("--config", str(write(tmp_path, GOOD)), "--fail-on", "low").returncode == 0
    assert run("--config", str(write(tmp_path, bad()))).returncode == 1


def test_table_fits_80_columns(tmp_path: Path) -> None:
    result = run("--config", str(write(tmp_path, bad())))
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    assert "CMN-TLS-002" in result.stdout and "verify_hostname" in result.stdout
    assert lines[-1] == "3 findings: 2 high, 1 medium, 0 low"


def test_json_output(tmp_path: Path) -> None:
    result = run("--config", str(write(tmp_path, bad())), "--format", "json")
    report = json.loads(result.stdout)
    assert report["summary"] == {"high": 2, "medium": 1, "low": 0}
    first = report["findings"][0]
    assert set(first) == {"id", "severity", "title", "message", "location", "fix"}
    assert [f["severity"] for f in report["findings"]] == ["high", "high", "medium"]
    by_id = {f["id"]: f for f in report["findings"]}
    assert by_id["CMN-TLS-001"]["location"]["key"] == "upstreams.payments.tls.min_version"
    assert isinstance(by_id["CMN-TLS-001"]["location"]["line"], int)


def test_sarif_output(tmp_path: Path) -> None:
    env = {"LOG_LEVEL": "DEBUG"}  # an environment finding: a logical location, no file
    result = run("--config", str(write(tmp_path, bad())), "--format", "sarif", env=env)
    sarif = json.loads(result.stdout)
    assert sarif["version"] == "2.1.0"
    assert sarif["$schema"].endswith("sarif-schema-2.1.0.json")
    (run_,) = sarif["runs"]
    driver = run_["tool"]["driver"]
    assert driver["name"] == "cmn audit"
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert rule_ids == [rule.id for rule in RULES] and len(set(rule_ids)) == len(rule_ids)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
        assert rule["defaultConfiguration"]["level"] in {"error", "warning", "note"}
    results = run_["results"]
    assert {r["ruleId"] for r in results} == {"CMN-TLS-001", "CMN-TLS-002", "CMN-TLS-003", "CMN-LOG-001"}
    for result_ in results:
        assert driver["rules"][result_["ruleIndex"]]["id"] == result_["ruleId"]
        assert result_["level"] in {"error", "warning", "note"}
        assert result_["message"]["text"]
        (location,) = result_["locations"]
        if result_["ruleId"] == "CMN-LOG-001":
            assert location["logicalLocations"][0]["name"] == "LOG_LEVEL"
            continue
        physical = location["physicalLocation"]
        assert physical["artifactLocation"]["uri"].endswith("upstreams.yaml")
        assert isinstance(physical["region"]["startLine"], int) and physical["region"]["startLine"] >= 1
    levels = {r["ruleId"]: r["level"] for r in results}
    assert levels == {"CMN-TLS-001": "warning", "CMN-TLS-002": "error", "CMN-TLS-003": "error", "CMN-LOG-001": "note"}


def test_module_form_uses_the_environment_file(tmp_path: Path) -> None:
    environ = {**os.environ, **GOOD_ENV, "CMN_UPSTREAMS_FILE": str(write(tmp_path, bad()))}
    command = [sys.executable, "-m", "gateway.security.audit", "--format", "json"]
    result = subprocess.run(command, env=environ, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["summary"]["high"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("upstreams: [", "is not valid YAML"),
        ("upstreams: {p: {endpoints: []}}", "upstreams.p.endpoints"),
        ("upstreams:\n  p:\n    endpoints: [https://u:secret@h.example]\n", "CMN-SECRET-002"),
    ],
)
def test_configuration_errors_are_one_line_without_a_traceback(tmp_path: Path, text: str, expected: str) -> None:
    result = run("--config", str(write(tmp_path, text)))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr.replace("SECRET", "")
    assert result.stderr.splitlines()[0].startswith("cmn audit: ")

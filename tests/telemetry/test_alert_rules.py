"""The alert rules: promtool checks them, promtool runs their unit tests, and the tests can fail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.telemetry.promql import DEPLOY, RULES, alert_rules, exposed_sample_names, metric_names

REPO = DEPLOY.parent

RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
REQUIRED_ALERTS = {
    "CMNLatencyP95AboveObjective",
    "CMNErrorRateHigh",
    "CMNCircuitBreakerOpen",
    "CMNEndpointEjected",
    "CMNDeadLettersGrowing",
    "CMNConsumerLagHigh",
    "CMNCertificateExpiringSoon",
    "CMNSecurityRefusals",
    "CMNUnauthenticatedBurst",
    "CMNUpstreamTLSVerificationFailed",
    "CMNSharedHealthDegraded",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: apt-get install -y prometheus")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_catch_a_loosened_threshold(tmp_path: Path) -> None:
    loosened = RULES.read_text().replace("> 0.1\n", "> 0.5\n")
    assert loosened != RULES.read_text()
    (tmp_path / "alerts.yml").write_text(loosened)
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0
    assert "CMNLatencyP95AboveObjective" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("threshold", "changed", "alert"),
    [
        ("> 0.2\n", "> 0.3\n", "CMNSecurityRefusals"),  # misses reply_to_refused at 0.25/s
        ("> 0.2\n", "> 0.1\n", "CMNSecurityRefusals"),  # fires for invalid_header at 0.15/s
        ("> 2\n", "> 6\n", "CMNUnauthenticatedBurst"),  # misses the 5/s burst
        ("> 2\n", "> 0.5\n", "CMNUnauthenticatedBurst"),  # fires for a steady 1/s
        ("[5m])) > 0\n", "[5m])) > 1\n", "CMNUpstreamTLSVerificationFailed"),  # misses a single failure
    ],
)
def test_security_unit_tests_catch_a_moved_threshold(tmp_path: Path, threshold: str, changed: str, alert: str) -> None:
    rules = RULES.read_text()
    assert rules.count(threshold) == 1
    (tmp_path / "alerts.yml").write_text(rules.replace(threshold, changed))
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr


def test_every_alert_the_issue_asks_for_exists_and_is_unit_tested() -> None:
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS
    tested = {
        t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case["alert_rule_test"]
    }
    assert tested == names


def test_rules_refer_only_to_metrics_the_gateway_exposes() -> None:
    exposed = exposed_sample_names()
    for rule in alert_rules():
        used = metric_names(str(rule["expr"]))
        assert used <= exposed, f"{rule['alert']}: {sorted(used - exposed)} not exposed"


def test_the_compose_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = promtool("check", "config", DEPLOY / "prometheus" / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_to_its_troubleshooting_section() -> None:
    readme = (REPO / "README.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"(?m)^#{2,4} (.+)$", readme)}
    troubleshooting = readme[readme.index("\n## Troubleshooting\n") :]
    for rule in alert_rules():
        url = rule["annotations"].get("runbook_url", "")
        assert url.startswith("README.md#"), f"{rule['alert']} has no runbook_url"
        anchor = url.split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no README section #{anchor}"
        heading = next(h for h in re.findall(r"(?m)^### (.+)$", troubleshooting) if github_anchor(h) == anchor)
        assert heading, rule["alert"]
    topics = {github_anchor(h) for h in re.findall(r"(?m)^### (.+)$", troubleshooting)}
    assert {"pool-exhaustion", "certificate-errors", "high-latency"} <= topics  # the spec's common issues

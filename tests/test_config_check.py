"""`cmn config check`'s checker: every problem at once, each with its path, misspellings guessed."""

from __future__ import annotations

from pathlib import Path

from gateway.config_check import check


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "upstreams.yaml"
    path.write_text(text)
    return path


def test_a_clean_configuration_has_no_findings(tmp_path: Path) -> None:
    path = write(tmp_path, "upstreams:\n  payments:\n    endpoints: [https://pay.example.com]\n")
    report = check({"AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"}, path)
    assert report.findings == () and report.exit_code(strict=True) == 0


def test_every_error_is_reported_at_once_with_its_path_and_a_guess(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "upstreams:\n"
        "  payments:\n"
        "    endpoints: [https://pay.example.com]\n"
        "    brekaer: {failure_rate_threshold: 50}\n"
        "    retry: {attemps: 3}\n"
        "  ledger:\n"
        "    endpoints: []\n"
        "securty: {}\n",
    )
    report = check({"AMQP_URL": "amqp://h/"}, path)
    assert sorted(str(f) for f in report.errors) == [
        "error: securty: unknown key (did you mean 'security'?)",
        "error: upstreams.ledger.endpoints: List should have at least 1 item after validation, not 0",
        "error: upstreams.payments.brekaer: unknown key (did you mean 'breaker'?)",
        "error: upstreams.payments.retry.attemps: unknown key (did you mean 'attempts'?)",
    ]
    assert report.exit_code(strict=False) == 2


def test_a_key_with_no_close_match_lists_what_is_known(tmp_path: Path) -> None:
    path = write(tmp_path, "upstreams:\n  p:\n    endpoints: [https://p.example.com]\n    pool: {zzz: 1}\n")
    [finding] = check({"AMQP_URL": "amqp://h/"}, path).errors
    assert (
        finding.where == "upstreams.p.pool.zzz" and "known here:" in finding.message and "max_size" in finding.message
    )


def test_settings_errors_are_all_reported_and_never_quote_a_password(tmp_path: Path) -> None:
    path = write(tmp_path, "upstreams:\n  p:\n    endpoints: [https://p.example.com]\n")
    report = check({"AMQP_URL": "http://u:pw-secret-9@h/", "POOL_SIZE": "lots", "LOG_LEVEL": "debug"}, path)
    assert sorted(f.where for f in report.errors) == ["AMQP_URL", "POOL_SIZE"]  # debug is fine in any case
    assert all("pw-secret-9" not in str(f) for f in report.findings)


def test_warnings_empty_upstreams_lookalike_variables_and_unusual_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "upstreams: {}\n")
    environ = {"AMQP_ULR": "amqp://h/", "RETRY_ATTEMPTS": "9", "REQUEST_TIMEOUT": "900", "HOME": "/root"}
    report = check(environ, path)
    assert report.errors == []
    by_where = {f.where: f.message for f in report.warnings}
    assert by_where["AMQP_ULR"] == "not a CMN setting: did you mean AMQP_URL?"
    assert "empty" in by_where["upstreams"]
    assert "RETRY_ATTEMPTS" in by_where and "REQUEST_TIMEOUT" in by_where and "AMQP_URL" in by_where
    assert "HOME" not in by_where  # not ours, not a lookalike
    assert report.exit_code(strict=False) == 0 and report.exit_code(strict=True) == 1


def test_a_missing_or_broken_file_is_an_error_naming_it(tmp_path: Path) -> None:
    report = check({}, tmp_path / "nope.yaml")
    [finding] = report.errors
    assert finding.where == str(tmp_path / "nope.yaml") and "No such file" in finding.message
    broken = write(tmp_path, "upstreams: [\n")
    assert "not valid YAML" in check({}, broken).errors[0].message
    assert [f.where for f in check({}).errors] == ["CMN_UPSTREAMS_FILE"]


def test_an_upstream_that_parks_without_park_secret_is_a_warning(tmp_path: Path) -> None:
    """Red team: replicas without one shared PARK_SECRET cannot verify each other's parked copies (a
    signed request is then refused as a replay); `cmn serve` logs it, the check now says it before."""
    path = write(tmp_path, "upstreams:\n  pay:\n    endpoints: [https://pay.example.com]\n    park: {delays: [1]}\n")
    environ = {"AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"}
    [finding] = check(environ, path).warnings
    assert finding.where == "PARK_SECRET" and "pay" in finding.message
    assert check({**environ, "PARK_SECRET": "s" * 32}, path).findings == ()

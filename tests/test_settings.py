from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import load_config
from gateway.errors import ConfigError
from gateway.settings import KNOWN_ENV_VARS, Settings, environment_table, load_settings
from tests.fixtures.upstreams import Upstream


def test_spec_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_SIZE", "25")
    monkeypatch.setenv("CONNECTION_TIMEOUT", "2.5")
    monkeypatch.setenv("RETRY_ATTEMPTS", "4")
    monkeypatch.setenv("ENABLE_METRICS", "true")
    monkeypatch.setenv("METRICS_PORT", "9191")
    monkeypatch.setenv("OTLP_ENDPOINT", "http://localhost:4318")
    monkeypatch.setenv("AZURE_VAULT_URL", "https://v.vault.azure.net")
    s = load_settings()
    assert (s.pool_size, s.connection_timeout, s.retry_attempts) == (25, 2.5, 4)
    assert (s.enable_metrics, s.metrics_port, s.otlp_endpoint) == (True, 9191, "http://localhost:4318")
    assert s.azure_vault_url == "https://v.vault.azure.net"
    assert s.embedded


def test_bad_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_SIZE", "many")
    with pytest.raises(ConfigError, match="POOL_SIZE"):
        load_settings()


def test_upstreams_file_minimal_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "upstreams.yaml"
    path.write_text("upstreams:\n  payments:\n    endpoints: [http://127.0.0.1:8080]\n")
    monkeypatch.setenv("CMN_UPSTREAMS_FILE", str(path))
    config = load_config(load_settings())
    assert [e.url for e in config.upstreams.upstreams["payments"].endpoints] == ["http://127.0.0.1:8080"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("upstreams:\n  payments:\n    endpoints: []\n", "upstreams.payments.endpoints"),
        ("upstreams:\n  payments:\n    endpoints: [ftp://x]\n", "upstreams.payments.endpoints"),
        ("upstreams:\n  payments:\n    endpoints: [http://x]\n    colour: red\n", "colour"),
        ("upstreams: [\n", "not valid YAML"),
        ("- just a list\n", "mapping"),
    ],
)
def test_bad_upstreams_file_stops_with_one_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, fragment: str
) -> None:
    path = tmp_path / "upstreams.yaml"
    path.write_text(text)
    monkeypatch.setenv("CMN_UPSTREAMS_FILE", str(path))
    with pytest.raises(ConfigError) as info:
        load_config(load_settings())
    assert fragment in info.value.message
    assert "\n" not in info.value.message


def test_missing_upstreams_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMN_UPSTREAMS_FILE", "/nonexistent/upstreams.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(load_settings())


@pytest.mark.parametrize("attempts", [1, 2, 4])
async def test_retry_attempts_counts_every_attempt_the_first_included(
    attempts: int, echo_upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RETRY_ATTEMPTS=N is N upstream hits for a request that keeps failing: 1 is no retry at all."""
    from gateway.app import defaults_from
    from gateway.clock import SystemClock
    from gateway.events import RecordingObserver
    from gateway.upstream.forward import build_forwarder
    from tests.upstream.helpers import outbound, upstreams

    monkeypatch.setenv("RETRY_ATTEMPTS", str(attempts))
    settings = load_settings()
    forwarder = build_forwarder(
        upstreams(svc={"endpoints": [echo_upstream.url], "retry": {"backoff_base": 0.001, "backoff_max": 0.001}}),
        defaults_from(settings),
        clock=SystemClock(),
        observer=RecordingObserver(),
    )
    async with forwarder:
        response = await forwarder.forward(outbound(path="/?status=503"))
    assert (response.status, response.attempts, echo_upstream.hits) == (503, attempts, attempts)
    description = Settings.model_fields["retry_attempts"].description
    assert description is not None and "first included" in description


def test_retry_attempts_zero_stops_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match=r"RETRY_ATTEMPTS: Input should be greater than or equal to 1"):
        load_settings()


def test_known_env_vars_are_the_settings_aliases_and_the_readme_names_each() -> None:
    """KNOWN_ENV_VARS is derived: a new setting is known (to deploy checks) and documented, or this fails."""
    aliases = {f.alias for f in Settings.model_fields.values()}
    assert None not in aliases, "every setting is read under an explicit environment name"
    assert aliases == KNOWN_ENV_VARS
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    missing = sorted(name for name in KNOWN_ENV_VARS if f"`{name}`" not in section)
    assert not missing, f"the README's Configuration section does not name {missing}"


def test_the_readme_lists_every_setting_with_its_default_and_meaning() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- env-table:start")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- env-table:end -->")
    assert readme[start:end] == environment_table(), "README's environment table is stale: paste `cmn config env`"
    assert all(f"`{name}`" in readme[start:end] for name in KNOWN_ENV_VARS)


def test_the_settings_repr_never_shows_a_secret() -> None:
    """Red team: the repr (what a traceback with locals, a debugger or a careless log line shows) carried
    AMQP_URL and REDIS_URL with their passwords; the other secrets were already hidden."""
    settings = Settings.model_validate(
        {
            "AMQP_URL": "amqp://gw:amqp-S3CRET@127.0.0.1:5672/",
            "REDIS_URL": "redis://:redis-S3CRET@127.0.0.1:6379/0",
            "KAFKA_SASL_PASSWORD": "sasl-S3CRET",
            "PARK_SECRET": "park-S3CRET-0123456789",
            "AZURE_CLIENT_SECRET": "azure-S3CRET",
        }
    )
    assert "S3CRET" not in repr(settings) and "S3CRET" not in str(settings)
    assert settings.amqp_url == "amqp://gw:amqp-S3CRET@127.0.0.1:5672/"  # still read, only not shown

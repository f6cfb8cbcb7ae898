"""``cmn certs dev`` and ``cmn certs list`` through typer's runner."""

from __future__ import annotations

import time
from pathlib import Path

from typer.testing import CliRunner

from gateway.certs.cli import certs_app
from gateway.certs.devca import DAY, DevCertificateAuthority, read_leaf

runner = CliRunner()


def test_dev_creates_a_ca_and_leaves_and_reuses_them(tmp_path: Path) -> None:
    args = ["dev", "--dir", str(tmp_path), "--name", "api", "--name", "worker", "--san", "api.local"]
    first = runner.invoke(certs_app, args)
    assert first.exit_code == 0, first.output
    assert {p.name for p in tmp_path.iterdir()} == {
        "ca.pem",
        "ca-key.pem",
        "api.pem",
        "api-key.pem",
        "worker.pem",
        "worker-key.pem",
    }
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0
    assert (tmp_path / "api-key.pem").stat().st_mode & 0o077 == 0
    api = read_leaf(tmp_path, "api")
    assert api is not None
    assert api.sans == ("api.local",)
    ca = DevCertificateAuthority.load_or_create(tmp_path, now=time.time())
    api.certificate.verify_directly_issued_by(ca.certificate)

    assert runner.invoke(certs_app, args).exit_code == 0
    again = read_leaf(tmp_path, "api")
    assert again is not None
    assert again.version == api.version  # cached, not re-issued
    assert runner.invoke(certs_app, [*args, "--force"]).exit_code == 0
    forced = read_leaf(tmp_path, "api")
    assert forced is not None
    assert forced.version != api.version


def test_list_shows_dev_certificates(tmp_path: Path) -> None:
    assert runner.invoke(certs_app, ["dev", "--dir", str(tmp_path), "--name", "api", "--days", "30"]).exit_code == 0
    result = runner.invoke(certs_app, ["list", "--dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if " api " in line)
    assert "dev" in row
    assert "localhost, 127.0.0.1" in row
    assert "30.0" in row
    assert "ok" in row


def test_list_from_config_shows_each_problem(tmp_path: Path) -> None:
    now = time.time()
    ca = DevCertificateAuthority.create(now=now)
    good, old = (
        ca.issue("good", ["good.example"], now=now),
        ca.issue("old", ["old"], now=now - 40 * DAY, days=30),
    )
    (tmp_path / "good.pem").write_bytes(good.chain_pem() + good.key_pem())
    (tmp_path / "old.pem").write_bytes(old.chain_pem() + old.key_pem())
    config = tmp_path / "upstreams.yaml"
    config.write_text(
        "upstreams: {}\n"
        "certificates:\n"
        "  items:\n"
        f"    good: {{source: file, cert: {tmp_path / 'good.pem'}}}\n"
        f"    old: {{source: file, cert: {tmp_path / 'old.pem'}}}\n"
        f"    gone: {{source: file, cert: {tmp_path / 'gone.pem'}}}\n"
    )
    result = runner.invoke(certs_app, ["list", "--config", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "good.example" in rows["good"]
    assert " ok " in rows["good"]
    assert "-10.0" in rows["old"]
    assert "expired at" in rows["old"]
    assert "No such file" in rows["gone"]

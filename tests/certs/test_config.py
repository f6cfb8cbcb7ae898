"""The ``certificates:`` config section and the manager built from it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from gateway.certs.config import CertificatesConfig, DevItem, FileItem, KeyVaultItem
from gateway.certs.configured import build_manager
from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.errors import CertificateExpiredError
from gateway.errors import ConfigError
from gateway.events import RecordingObserver
from gateway.testing import FakeClock
from tests.certs.fakevault import FakeKeyVault

SECTION = """
certificates:
  poll_interval: 120
  renew_before: 604800
  dev_dir: ~/cmn-dev
  items:
    partner: {source: keyvault, vault_name: partner-client, expected_name: partner-client}
    billing: {source: file, cert: /etc/cmn/billing.pem, key: /etc/cmn/billing-key.pem, ca_file: /etc/ca.pem}
    legacy: {source: file, pkcs12: /etc/cmn/legacy.p12, password: hunter2}
    local: {source: dev}
"""


def test_yaml_section_parses_into_typed_items() -> None:
    config = CertificatesConfig.model_validate(yaml.safe_load(SECTION)["certificates"])
    assert config.poll_interval == 120
    assert config.dev_dir == Path("~/cmn-dev").expanduser()
    assert isinstance(config.items["partner"], KeyVaultItem)
    assert config.items["partner"].vault_name == "partner-client"
    billing, legacy, local = config.items["billing"], config.items["legacy"], config.items["local"]
    assert isinstance(billing, FileItem)
    assert billing.ca_file == Path("/etc/ca.pem")
    assert isinstance(legacy, FileItem)
    assert legacy.password is not None
    assert "hunter2" not in repr(legacy)
    assert isinstance(local, DevItem)
    assert local.sans == ["localhost", "127.0.0.1"]
    assert config.uses_keyvault()
    assert config.min_version == "1.3"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"source": "file", "cert": "a.pem", "pkcs12": "a.p12"}, "exactly one of"),
        ({"source": "file"}, "exactly one of"),
        ({"source": "file", "pkcs12": "a.p12", "key": "k.pem"}, "`key` goes with `cert`"),
        ({"source": "vault"}, "does not match any of the expected tags"),
        ({"source": "dev", "colour": "blue"}, "Extra inputs are not permitted"),
    ],
)
def test_mistakes_are_named(item: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CertificatesConfig.model_validate({"items": {"x": item}})


def test_keyvault_items_need_a_vault_url() -> None:
    config = CertificatesConfig.model_validate({"items": {"partner": {"source": "keyvault"}}})
    with pytest.raises(ConfigError, match=r"\['partner'\] use Key Vault but AZURE_VAULT_URL is not set"):
        build_manager(config, clock=FakeClock())


async def test_built_manager_loads_every_source(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority, tmp_path: Path
) -> None:
    now = time.time()
    fake_vault.put("partner-client", dev_ca.issue("p", ["partner-client"], now=now))
    billing = dev_ca.issue("billing", ["billing"], now=now)
    (tmp_path / "billing.pem").write_bytes(billing.chain_pem())
    (tmp_path / "billing-key.pem").write_bytes(billing.key_pem())
    (tmp_path / "ca.pem").write_bytes(dev_ca.ca_pem)
    items = {
        "partner": {"source": "keyvault", "vault_name": "partner-client", "expected_name": "partner-client"},
        "billing": {
            "source": "file",
            "cert": str(tmp_path / "billing.pem"),
            "key": str(tmp_path / "billing-key.pem"),
            "ca_file": str(tmp_path / "ca.pem"),
        },
        "local": {"source": "dev", "sans": ["localhost"]},
    }
    config = CertificatesConfig.model_validate({"dev_dir": str(tmp_path / "dev"), "items": items})
    clock = FakeClock(wall_start=now)
    async with build_manager(
        config, clock=clock, observer=RecordingObserver(), keyvault=fake_vault.settings()
    ) as manager:
        assert set(manager.expiries()) == {"partner", "billing", "local"}
        assert [i.error for i in await manager.inspect()] == [None, None, None]
        clock.advance(100 * 86400)  # everything has expired by now
        inspections = await manager.inspect()
    assert all(isinstance(i.error, CertificateExpiredError) for i in inspections[:2])
    assert inspections[2].error is None  # the dev source simply issues a new one

"""Secrets named in the upstreams file: from the environment, a file or Key Vault; never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.secrets import SecretRef, SecretResolver


def ref(**kwargs: str) -> SecretRef:
    return SecretRef.model_validate(kwargs)


async def test_each_source_resolves(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("from-a-file\n")

    async def vault(name: str) -> str:
        return {"billing-key": "from-the-vault"}[name]

    resolver = SecretResolver({"CMN_KEY": "from-env"}, vault=vault)
    assert await resolver.resolve(ref(env="CMN_KEY"), purpose="t") == "from-env"
    assert await resolver.resolve(ref(file=str(secret_file)), purpose="t") == "from-a-file"
    assert await resolver.resolve(ref(keyvault="billing-key"), purpose="t") == "from-the-vault"


async def test_missing_secrets_are_config_errors_that_name_the_reference(tmp_path: Path) -> None:
    resolver = SecretResolver({"EMPTY": ""})
    cases = {
        ref(env="NOT_SET"): "NOT_SET is not set",
        ref(env="EMPTY"): "env:EMPTY is empty",
        ref(file=str(tmp_path / "absent")): "cannot read secret file",
        ref(keyvault="k"): "needs AZURE_VAULT_URL",
    }
    for missing, message in cases.items():
        with pytest.raises(ConfigError, match=message) as refused:
            await resolver.resolve(missing, purpose="security.keys.billing-2026")
        assert refused.value.message.startswith("security.keys.billing-2026: ")


async def test_a_vault_failure_names_the_secret_not_the_sdk_message() -> None:
    async def vault(name: str) -> str:
        raise RuntimeError("token=abc123 leaked by an SDK message")

    with pytest.raises(ConfigError) as refused:
        await SecretResolver({}, vault=vault).resolve(ref(keyvault="k"), purpose="auth")
    assert "abc123" not in refused.value.message and "RuntimeError" in refused.value.message


def test_a_reference_is_exactly_one_source() -> None:
    for bad in ({}, {"env": "A", "file": "/x"}, {"env": "1BAD"}, {"keyvault": "bad name"}, {"value": "literal"}):
        with pytest.raises(ValidationError):
            SecretRef.model_validate(bad)

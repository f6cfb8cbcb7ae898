"""The house rules, enforced: mypy --strict, ruff (lint + format), the one-way import layers and bandit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "ruff"), "check", "gateway", "tests"],
        [str(BIN / "ruff"), "format", "--check", "gateway", "tests"],
        [str(BIN / "mypy"), "gateway", "tests"],
        [str(BIN / "lint-imports")],
        [str(BIN / "bandit"), "-q", "-c", "pyproject.toml", "-r", "gateway"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict", "import-layers", "bandit"],
)
def test_codebase_is_clean(command: list[str]) -> None:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

"""`cmn serve` as a real child process, for kill and drain tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


class ServeProcess:
    def __init__(self, tmp: Path, upstreams: dict[str, Any], env: dict[str, str]) -> None:
        self._file = tmp / "upstreams.yaml"
        self._file.write_text(yaml.safe_dump({"upstreams": upstreams}))
        self._env = {
            **os.environ,
            "CMN_UPSTREAMS_FILE": str(self._file),
            "ENABLE_METRICS": "false",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self._log = tmp / "serve.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "serve", env=self._env, cwd=REPO, stdout=log, stderr=log
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    @property
    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    async def aclose(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

"""The README's "Use it with your broker" is run as a user would: its shell block (sample upstream,
`cmn config check`, `cmn serve`, `cmn request --fail`) and then its service, against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.fixtures.upstreams import free_port

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


async def test_use_it_with_your_broker_runs_as_written(tmp_path: Path) -> None:
    getting_started = section("Use it with your broker")
    [shell] = blocks(getting_started, "bash")
    [service] = blocks(getting_started, "python")
    port = str(free_port())  # the block's 8080 may be taken on a shared machine
    shell = shell.replace("8080", port)
    (tmp_path / "service.py").write_text(service)
    script = "\n".join(
        [
            "set -euo pipefail",
            "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
            shell,
            'echo "--- service"',
            "python service.py",
        ]
    )
    bin_dir = str(Path(sys.executable).parent)  # the venv's `cmn` and `python`
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    for name in ("CMN_UPSTREAMS_FILE", "KAFKA_BOOTSTRAP_SERVERS", "CMN_REQUESTS_QUEUE"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    output = out.decode() + err.decode()
    assert process.returncode == 0, output
    request_reply, service_output = out.decode().split("--- service\n")
    assert '"status": 201' in request_reply, output  # cmn request --fail printed a 201 reply
    assert "0 error(s)" in err.decode()  # cmn config check
    assert service_output.startswith("201 {"), output  # the service's raise_for_error().status and json

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


# The layout block: a name column (indented two spaces per directory level), then what it holds.
NAME_COLUMN = 33
MODULE = re.compile(r"(?<![\w./-])((?:[a-z_][a-z0-9_]*/)*[a-z_][a-z0-9_]*\.py)\b")


def layout_names() -> tuple[set[str], set[str]]:
    """(directories, modules) the README's Layout names, as paths under gateway/.

    A directory is named in the name column; a module anywhere on its entry's lines, relative to that
    entry's directory, or to gateway/ when written with a slash (``bus/kafka/park.py``)."""
    (block,) = blocks(section("Layout"), "")
    lines = block.splitlines()
    assert lines[0] == "gateway/"
    dirs, modules = {""}, set()
    parents: list[str] = []  # the directory at each indentation level
    here = ""
    for line in lines[1:]:
        name_column, text = line[:NAME_COLUMN], line[NAME_COLUMN:]
        if name_column.strip():
            level = (len(name_column) - len(name_column.lstrip())) // 2 - 1
            parents = parents[:level]
            base = "/".join(parents)
            here = base
            for name in name_column.split():
                if name.endswith("/"):
                    parts = name[:-1].split("/")  # security/audit/ names security/ too
                    dirs.update("/".join([*parents, *parts[: i + 1]]) for i in range(len(parts)))
                    here = "/".join([*parents, *parts])
                    parents = [*parents, *parts]
                else:
                    modules.add(f"{base}/{name}".lstrip("/"))
        for name in MODULE.findall(text):
            modules.add(name if "/" in name else f"{here}/{name}".lstrip("/"))
    return dirs, modules


def test_the_layout_section_matches_the_tree() -> None:
    """Every path the Layout names exists; every package, every top-level module and every module of
    the bus (the only place broker libraries are imported) is named."""
    package = REPO / "gateway"
    dirs, modules = layout_names()
    assert [d for d in dirs if not (package / d).is_dir()] == []
    assert [m for m in modules if not (package / m).is_file()] == []
    packages = {p.parent.relative_to(package).as_posix() for p in package.rglob("__init__.py")} - {"."}
    assert sorted(packages - dirs) == []
    top = {p.name for p in package.glob("*.py")} - {"__init__.py"}
    assert sorted(top - modules) == []
    bus = {p.relative_to(package).as_posix() for p in (package / "bus").rglob("*.py") if p.name != "__init__.py"}
    assert sorted(bus - modules) == []

"""A small Dockerfile reader for the tests: instructions with continuations joined, exec forms decoded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Instructions in order; comments and blank lines dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, f"{path}: dangling line continuation at line {start}"
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD; fails on shell form, which would not get signals."""
    decoded = json.loads(arguments)
    assert isinstance(decoded, list), f"not an exec form: {arguments}"
    assert all(isinstance(item, str) for item in decoded), f"not an exec form of strings: {arguments}"
    return [str(item) for item in decoded]


def healthcheck_command(arguments: str) -> list[str]:
    """The command of `HEALTHCHECK [--options] CMD [...]`."""
    _, marker, command = arguments.partition("CMD ")
    assert marker, f"HEALTHCHECK without CMD: {arguments}"
    return exec_form(command)


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    """What `ENV NAME=value ...` instructions set (the key=value form only; values without spaces)."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            pairs = (pair.partition("=") for pair in instruction.arguments.split() if "=" in pair)
            values.update({name: value for name, _, value in pairs})
    return values


def last_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the final (runtime) stage, its FROM included."""
    froms = [index for index, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    assert froms, "no FROM"
    return instructions[froms[-1] :]

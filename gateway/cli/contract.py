"""`cmn schemas`: the wire contract and the upstreams file's schema, written or checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import fail, say


def documents() -> dict[str, bytes]:
    """Every file of ``schemas/``, byte for byte: the wire contract (JSON Schemas and AsyncAPI) and
    ``upstreams.schema.json`` for editors validating CMN_UPSTREAMS_FILE."""
    from gateway.config_file import SCHEMA_FILE, schema_bytes
    from gateway.envelope.schema import render

    return {**render(), SCHEMA_FILE: schema_bytes()}


def schemas(
    out: Annotated[Path, typer.Option(help="Directory to write to.")] = Path("schemas"),
    check: Annotated[bool, typer.Option(help="Fail when the directory is stale instead of writing.")] = False,
) -> None:
    """Write (or check) the wire contract: JSON Schemas, the AsyncAPI document, the upstreams schema."""
    files = documents()
    if check:
        stale = [n for n, data in files.items() if not (out / n).exists() or (out / n).read_bytes() != data]
        if stale:
            raise fail(f"stale: {', '.join(stale)} (run `cmn schemas`)")
        say(f"cmn: the {len(files)} schemas in {out} are up to date")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
        say(f"wrote {out / name}")

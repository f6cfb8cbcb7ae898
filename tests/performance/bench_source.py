"""``cmn serve`` from another checkout, to measure a change side by side with the code before it.

    python -m tests.performance.bench_source /tmp/before

The checkout's directory goes first on ``sys.path``, ahead of this worktree (which ``-m`` put there
and the editable install maps), so ``gateway`` is imported from it; the benchmark helpers stay these.
A checkout with a virtualenv of its own (``DIR/.venv``) is served by that venv's Python, in the same
process (``exec``, so the benchmark's CPU probe still reads the right pid): an older checkout may
import packages this one no longer declares.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    source = sys.argv[1]
    python = Path(source, ".venv", "bin", "python")
    if python.exists() and Path(sys.prefix).resolve() != python.parent.parent.resolve():
        os.execv(python, [str(python), "-m", "tests.performance.bench_source", *sys.argv[1:]])  # nosec B606
    sys.path.insert(0, source)
    from gateway.cli import main as cmn

    imported = str(sys.modules["gateway"].__file__)
    if not imported.startswith(source):
        raise SystemExit(f"gateway was imported from {imported}, not from {source}")
    sys.argv = ["cmn", "serve"]
    cmn()


if __name__ == "__main__":
    main()

"""``together(jobs)``: asyncio.gather's "all of these, concurrently; the first failure raises", with a task fewer.

The pipeline confirms a reply and a telemetry event (and sometimes a dead-letter copy) at once for
every request. ``asyncio.gather`` wraps each coroutine in a task of its own and adds a gathering
future with a callback per child: under load that was about 3 % of the Kafka gateway's CPU (issue 14,
docs/performance.md). Here the first job runs in the caller's task; only the others get tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

Job = Coroutine[Any, Any, None]


async def together(jobs: Sequence[Job]) -> None:
    """Run ``jobs`` concurrently; return once all succeeded. As with ``asyncio.gather`` a failure
    raises (once the jobs listed before it are done, where gather raises at once), the other jobs
    carry on (their own failures are retrieved, not raised), and cancelling the caller cancels them all."""
    if not jobs:
        return
    first, *rest = jobs
    # Scheduled before the first job can suspend; loop.create_task, not ensure_future, whose
    # type checks and loop lookup are Python code run for every request (issue 14).
    loop = asyncio.get_running_loop()
    others = [loop.create_task(job) for job in rest]
    try:
        await first
        for task in others:
            await task
    except BaseException as exc:
        for task in others:
            if not task.done():
                if isinstance(exc, asyncio.CancelledError):
                    task.cancel()
                task.add_done_callback(_retrieve)
            else:
                _retrieve(task)
        raise


def _retrieve(task: asyncio.Future[None]) -> None:
    # Marks a failure seen, as gather does for its children, so asyncio logs no "never retrieved".
    if not task.cancelled():
        task.exception()

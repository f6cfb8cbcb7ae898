"""together(): every job runs concurrently, a failure raises, nothing is left unretrieved or running."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from gateway.together import together


class Boom(Exception):
    pass


async def test_runs_every_job_concurrently_and_returns_when_all_are_done() -> None:
    started: list[int] = []
    all_started = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []

    async def job(i: int) -> None:
        started.append(i)
        if len(started) == 3:
            all_started.set()
        await release.wait()
        finished.append(i)

    running = asyncio.create_task(together([job(0), job(1), job(2)]))
    await asyncio.wait_for(all_started.wait(), 5)  # every job begins before any has finished: they overlap
    assert not running.done()
    release.set()
    await running
    assert sorted(finished) == [0, 1, 2]


async def test_nothing_to_do_returns() -> None:
    await together([])


@pytest.mark.parametrize("failing", [0, 1, 2])
async def test_a_failure_raises_and_the_other_jobs_carry_on(failing: int) -> None:
    done: list[int] = []

    async def job(i: int) -> None:
        await asyncio.sleep(0)
        if i == failing:
            raise Boom(i)
        done.append(i)

    with pytest.raises(Boom):
        await together([job(0), job(1), job(2)])
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(done) == sorted({0, 1, 2} - {failing})


async def test_second_failure_is_retrieved_not_reported() -> None:
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    gate = asyncio.Event()

    async def first() -> None:
        raise Boom("first")

    async def later() -> None:
        await gate.wait()
        raise Boom("later")

    with pytest.raises(Boom, match="first"):
        await together([first(), later(), later()])
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)

    gc.collect()  # an unretrieved task exception is reported when the task is collected
    await asyncio.sleep(0)
    assert reported == []


async def test_cancelling_the_caller_cancels_every_job() -> None:
    cancelled: list[int] = []
    forever = asyncio.Event()

    async def job(i: int) -> None:
        try:
            await forever.wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    running = asyncio.create_task(together([job(0), job(1), job(2)]))
    for _ in range(3):
        await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(3):
        await asyncio.sleep(0)
    assert sorted(cancelled) == [0, 1, 2]

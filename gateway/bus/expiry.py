"""``Expiry.bound()``: ``asyncio.timeout(t)`` for many waits of the same ``t``, with one timer for them all.

Every publish of a transport is bounded by the same publish timeout, and a busy gateway makes two
or three per request. ``asyncio.timeout`` schedules a timer for each (a ``Timeout``, a ``call_at``,
a cancel), which was about 2.5 % of the Kafka gateway's CPU (issue 14, docs/performance.md). Here a
bound is one dict entry: waits enter in the order they started, so with one timeout they also expire
in that order, and a single timer set for the oldest wait's deadline finds every expired one at the
front of the dict. The semantics are ``asyncio.timeout``'s: the waiting task is cancelled, the
cancellation becomes ``TimeoutError`` on leaving the bound, and a cancellation from elsewhere stays
a cancellation.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Expiry:
    """Bounds waits by ``timeout`` seconds (loop time); one instance per timeout, used on one event loop at a time."""

    __slots__ = ("_expired", "_loop", "_timeout", "_timer", "_waiting")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._waiting: dict[asyncio.Task[object], float] = {}  # task → its deadline, oldest first
        self._expired: set[asyncio.Task[object]] = set()  # cancelled by us, not yet out of their bound
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def timeout(self) -> float:
        return self._timeout

    def bound(self) -> _Bound:
        """``with expiry.bound(): await ...``: ``TimeoutError`` if the block is still waiting after ``timeout``."""
        return _Bound(self)

    def _enter(self) -> asyncio.Task[object]:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Expiry.bound() must be used inside a task")
        loop = self._loop
        if loop is not task.get_loop():
            # First use, or this Expiry outlived its loop (asyncio.run again, a module-scoped fixture):
            # the old loop's timer will never fire and its waits will never leave; start afresh.
            loop = self._loop = task.get_loop()
            self._waiting.clear()
            self._expired.clear()
            self._timer = None
        if task in self._waiting:
            raise RuntimeError("Expiry.bound() does not nest within one task")
        self._waiting[task] = loop.time() + self._timeout
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + self._timeout, self._expire)
        return task

    def _leave(self, task: asyncio.Task[object], cancelling: int, exc_type: type[BaseException] | None) -> bool:
        """True when this bound's own cancellation ended the block: the caller raises TimeoutError.
        ``cancelling``: the task's pending cancellations when it entered, as asyncio.timeout compares
        (3.11.3 on): a task that caught a cancellation before (cleanup after a shutdown's cancel) still
        gets TimeoutError from its own expired bound, and a cancellation that came meanwhile wins."""
        self._waiting.pop(task, None)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling and exc_type is asyncio.CancelledError

    def _expire(self) -> None:
        loop = self._loop
        assert loop is not None  # set by the first _enter, which set this timer
        now = loop.time()
        self._timer = None
        waiting = self._waiting
        while waiting:
            task, deadline = next(iter(waiting.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del waiting[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()

    def __repr__(self) -> str:
        return f"<Expiry {self._timeout} s [{len(self._waiting)} waiting, {len(self._expired)} expiring]>"


class _Bound:
    __slots__ = ("_cancelling", "_expiry", "_task")

    def __init__(self, expiry: Expiry) -> None:
        self._expiry = expiry
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def __enter__(self) -> None:
        self._task = task = self._expiry._enter()
        self._cancelling = task.cancelling()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None  # entered
        if self._expiry._leave(self._task, self._cancelling, exc_type):
            raise TimeoutError(f"no answer within {self._expiry.timeout} s") from exc

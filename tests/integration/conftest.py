from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from tests.integration.harness import StackFactory, stack_factory


@pytest.fixture(params=["rabbitmq", "kafka"])
def broker(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(kind, Kafka bootstrap). Sync, so the module's Tansu broker starts outside the test's loop."""
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    return request.param, bootstrap


@pytest.fixture
async def make_stack(broker: tuple[str, str | None]) -> AsyncIterator[StackFactory]:
    """Builds gateway + client stacks on the parametrised broker; all closed after the test."""
    async with AsyncExitStack() as stack:
        yield await stack_factory(stack, *broker)

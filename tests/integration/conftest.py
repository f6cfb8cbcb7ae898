from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from tests.integration.harness import StackFactory, stack_factory


@pytest.fixture(params=["rabbitmq", "kafka"])
async def make_stack(request: pytest.FixtureRequest) -> AsyncIterator[StackFactory]:
    """Builds gateway + client stacks on the parametrised broker; all closed after the test."""
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    async with AsyncExitStack() as stack:
        yield await stack_factory(stack, request.param, bootstrap)

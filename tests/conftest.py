"""Shared fixtures. Each real part has its own fixture module under tests/fixtures/."""

import pytest

pytest_plugins = [
    "tests.fixtures.upstreams",
    "tests.fixtures.rabbit",
    "tests.fixtures.kafka",
    "tests.fixtures.certs",
    "tests.fixtures.otlp",
    "tests.fixtures.prometheus",
    "tests.fixtures.stacks",
    "tests.fixtures.logs",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks stay out of the default run, but run when asked for: with ``-m benchmark`` or by
    naming them (the spec's ``pytest tests/performance/benchmark_network.py``)."""
    if config.option.markexpr or any("performance" in str(arg) for arg in config.args):
        return
    slow = [item for item in items if item.get_closest_marker("benchmark") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("benchmark") is None]

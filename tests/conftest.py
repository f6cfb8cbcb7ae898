"""Shared fixtures. Each real part has its own fixture module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.upstreams",
    "tests.fixtures.rabbit",
    "tests.fixtures.kafka",
    "tests.fixtures.certs",
    "tests.fixtures.otlp",
    "tests.fixtures.prometheus",
    "tests.fixtures.stacks",
]

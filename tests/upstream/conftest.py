"""Fixtures of the upstream tests: real upstream processes that can be killed."""

from tests.upstream.processes import upstream_process

__all__ = ["upstream_process"]

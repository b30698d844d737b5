"""The other file of tests/test_tracing.py: the only one holding a breakpoint."""

from __future__ import annotations


def target(n: int) -> int:
    result = n * 10  # mark: target-body
    return result

"""Waiting on a condition instead of a clock: a test sleeps only as long as the thing takes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "the condition",
    tick: Callable[[], object] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy and return that, or fail after `timeout` seconds.

    `tick` runs before each poll (to drive a clock or a drain the condition depends on).
    """
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            tick()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def holds_for(condition: Callable[[], object], *, seconds: float, interval: float = 0.05, what: str = "it") -> None:
    """Check that `condition` stays true for `seconds` (for "nothing else happens" assertions)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), f"{what} stopped holding"
        time.sleep(interval)
    assert condition(), f"{what} stopped holding"

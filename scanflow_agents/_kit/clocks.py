"""One clock for timing logic: the running event loop's, or a replay's.

Cooldowns, rate limits, lease validity and key-value expiry measure intervals.
They read :func:`now`, the running loop's ``time()``, which is the monotonic
clock unless someone replaced it: tests of timing logic run on a fake loop clock
(looptime) that jumps to the next timer instead of sleeping, so a 30 s cooldown
is tested in milliseconds. Outside a running loop :func:`now` is the monotonic
clock, the same one a default loop reads.

A replay (``scanflow_agents.replaying``) runs an agent's rules on recorded
history: inside :func:`at`, both :func:`now` and :func:`wall` read the recorded
moment being replayed, so a rule that measures time with them decides as it
did then. A rule that reads ``time.time()`` or ``datetime.now()`` itself does
not replay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_REPLAYED: ContextVar[float | None] = ContextVar("scanflow_replayed_time", default=None)


def now() -> float:
    """Seconds on the running loop's clock (monotonic outside a loop), or the replayed moment."""
    replayed = _REPLAYED.get()
    if replayed is not None:
        return replayed
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def wall() -> float:
    """Seconds since the epoch (``time.time()``), or the replayed moment."""
    replayed = _REPLAYED.get()
    return time.time() if replayed is None else replayed


def advance(seconds: float) -> None:
    """In a replay, move the replayed moment on to ``seconds``, if that is later.

    A call answered from its record took time then: what the rule reads after
    it is the moment the answer was recorded (a scaler that notes when its
    change took effect notes the same time). Outside a replay, nothing.
    """
    replayed = _REPLAYED.get()
    if replayed is not None and seconds > replayed:
        _REPLAYED.set(seconds)


@contextmanager
def at(seconds: float) -> Iterator[None]:
    """Both clocks read ``seconds`` since the epoch inside this block (a replay's moment)."""
    token = _REPLAYED.set(seconds)
    try:
        yield
    finally:
        _REPLAYED.reset(token)

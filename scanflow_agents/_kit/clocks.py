"""One clock for timing logic: the running event loop's.

Cooldowns, rate limits, lease validity and key-value expiry measure intervals.
They read :func:`now`, the running loop's ``time()``, which is the monotonic
clock unless someone replaced it: tests of timing logic run on a fake loop clock
(looptime) that jumps to the next timer instead of sleeping, so a 30 s cooldown
is tested in milliseconds. Outside a running loop :func:`now` is the monotonic
clock, the same one a default loop reads.
"""

from __future__ import annotations

import asyncio
import time


def now() -> float:
    """Seconds on the running loop's clock (monotonic outside a loop)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()

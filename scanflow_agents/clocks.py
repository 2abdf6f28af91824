"""The time an agent's rules should read: it is the recorded time when they are replayed.

- :func:`now`: seconds on a monotonic clock, for intervals (cooldowns, how
  long since the last scale-out);
- :func:`wall`: seconds since the epoch, to compare with the times of
  reports and windows.

Both read the moment being replayed while ``scanflow replay`` runs a rule on a
recorded observation, so a rule that measures time with them decides as it
did then. ``time.time()`` and ``time.monotonic()`` read the machine's clock,
and a rule that uses them is named by ``scanflow replay --check-determinism``.
Tests of timing logic may run on a fake event-loop clock, which :func:`now`
follows.
"""

from __future__ import annotations

from scanflow_agents._kit.clocks import now, wall

__all__ = ["now", "wall"]

"""The namespace's action budget: at most so many actions per period, across every agent.

For the day a policy misbehaves at fleet scale: a rule that fires on every
replica, or a loop between two agents, would otherwise scale, redeploy and
retrain as fast as calls arrive. Cooldowns and rates guard one actuator of
one replica; this guards the namespace as a whole.

How it counts: fixed windows of ``period`` seconds aligned to the Unix epoch
(so every process, on any machine, agrees on the window from its wall
clock); each window is one key of a key-value bucket shared by the
namespace's agents, raised by one with a revision-checked write per action.
Two writers racing on a revision: one wins, the other reads again, so the
count is exact across replicas and agents. At a window's edge up to twice the
budget can pass within a short time (the end of one window and the start of
the next), the usual cost of fixed windows; a sliding count would need a
write per action per window it spans.

Only actions count: a read-only actuator, a dry run and a refused call take
nothing. When the bucket cannot be reached, the action is refused (the budget
cannot be checked), as an action that cannot be recorded is.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from scanflow_agents.transports.base import KvConflict, Transport, TransportError

# Revision conflicts tolerated for one claim before the call is answered busy:
# each conflict means another action of the namespace was counted meanwhile.
_ATTEMPTS = 20


class BudgetUnavailable(Exception):
    """The budget could not be checked (the bucket unreachable or too contended)."""


class ActionBudget:
    """At most ``limit`` actions per ``period`` seconds in one namespace.

    Args:
        transport: the connection whose key-value bucket holds the counts.
        bucket: the namespace's budget bucket.
        limit: actions allowed per window.
        period: seconds of one window.
        clock: wall-clock seconds since the epoch (shared by every process).
    """

    def __init__(
        self,
        transport: Transport,
        bucket: str,
        *,
        limit: int,
        period: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.bucket = bucket
        self.limit = limit
        self.period = period
        self.clock = clock

    async def claim(self) -> str | None:
        """Count one action in this window; why not, if the budget is spent.

        Raises:
            BudgetUnavailable: the count could not be read or written.
        """
        now = self.clock()
        window = int(now // self.period)
        key = f"window-{window}"
        try:
            # Two windows' worth of time-to-live: a count outlives its window,
            # and old windows leave the bucket by themselves.
            kv = await self.transport.key_value(self.bucket, ttl=2 * self.period)
            for _ in range(_ATTEMPTS):
                entry = await kv.get(key)
                used = int(entry.value) if entry is not None else 0
                if used >= self.limit:
                    opens = (window + 1) * self.period - now
                    return (
                        f"the namespace's action budget is spent ({self.limit} actions per "
                        f"{self.period:g} s, settings.agent.action_budget); the next window "
                        f"opens in {opens:.0f} s"
                    )
                try:
                    if entry is None:
                        await kv.create(key, b"1")
                    else:
                        await kv.update(key, str(used + 1).encode(), entry.revision)
                    return None
                except KvConflict:
                    continue  # another action was counted meanwhile: read again
        except (TransportError, ValueError) as exc:
            # NATS down or electing a leader; or a count that is not a number.
            raise BudgetUnavailable(f"cannot check the namespace's action budget: {exc}") from exc
        raise BudgetUnavailable(
            f"the namespace's action budget is contended: {_ATTEMPTS} writes lost their race"
        )

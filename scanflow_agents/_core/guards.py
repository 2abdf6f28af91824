"""Actuator guards: idempotency by message id, cooldown, and rate limits.

The idempotency cache lives in the agent process: a redelivered call (same
message id) reaching the same replica is answered from its first reply, and a
duplicate arriving while the first is still running waits for that run
instead of starting another. Replicas of one agent do not share the cache;
callers that retry should expect the retry to land on the same replica only
by chance (see the README's "Guarantees" section).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from scanflow_agents.actuators import ActuatorSpec
from scanflow_agents.messages import Reply


class IdempotencyCache:
    """Replies by call id, bounded in size and age."""

    def __init__(self, *, size: int, window: float) -> None:
        self.size = size
        self.window = window
        self._entries: OrderedDict[str, tuple[float, asyncio.Future[Reply]]] = OrderedDict()

    def lookup(self, key: str) -> asyncio.Future[Reply] | None:
        """The reply (or the pending run) of an earlier call with this id, if still kept."""
        self._expire()
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def begin(self, key: str) -> asyncio.Future[Reply]:
        """Register a call that starts now; its future is resolved with the reply."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._entries[key] = (time.monotonic(), future)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return future

    def _expire(self) -> None:
        horizon = time.monotonic() - self.window
        while self._entries:
            key, (started, future) = next(iter(self._entries.items()))
            if started >= horizon or not future.done():
                break
            del self._entries[key]


@dataclass
class Throttle:
    """Cooldown and rate limit of one actuator."""

    spec: ActuatorSpec
    last_success: float | None = None
    starts: deque[float] = field(default_factory=deque)

    def refusal(self, now: float) -> str | None:
        """Why a call now must be rejected, or ``None`` if it may run."""
        if self.spec.cooldown and self.last_success is not None:
            remaining = self.last_success + self.spec.cooldown - now
            if remaining > 0:
                return (
                    f"actuator '{self.spec.id}' is cooling down for {remaining:.3g} s more "
                    f"(cooldown {self.spec.cooldown:g} s after the last success)"
                )
        if self.spec.rate is not None:
            while self.starts and self.starts[0] <= now - self.spec.rate.period:
                self.starts.popleft()
            if len(self.starts) >= self.spec.rate.calls:
                retry = self.starts[0] + self.spec.rate.period - now
                return (
                    f"actuator '{self.spec.id}' is rate limited to {self.spec.rate}; "
                    f"next slot in {retry:.3g} s"
                )
        return None

    def started(self, now: float) -> None:
        if self.spec.rate is not None:
            self.starts.append(now)

    def succeeded(self, now: float) -> None:
        self.last_success = now

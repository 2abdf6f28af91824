"""Actuator guards: idempotency of keyed calls, cooldown, and rate limits.

A call whose id the caller chose (``Client.call(..., call_id=...)``) is keyed
on (agent, actuator, call id). Two stores honour the key:

- :class:`Replies`, in the process: the successful reply of a finished call
  and the run of a call still in progress, so a duplicate waits for the first
  run instead of starting another. Bounded in bytes and age.
- :class:`CallStore`, shared by every replica and by a restarted process: a
  JetStream key-value bucket per namespace. A run writes ``started`` (with the
  replica's instance and the time) before it executes and ``done`` (with the
  reply) after it succeeded; a failed or refused call leaves no key, so it may
  be retried with the same id and runs.

Only successful results are kept: a refusal, bad input, a timeout or a
failure is not an answer to replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from scanflow_agents.actuators import ActuatorSpec
from scanflow_agents.messages import Reply, utcnow
from scanflow_agents.transports.base import Transport

_KEY_TOKEN = re.compile(r"^[A-Za-z0-9_=-]{1,64}$")


def call_key(actuator: str, call_id: str) -> str:
    """The key of a call in its agent's store: readable when the id allows it, else hashed."""
    # A key-value key allows few characters, and a dot would add a level to the
    # subject the key lives under: any other id is hashed to a fixed, safe length.
    token = call_id if _KEY_TOKEN.match(call_id) else hashlib.sha256(call_id.encode()).hexdigest()
    return f"{actuator}.{token}"


class Replies:
    """The in-process side of idempotency: runs in progress and successful replies.

    Bounded by ``max_bytes`` (the encoded size of the kept replies) and
    ``window`` seconds; the oldest replies go first. Runs in progress are not
    counted: the in-flight limit bounds them.
    """

    def __init__(self, *, max_bytes: int, window: float) -> None:
        self.max_bytes = max_bytes
        self.window = window
        self.bytes = 0
        self._done: OrderedDict[str, tuple[float, Reply, int]] = OrderedDict()
        self._running: dict[str, asyncio.Future[Reply | None]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def lookup(self, key: str) -> Reply | asyncio.Future[Reply | None] | None:
        """The reply of a finished call, the run of one in progress, or ``None``."""
        # Expired lazily, on the way in: no timer task for a map that is read on
        # every keyed call anyway.
        self._expire()
        entry = self._done.get(key)
        if entry is not None:
            return entry[1]
        return self._running.get(key)

    def begin(self, key: str) -> None:
        """Register a run that starts now; duplicates wait for :meth:`finish`."""
        # A future, not a flag: duplicates await the first run's reply instead of
        # polling for it.
        self._running[key] = asyncio.get_running_loop().create_future()

    def finish(self, key: str, reply: Reply | None, size: int = 0) -> None:
        """End a run: keep ``reply`` (``size`` bytes) if given; waiting duplicates get it.

        ``None`` (a failure, a refusal) keeps nothing: a waiting duplicate runs itself.
        """
        future = self._running.pop(key, None)
        # Done already only if cancelled, by a waiter that awaited it without a
        # shield: setting a result then would raise in the run that finished.
        if future is not None and not future.done():
            future.set_result(reply)
        # A reply larger than the whole budget would evict every other reply and
        # still not fit; its duplicates run through the shared store instead.
        if reply is None or size > self.max_bytes:
            return
        self._done[key] = (time.monotonic(), reply, size)
        self.bytes += size
        # Insertion order is age order: the oldest replies go first.
        while self.bytes > self.max_bytes:
            _, (_, _, dropped) = self._done.popitem(last=False)
            self.bytes -= dropped

    def _expire(self) -> None:
        horizon = time.monotonic() - self.window
        while self._done:
            key, (kept, _, size) = next(iter(self._done.items()))
            # The first fresh entry ends the scan: everything after it is younger.
            if kept >= horizon:
                break
            del self._done[key]
            self.bytes -= size


@dataclass(frozen=True)
class Claim:
    """What the shared store held for a key that another run claimed first."""

    state: str  # "started" or "done"
    instance: str = ""
    started: str = ""
    reply: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def start_record(self) -> dict[str, Any]:
        return {"instance": self.instance, "started": self.started}


class CallStore:
    """The shared side of idempotency: a JetStream key-value bucket per namespace.

    Keys are ``<agent>.<actuator>.<call id or its digest>``; they expire after
    ``window`` seconds (the bucket's TTL).
    """

    def __init__(
        self, transport: Transport, bucket: str, *, agent: str, instance: str, window: float
    ) -> None:
        self.transport = transport
        self.bucket = bucket
        self.agent = agent
        self.instance = instance
        self.window = window
        self._configured = False

    def _key(self, key: str) -> str:
        return f"{self.agent}.{key}"

    async def _ready(self) -> None:
        if not self._configured:
            await self.transport.kv_configure(self.bucket, ttl=self.window)
            self._configured = True

    async def claim(self, key: str, call_id: str) -> Claim | None:
        """Write ``started`` for this run; ``None`` if it is ours, else what the store holds."""
        await self._ready()
        record = self._started(call_id)
        # Create fails if the key exists: of two replicas given the same call, exactly
        # one wins. `started` is written before the run, so a process that dies in it
        # leaves a trace the next delivery finds, rather than a free key that would run
        # the call twice.
        if await self.transport.kv_create(self.bucket, self._key(key), _dumps(record)):
            return None
        return await self.read(key)

    async def read(self, key: str) -> Claim | None:
        """What the store holds for ``key`` now (``None``: nothing, it may be claimed)."""
        await self._ready()
        data = await self.transport.kv_get(self.bucket, self._key(key))
        if not data:
            return None
        value = json.loads(data)
        return Claim(
            state=value.get("state", "started"),
            instance=value.get("instance", ""),
            started=value.get("started", ""),
            reply=value.get("reply"),
            raw=value,
        )

    async def take_over(self, key: str, call_id: str) -> None:
        """Claim a key another run left ``started`` (an ``idempotent=True`` actuator re-runs)."""
        await self.transport.kv_put(self.bucket, self._key(key), _dumps(self._started(call_id)))

    def _started(self, call_id: str) -> dict[str, Any]:
        """The ``started`` value of a run of ``call_id`` by this replica, from now."""
        return {
            "state": "started",
            "agent": self.agent,
            "call_id": call_id,
            "instance": self.instance,
            "started": utcnow().isoformat(),
        }

    async def done(self, key: str, call_id: str, reply: Reply, limit: int) -> None:
        """Write ``done`` with the reply (a digest instead when the reply cannot fit)."""
        value: dict[str, Any] = {
            "state": "done",
            "agent": self.agent,
            "call_id": call_id,
            "instance": self.instance,
            "reply": reply.model_dump(exclude_none=True),
        }
        # A value over the server's max payload would be refused and the key left
        # `started`: a later duplicate would then wait, or be answered in doubt, for a
        # call that succeeded. Keeping the size instead says it finished.
        data = _dumps(value)
        if len(data) > limit:
            value["reply"] = None
            value["reply_bytes"] = len(data)
            data = _dumps(value)
        await self.transport.kv_put(self.bucket, self._key(key), data)

    async def release(self, key: str) -> None:
        """Forget a run that did not succeed: a retry with the same id may run."""
        await self.transport.kv_delete(self.bucket, self._key(key))


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


@dataclass
class Throttle:
    """Cooldown and rate limit of one actuator."""

    spec: ActuatorSpec
    last_success: float | None = None
    starts: deque[float] = field(default_factory=deque)

    def refusal(self, now: float) -> str | None:
        """Why a call now must be rejected, or ``None`` if it may run."""
        if self.spec.cooldown and self.last_success is not None:
            # From the last success, not the last start: an actuator that failed may be
            # called again at once; one that acted must let its effect show first.
            remaining = self.last_success + self.spec.cooldown - now
            if remaining > 0:
                return (
                    f"actuator '{self.spec.id}' is cooling down for {remaining:.3g} s more "
                    f"(cooldown {self.spec.cooldown:g} s after the last success)"
                )
        if self.spec.rate is not None:
            # A sliding window over the starts of the last period, not fixed buckets: no
            # burst of twice the rate across a bucket's edge.
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

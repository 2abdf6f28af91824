"""Leadership among the replicas of one agent: a lease in the transport's key-value store.

Replicas of one agent share its calls (a queue group), but its sensors and
rules run on one replica only, the leader, so that a time sensor fires once
per tick and a rule sees each event once. The leader holds a lease: the key
``<agent>`` in the namespace's bucket ``scanflow-leases-<namespace>``, whose
entries expire ``lease_ttl`` seconds after their last write. The bucket is
shared by the namespace's agents, so its age limit is the longest ``lease_ttl``
any of them declared (limits are raised, never cut): a lease never vanishes
before its holder steps down, and a dead leader of an agent with a shorter
``lease_ttl`` is replaced only after that longest one.

- The holder renews the lease every third of the TTL with an update checked
  against the revision it last wrote; a failed check means someone else holds
  it now, and the holder steps down at once.
- The others read the key every second; once it has expired (or was released
  by a holder that stopped cleanly) they take it with a create, which the
  store grants to exactly one of them.
- A holder that cannot renew (the store is unreachable) steps down on its own
  clock before the store can let the key expire, so two replicas never both
  believe they lead, as long as their clocks run at the same rate.

The fencing token of a term is the revision at which its leader took the
lease. Revisions only grow, so a later leader always has a higher token; the
lease's value carries it (``{"holder": ..., "token": ...}``) so that a store
can refuse work fenced with an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from scanflow_agents._kit import clocks
from scanflow_agents.messages import utcnow
from scanflow_agents.transports.base import KeyValue, KvConflict, Transport, TransportError

logger = logging.getLogger("scanflow_agents.leading")

Change = Callable[[bool], Awaitable[None]]


def lease_bucket(namespace: str) -> str:
    """The key-value bucket that holds the leases of one namespace's agents."""
    return f"scanflow-leases-{namespace}"


class Leadership:
    """One replica's side of the lease of its agent.

    ``on_change(True)`` runs when this replica becomes the leader and
    ``on_change(False)`` when it stops being one, always in that alternation.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        namespace: str,
        agent: str,
        instance: str,
        ttl: float,
        on_change: Change | None = None,
    ) -> None:
        self.transport = transport
        self.bucket = lease_bucket(namespace)
        self.key = agent
        self.instance = instance
        self.ttl = ttl
        self.on_change = on_change
        # Step down this long before the store could let the key expire.
        self.margin = min(1.0, ttl / 5)
        # Three renewals per TTL: one lost renewal does not cost the lease. Followers
        # look at most every second, so a released lease is taken within about a second.
        self.renew_every = ttl / 3
        self.poll_every = min(1.0, ttl / 3)
        self.holder: str | None = None  # the leader we last saw (ourselves included)
        self.since: datetime | None = None
        self._kv: KeyValue | None = None
        self._token: int | None = None
        self._revision = 0
        self._valid_until = 0.0
        self._stopped = False
        self._renewed = True  # whether the last renewal went through

    @property
    def is_leader(self) -> bool:
        """Whether this replica leads now (checked against its own clock, not a cached flag)."""
        return self._token is not None and clocks.now() < self._valid_until

    @property
    def token(self) -> int | None:
        """The fencing token of the current term, or ``None`` when this replica does not lead."""
        return self._token if self.is_leader else None

    def summary(self) -> dict[str, Any]:
        """What heartbeats and descriptions say about leadership."""
        return {
            "leader": self.is_leader,
            "leader_instance": self.instance if self.is_leader else self.holder,
            "lease_token": self.token,
        }

    async def confirm(self) -> bool:
        """Whether the store still names this replica's term as the lease's holder.

        A read, not a guess: use it before an action that must not run on a
        replica that lost the lease without noticing yet.
        """
        token = self.token
        if token is None:
            return False
        # Unreachable counts as no: an action that needs the lease is better skipped
        # than run by two replicas.
        try:
            entry = await (await self._bucket()).get(self.key)
        except TransportError:
            return False
        if entry is None:
            return False
        lease = _parse(entry.value)
        return lease.get("holder") == self.instance and lease.get("token") == token

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.transport.key_value(self.bucket, ttl=self.ttl)
        return self._kv

    async def start(self) -> None:
        """Try once to take the lease, so a lone replica leads from its first moment."""
        await self._attempt()

    async def run(self) -> None:
        """Renew while leading, watch for a free lease otherwise; runs until cancelled."""
        while True:
            if self._token is not None:
                # Wake in time to renew (sooner after a failed renewal), and no
                # later than the moment to step down.
                every = self.renew_every if self._renewed else self.poll_every
                await asyncio.sleep(min(every, max(self._valid_until - clocks.now(), 0)))
                self._renewed = await self._renew()
            else:
                await asyncio.sleep(self.poll_every)
                await self._attempt()

    async def stop(self) -> None:
        """Step down for good and release the lease, so another replica takes over now."""
        self._stopped = True
        if self._token is None:
            return
        # The delete is checked against our last revision: a lease another replica
        # has taken meanwhile is not deleted.
        revision = self._revision
        await self._lose("this replica is stopping", level=logging.INFO)
        try:
            await (await self._bucket()).delete(self.key, revision=revision)
        except TransportError as exc:
            logger.info("lease of agent %r not released (%s); it expires", self.key, exc)

    async def _attempt(self) -> None:
        if self._stopped:
            return
        try:
            kv = await self._bucket()
            entry = await kv.get(self.key)
            if entry is not None:
                self.holder = _parse(entry.value).get("holder")
                if self.holder != self.instance:
                    return
                # Ours (a renewal whose answer was lost): carry on from it.
                started, token = clocks.now(), _parse(entry.value).get("token")
                revision = await kv.update(self.key, entry.value, entry.revision)
            else:
                # The clock is read before the request: the store counts the TTL from its
                # write, after we asked, so validity counted from here errs on the safe side.
                started, self.since = clocks.now(), utcnow()
                token = await kv.create(self.key, self._value(None))
                # Write the token into the lease, so fences can read it.
                revision = await kv.update(self.key, self._value(token), token)
        except KvConflict:
            return  # another replica was faster
        except TransportError as exc:
            logger.debug("agent %r could not try the lease: %s", self.key, exc)
            return
        if self._stopped:  # stop() came while we were taking it: give it back
            with contextlib.suppress(TransportError):
                await kv.delete(self.key, revision=revision)
            return
        self._token, self._revision = int(token or revision), revision
        self._valid_until = started + self.ttl - self.margin
        self.holder = self.instance
        logger.info(
            "replica %s leads agent %r (lease token %d)", self.instance, self.key, self._token
        )
        await self._notify(True)

    async def _renew(self) -> bool:
        """Renew the lease; ``False`` if the store could not be reached (try again soon)."""
        if self._token is None:
            return True
        if clocks.now() >= self._valid_until:
            await self._lose(f"the lease could not be renewed within {self.ttl:g} s")
            return True
        started = clocks.now()
        try:
            kv = await self._bucket()
            # Given only until the lease runs out on our clock: a renewal that succeeds
            # later must not extend a term this replica has already ended.
            async with asyncio.timeout(max(self._valid_until - started, 0.01)):
                self._revision = await kv.update(self.key, self._value(self._token), self._revision)
        except KvConflict:
            # A renewal that timed out here may still have been written (a slow
            # server, a stream electing its leader): the lease then holds our own
            # later revision, which is no reason to step down.
            if await self._still_ours(kv):
                return True
            await self._lose("another replica holds the lease")
            return True
        except (TransportError, TimeoutError) as exc:
            logger.warning("agent %r could not renew its lease: %s", self.key, exc)
            return False  # try again; step down once the lease may have expired
        self._valid_until = started + self.ttl - self.margin
        return True

    async def _still_ours(self, kv: KeyValue) -> bool:
        """Whether the lease holds this replica's term (adopting its revision if so)."""
        try:
            entry = await kv.get(self.key)
        except TransportError:
            return False  # cannot tell: step down, the safe side
        if entry is None:
            return False
        held = _parse(entry.value)
        if held.get("holder") != self.instance or held.get("token") != self._token:
            return False
        self._revision = entry.revision  # validity is not extended: the next renewal does
        return True

    async def _lose(self, reason: str, *, level: int = logging.WARNING) -> None:
        if self._token is None:
            return
        logger.log(
            level, "replica %s no longer leads agent %r: %s", self.instance, self.key, reason
        )
        # Cleared before on_change runs: while the consumers stop, is_leader is
        # already false, so no timed sensor starts on a replica that no longer leads.
        self._token = None
        self.holder = None
        await self._notify(False)

    async def _notify(self, leading: bool) -> None:
        if self.on_change is None:
            return
        # Logged, not raised: the lease loop must go on, or this replica would hold a
        # lease that nobody renews or gives back.
        try:
            await self.on_change(leading)
        except Exception:
            logger.exception("agent %r: reacting to a change of leadership failed", self.key)

    def _value(self, token: int | None) -> bytes:
        since = (self.since or utcnow()).isoformat()
        lease = {"holder": self.instance, "token": token, "since": since}
        return json.dumps(lease).encode()


def _parse(value: bytes) -> dict[str, Any]:
    try:
        lease = json.loads(value)
    except ValueError:
        return {}
    return lease if isinstance(lease, dict) else {}

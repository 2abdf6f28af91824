"""Approvals kept in the namespace's key-value bucket, so they outlive their holder.

A replica that holds a decision for a person keeps it as a
:class:`~scanflow_agents.messages.KeptApproval` under ``<agent>.<id>`` in the
bucket :attr:`~scanflow_agents.subjects.Subjects.approvals_bucket`, naming
itself as the holder, and deletes it once decided or expired. At a clean stop
it releases what it holds (the holder becomes none). Another replica of the
agent, or the same agent restarted, adopts what nobody holds any more: the
released entries, and those whose holder answers no discovery (it died). An
adoption is a write checked against the entry's revision, so when several
replicas adopt at once each entry goes to exactly one.

:class:`ApprovalKeeper` does the bucket work for one replica; the
:class:`~scanflow_agents._core.approvals.Approvals` it serves decides when.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from scanflow_agents.errors import BadMessage
from scanflow_agents.messages import KeptApproval
from scanflow_agents.transports.base import KeyValue, KvConflict, KvEntry, Transport

logger = logging.getLogger("scanflow_agents.keeping")

Alive = Callable[[str], Awaitable[bool]]
"""Whether the replica with this instance id answers discovery now."""


class ApprovalKeeper:
    """Keeps one replica's approvals in the namespace's approvals bucket.

    Args:
        transport: the agent's connection (the bucket gets ``nats.replicas`` copies).
        bucket: the bucket's name.
        agent: the agent whose approvals these are (the first token of each key).
        instance: this replica, named as the holder of what it keeps.
    """

    def __init__(self, transport: Transport, bucket: str, *, agent: str, instance: str) -> None:
        self.transport = transport
        self.bucket = bucket
        self.agent = agent
        self.instance = instance

    async def _kv(self) -> KeyValue:
        return await self.transport.key_value(self.bucket)

    def _key(self, approval_id: str) -> str:
        return f"{self.agent}.{approval_id}"

    async def keep(self, kept: KeptApproval) -> None:
        """Store an approval this replica holds (or changed: marked overdue)."""
        await (await self._kv()).put(self._key(kept.id), kept.model_dump_json().encode())

    async def forget(self, approval_id: str) -> None:
        """Delete a decided or expired approval."""
        await (await self._kv()).delete(self._key(approval_id))

    async def release(self) -> None:
        """Say that this replica holds nothing any more (it is stopping cleanly)."""
        kv = await self._kv()
        for entry, kept in await self._read(kv):
            if kept.holder == self.instance:
                released = kept.model_copy(update={"holder": None})
                try:
                    await kv.update(entry.key, released.model_dump_json().encode(), entry.revision)
                except KvConflict:
                    continue  # decided or adopted meanwhile

    async def adopt(self, alive: Alive | None = None) -> list[KeptApproval]:
        """Take over what nobody holds: released entries and, with ``alive``, a dead holder's.

        Returns the approvals this replica holds now that it did not before.
        """
        kv = await self._kv()
        checked: dict[str, bool] = {}
        adopted = []
        for entry, kept in await self._read(kv):
            holder = kept.holder
            if holder == self.instance:
                continue
            if holder is not None:
                if alive is None:
                    continue
                if holder not in checked:
                    checked[holder] = await alive(holder)
                if checked[holder]:
                    continue
            mine = kept.model_copy(update={"holder": self.instance})
            try:
                await kv.update(entry.key, mine.model_dump_json().encode(), entry.revision)
            except KvConflict:
                continue  # another replica adopted it first, or it was decided
            logger.info(
                "agent %r: replica %s took over approval %s (%s) from %s",
                self.agent, self.instance, kept.id, kept.summary, holder or "a stopped replica",
            )  # fmt: skip
            adopted.append(mine)
        return adopted

    async def _read(self, kv: KeyValue) -> list[tuple[KvEntry, KeptApproval]]:
        found: list[tuple[KvEntry, KeptApproval]] = []
        for entry in await kv.entries(self.agent):
            try:
                value = json.loads(entry.value)
            except ValueError:
                value = None  # read() names it: not an object
            try:
                found.append((entry, KeptApproval.read(value, agent=self.agent)))
            except BadMessage as exc:
                logger.warning("agent %r: skipped a kept approval: %s", self.agent, exc)
        return found

"""The operator's side of control messages: run a sensor, pause, dry-run, approve.

What the console and the one-shot commands send (the agent side is the core's
``_core/controlling.py``). Ops that every replica must apply are broadcast and
the answers of all replicas gathered until every known replica has answered
(or ``wait`` seconds passed); replicas not known yet are counted by discovery
first. ``run-sensor`` goes to one replica.

    async with Client.connect(settings) as client:
        controls = Controls(client)
        await controls.pause("checker", sensor="drift", reason="noisy")
        for approval in await controls.approvals():
            await controls.approve(approval.agent, approval.id, reason="looks right")
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from scanflow_agents.clients import Client, Unreadable, reply_result, warn_unreadable
from scanflow_agents.errors import BadMessage, CallError, CallTimeout, NotFound, Unavailable
from scanflow_agents.messages import (
    ApprovalListing,
    Envelope,
    Freeze,
    PendingApproval,
    Reply,
    utcnow,
)
from scanflow_agents.transports.base import NoResponders, RequestTimeout


class Controls:
    """Sends control messages to the agents of one namespace through a :class:`Client`.

    Args:
        client: the connection (its ``name`` is recorded as the caller).
        wait: seconds to collect the answers of every replica of an agent, at most.
        replicas: how many replicas of each agent are known to run (from
            heartbeats or discovery); an op to a known agent returns as soon as
            that many have answered instead of waiting ``wait`` seconds.
    """

    def __init__(
        self, client: Client, *, wait: float = 1.0, replicas: Mapping[str, int] | None = None
    ) -> None:
        self.client = client
        self.wait = wait
        self.replicas: dict[str, int] = dict(replicas or {})

    async def run_sensor(self, agent: str, sensor: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Run a sensor now on one replica; the observation (if any) and its chain id."""
        envelope = self._envelope(agent, "run-sensor", {"sensor": sensor})
        subject = self.client.subjects.control(agent, "run-sensor")
        try:
            data = await self.client.transport.request(subject, envelope.encode(), timeout)
        except NoResponders:
            raise self._absent(agent) from None
        except RequestTimeout:
            raise CallTimeout(
                f"agent '{agent}' did not finish sensor '{sensor}' within {timeout:g} s"
            ) from None
        return dict(reply_result(data))

    async def pause(
        self, agent: str, sensor: str | None = None, *, reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Pause an agent (sensors skip, calls refused) or one sensor, on every replica."""
        params: dict[str, Any] = {"sensor": sensor} if sensor else {}
        if reason:
            params["reason"] = reason
        return await self._all(agent, "pause", params)

    async def resume(self, agent: str, sensor: str | None = None) -> list[dict[str, Any]]:
        """Undo :meth:`pause` on every replica."""
        return await self._all(agent, "resume", {"sensor": sensor} if sensor else {})

    async def dry_run(self, agent: str, on: bool) -> list[dict[str, Any]]:
        """Switch an agent's dry-run mode (actuators validate and record, but do not act)."""
        return await self._all(agent, "dry-run", {"on": on})

    async def freeze(self, on: bool = True, *, reason: str | None = None) -> list[dict[str, Any]]:
        """Freeze (``on``) or thaw every actuator of the namespace: every agent, every replica.

        The switch is kept in the namespace's switches bucket first, so a
        replica that starts later starts frozen, then sent to the running ones.
        Returns the answers of the replicas that answered (none if none runs).
        """
        freeze = Freeze(on=on, by=self.client.name, at=utcnow(), reason=reason)
        subjects, transport = self.client.subjects, self.client.transport
        kept = freeze.model_dump_json().encode()
        await transport.kv_put(subjects.switches_bucket, "freeze", kept)
        envelope = Envelope(
            kind="call",
            source=self.client.name,
            target="namespace.freeze",
            payload=freeze.model_dump(mode="json"),
        )
        if not self.replicas:
            await self.discover()  # every replica answers: return once all did
        expect = sum(self.replicas.values()) or None
        raw = await transport.gather(
            subjects.namespace_control("freeze"), envelope.encode(), self.wait, expect=expect
        )
        return _results(_replies(raw))

    async def approvals(
        self, agent: str | None = None, *, unreadable: Unreadable | None = None
    ) -> list[PendingApproval]:
        """Decisions waiting for a person: of one agent, or of every running agent.

        Args:
            agent: only this agent's (default: every agent discovery finds).
            unreadable: told of each replica's listing skipped because this
                version cannot read it (default: logged as a warning).
        """
        if agent is None:
            if not self.replicas:
                await self.discover(unreadable=unreadable)
            found = await asyncio.gather(
                *(self._listing(name, unreadable) for name in sorted(self.replicas))
            )
            return [item for listing in found for item in listing]
        waiting: list[PendingApproval] = []
        for answer in await self._all(agent, "approvals", {}):
            try:
                waiting.extend(ApprovalListing.read(answer, agent=agent).approvals)
            except BadMessage as exc:
                (unreadable or warn_unreadable)(exc)
        return waiting

    async def discover(self, *, unreadable: Unreadable | None = None) -> dict[str, int]:
        """Count the running replicas of every agent.

        Returns as soon as every replica that the kept last states say runs has
        answered; ``wait / 2`` seconds at most (one that died without a word
        is waited for that long).
        """
        kept = await self.client.last_states(unreadable=unreadable)
        running = sum(1 for beat in kept if beat.state != "stopped")
        found = await self.client.discover(
            wait=self.wait / 2, expect=running or None, unreadable=unreadable
        )
        self.replicas = dict(Counter(beat.agent for beat in found))
        return self.replicas

    async def approve(self, agent: str, approval_id: str, *, reason: str) -> dict[str, Any]:
        """Approve a waiting decision; the reason is recorded in the audit trail."""
        return await self._decide(agent, "approve", approval_id, reason)

    async def reject(self, agent: str, approval_id: str, *, reason: str) -> dict[str, Any]:
        """Reject a waiting decision; the reason is recorded in the audit trail."""
        return await self._decide(agent, "reject", approval_id, reason)

    async def _listing(self, agent: str, unreadable: Unreadable | None) -> list[PendingApproval]:
        try:
            return await self.approvals(agent, unreadable=unreadable)
        except Unavailable:
            return []  # stopped between discovery and the question

    async def _decide(self, agent: str, op: str, approval_id: str, reason: str) -> dict[str, Any]:
        replies = await self._gather(agent, op, {"id": approval_id, "reason": reason})
        # Only the replica that holds the approval acts; the others say not_found.
        for reply in replies:
            if reply.ok:
                return dict(reply.result)
        errors = [r.error for r in replies if r.error is not None]
        real = [e for e in errors if e.code != NotFound.code]
        error = real[0] if real else errors[0]
        if not real:
            raise NotFound(f"no approval {approval_id!r} waits on agent '{agent}'")
        raise CallError.from_code(error.code, error.message, field=error.field)

    async def _all(self, agent: str, op: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return _results(await self._gather(agent, op, params))

    async def _gather(self, agent: str, op: str, params: dict[str, Any]) -> list[Reply]:
        if agent not in self.replicas:
            # Known replicas let the op return once all answered, not after `wait`.
            await self.discover()
        envelope = self._envelope(agent, op, params)
        subject = self.client.subjects.control(agent, op)
        raw = await self.client.transport.gather(
            subject, envelope.encode(), self.wait, expect=self.replicas.get(agent)
        )
        replies = _replies(raw)
        if not replies:
            raise self._absent(agent)
        return replies

    def _envelope(self, agent: str, op: str, params: dict[str, Any]) -> Envelope:
        return Envelope(
            kind="call", source=self.client.name, target=f"{agent}.{op}", payload=params
        )

    def _absent(self, agent: str) -> Unavailable:
        namespace = self.client.subjects.namespace
        return Unavailable(f"no agent '{agent}' is running in namespace '{namespace}'")


def _replies(raw: list[bytes]) -> list[Reply]:
    replies = []
    for data in raw:
        try:
            replies.append(Reply.model_validate(Envelope.decode(data).payload))
        except ValidationError:
            continue  # a foreign responder must not hide the agent's answers
    return replies


def _results(replies: list[Reply]) -> list[dict[str, Any]]:
    """Each replica's result, by instance; the first error raised."""
    results = []
    for reply in replies:
        if reply.error is not None:
            error = reply.error
            raise CallError.from_code(error.code, error.message, field=error.field)
        results.append(dict(reply.result))
    return sorted(results, key=lambda result: str(result.get("instance")))

"""Decisions held for a person: held by a handler, decided by an operator or by their timeout.

An agent holds a decision with ``self.approvals.hold(...)``; operators list,
approve and reject it with control messages (``controlling.py`` takes it
from here and calls :meth:`Approvals.carry_out`). Whoever decides takes the
approval out of :class:`Approvals` first, so it is carried out or dropped
once.

The timeout policy is chosen per hold (``on_timeout``) and applied here, not
by the agent:

- ``reject`` (the default): what nobody approved is not done; ``on_reject``
  runs, as when a person rejects it;
- ``approve``: it is carried out as if approved;
- ``hold``: it keeps waiting for a person, marked as overdue.

Either way the expiry is recorded (``control.<agent>.expired``, with the
policy) in the chain of the decision that held it, so the audit trail says
that nobody decided. :meth:`Approvals.run` drives expiry: one guarded endless
task of the runtime that sleeps until the next deadline on the event loop's
clock (``_kit/clocks.py``), instead of a sensor polling every second; a test
on a fake loop clock sees a ten-minute timeout pass at once.

Given an :class:`~scanflow_agents._core.keeping.ApprovalKeeper`, what a
replica holds is also kept in the namespace's approvals bucket, so it
outlives the replica: a restarted one (or another replica) adopts it and
lists, decides and expires it. What approving does survives only as a
:class:`~scanflow_agents.messages.Call` (an actuator and its parameters,
sent with an idempotency key derived from the approval): a decision held
with a function can still be rejected after its holder is gone, not carried
out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from scanflow_agents import chains
from scanflow_agents._core.keeping import Alive, ApprovalKeeper
from scanflow_agents._core.ports import Call as CallPort
from scanflow_agents._core.ports import Record, Spawn
from scanflow_agents._kit import clocks
from scanflow_agents.errors import NotFound, Rejected
from scanflow_agents.messages import (
    ApprovalListing,
    Call,
    Envelope,
    KeptApproval,
    PendingApproval,
    new_id,
    utcnow,
)

logger = logging.getLogger("scanflow_agents.approvals")

Decide = Callable[[str], Awaitable[Any]]
OnTimeout = Literal["reject", "approve", "hold"]
Verdict = Literal["approve", "reject"]


@dataclass
class Approval:
    """A decision waiting for a person.

    ``on_approve`` and ``on_reject`` are called with the person's reason (or
    the timeout's); what ``on_approve`` returns is recorded as the outcome.
    ``created_monotonic`` is on the event loop's clock, as deadlines are.
    """

    id: str
    kind: str
    summary: str
    on_approve: Decide = field(repr=False)
    on_reject: Decide | None = field(default=None, repr=False)
    details: dict[str, Any] = field(default_factory=dict)
    correlation_id: str = field(default_factory=new_id)
    timeout: float | None = None
    on_timeout: OnTimeout = "reject"
    overdue: bool = False  # its timeout passed and its policy is to hold it
    created: datetime = field(default_factory=utcnow)
    created_monotonic: float = field(default_factory=clocks.now)
    # The calls that carry it out, when it was held with calls: what is kept.
    approve_call: Call | None = None
    reject_call: Call | None = None
    # Why approving cannot be carried out here (held by code in a replica now gone).
    lost: str | None = None

    def kept(self, agent: str, holder: str) -> KeptApproval:
        """What the approvals bucket keeps of it."""
        return KeptApproval(
            **self._shown(agent),
            timeout=self.timeout,
            on_timeout=self.on_timeout,
            overdue=self.overdue,
            holder=holder,
            approve=self.approve_call,
            reject=self.reject_call,
        )

    def listing(self, agent: str, now: float) -> PendingApproval:
        waited = now - self.created_monotonic
        expires = None if self.timeout is None else round(max(0.0, self.timeout - waited), 1)
        return PendingApproval(
            **self._shown(agent), waiting_s=round(waited, 1), expires_in_s=expires
        )

    def _shown(self, agent: str) -> dict[str, Any]:
        # What people see of it, in a listing and in the bucket alike.
        return {
            "id": self.id,
            "agent": agent,
            "kind": self.kind,
            "summary": self.summary,
            "details": self.details,
            "correlation_id": self.correlation_id,
            "created": self.created,
        }

    def deadline(self) -> float | None:
        """When its timeout policy applies, on the loop's clock; ``None``: never (again)."""
        if self.timeout is None or self.overdue:
            return None
        return self.created_monotonic + self.timeout


class Approvals:
    """The approvals one agent replica holds, by id, and their expiry.

    Args:
        agent: the agent's name, in listings and logs.
        record: records expiries and outcomes (the runtime's recorder).
        spawn: starts the task that carries a decision out, tracked so that
            a stopping agent waits for it.
        keeper: keeps what this replica holds in the approvals bucket (none:
            approvals live in memory only).
        call: sends the calls that carry out approvals held with a :class:`Call`.
        alive: whether another replica answers discovery (to adopt a dead one's).
        adopt_every: seconds between two looks for approvals nobody holds.
    """

    def __init__(
        self,
        agent: str,
        *,
        record: Record,
        spawn: Spawn,
        instance: str = "",
        keeper: ApprovalKeeper | None = None,
        call: CallPort | None = None,
        alive: Alive | None = None,
        adopt_every: float = 10.0,
    ) -> None:
        self.agent = agent
        self.instance = instance  # the replica, in every listing
        self.record = record
        self.spawn = spawn
        self.keeper = keeper
        self.call = call
        self.alive = alive
        self.adopt_every = adopt_every
        self._pending: dict[str, Approval] = {}
        self._changed = asyncio.Event()  # a hold may bring the next deadline forward

    def __contains__(self, approval_id: object) -> bool:
        return approval_id in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def hold(
        self,
        kind: str,
        summary: str,
        on_approve: Decide | Call,
        *,
        on_reject: Decide | Call | None = None,
        details: dict[str, Any] | None = None,
        approval_id: str | None = None,
        timeout: float | None = None,
        on_timeout: OnTimeout = "reject",
    ) -> Approval:
        """Hold a decision for a person; it belongs to the chain being handled now.

        Args:
            kind: what is waiting (``retrain``, ``promote``...), shown to people.
            summary: one line saying what approving would do, and why.
            on_approve: carries the decision out: a function called with the
                reason, or a :class:`Call` to an actuator (which any replica can
                send, also after this one restarted).
            on_reject: undoes any reservation: a function or a :class:`Call`.
            details: evidence shown with the approval.
            approval_id: the id people type (default: 8 random hex digits).
            timeout: seconds after which ``on_timeout`` applies (``None``: never).
            on_timeout: ``reject`` (default), ``approve`` or ``hold`` (keep waiting).
        """
        correlation, _ = chains.current()
        held_id = approval_id or secrets.token_hex(4)  # short: people type it
        approval = Approval(
            id=held_id,
            kind=kind,
            summary=summary,
            on_approve=self._handler(on_approve, held_id, "approve"),
            on_reject=None if on_reject is None else self._handler(on_reject, held_id, "reject"),
            details=dict(details or {}),
            correlation_id=correlation,
            timeout=timeout,
            on_timeout=on_timeout,
            approve_call=on_approve if isinstance(on_approve, Call) else None,
            reject_call=on_reject if isinstance(on_reject, Call) else None,
        )
        self._pending[approval.id] = approval
        # Only a hold with a timeout can bring the next deadline forward.
        if timeout is not None:
            self._changed.set()
        self._keep(approval)
        return approval

    def _handler(self, handler: Decide | Call, approval_id: str, verdict: Verdict) -> Decide:
        if not isinstance(handler, Call):
            return handler
        call, send = handler, self.call

        async def carry_out(reason: str) -> Any:
            if send is None:
                raise RuntimeError(f"agent '{self.agent}' has no way to send {call.actuator!r}")
            # Keyed by the approval: sent again (a replica that died half-way,
            # then adopted), it is answered from the first reply, not acted twice.
            return await send(
                call.agent, call.actuator, dict(call.params),
                timeout=call.timeout, call_id=f"approval-{approval_id}-{verdict}",
            )  # fmt: skip

        return carry_out

    def _keep(self, approval: Approval) -> None:
        # In a tracked task: hold() is called from handlers that do not await it.
        if self.keeper is not None:
            self.spawn(self._store(approval), f"keep:{approval.id}")

    async def _store(self, approval: Approval) -> None:
        assert self.keeper is not None
        try:
            await self.keeper.keep(approval.kept(self.agent, self.instance))
        except Exception as exc:  # it still waits here; only a restart would lose it
            logger.warning(
                "agent %r: approval %s is held but not kept: %s", self.agent, approval.id, exc
            )

    async def forget(self, approval: Approval) -> None:
        """Delete a decided or expired approval from the bucket (a failure is logged)."""
        if self.keeper is None:
            return
        try:
            await self.keeper.forget(approval.id)
        except Exception as exc:
            logger.warning(
                "agent %r: approval %s is decided but still kept: %s", self.agent, approval.id, exc
            )

    async def release(self) -> None:
        """Leave what this replica holds to the next (a clean stop); a failure is logged."""
        if self.keeper is None or not self._pending:
            return
        try:
            await self.keeper.release()
        except Exception as exc:
            logger.warning("agent %r: could not release its approvals: %s", self.agent, exc)

    async def adopt(self, *, dead_holders: bool = False) -> None:
        """Hold what no replica holds any more: released approvals, and a dead holder's.

        Args:
            dead_holders: also ask whether each other holder still answers
                discovery (a quarter of a second per holder).
        """
        if self.keeper is None:
            return
        try:
            adopted = await self.keeper.adopt(self.alive if dead_holders else None)
        except Exception as exc:
            logger.warning("agent %r: could not read the kept approvals: %s", self.agent, exc)
            return
        for kept in adopted:
            if kept.id not in self._pending:
                self._pending[kept.id] = self._restored(kept)
                self._changed.set()

    def _restored(self, kept: KeptApproval) -> Approval:
        waited = max(0.0, (utcnow() - kept.created).total_seconds())
        lost = None
        if kept.approve is None:
            lost = (
                f"approval {kept.id} of agent '{self.agent}' was held by a function in a replica "
                "that is gone: it can be rejected, not carried out (hold it with a Call to an "
                "actuator to carry it out after a restart)"
            )

        async def cannot(reason: str) -> Any:
            raise Rejected(lost or "")

        return Approval(
            id=kept.id,
            kind=kept.kind,
            summary=kept.summary,
            on_approve=cannot
            if kept.approve is None
            else self._handler(kept.approve, kept.id, "approve"),
            on_reject=None
            if kept.reject is None
            else self._handler(kept.reject, kept.id, "reject"),
            details=dict(kept.details),
            correlation_id=kept.correlation_id,
            timeout=kept.timeout,
            on_timeout=_policy(kept.on_timeout),
            overdue=kept.overdue,
            created=kept.created,
            created_monotonic=clocks.now() - waited,
            approve_call=kept.approve,
            reject_call=kept.reject,
            lost=lost,
        )

    def take(self, approval_id: str, verdict: Verdict | None = None) -> Approval:
        """Remove a waiting approval to decide it; whoever takes it decides it, once.

        Raises:
            NotFound: nothing by that id waits here.
            Rejected: ``verdict`` is ``approve`` and it cannot be carried out
                here (it stays waiting, to be rejected).
        """
        approval = self._pending.get(approval_id)
        if approval is None:
            waiting = ", ".join(self._pending) or "none"
            raise NotFound(f"no approval {approval_id!r} is waiting (waiting: {waiting})")
        if verdict == "approve" and approval.lost:
            raise Rejected(approval.lost)
        return self._pending.pop(approval_id)

    def listing(self) -> ApprovalListing:
        now = clocks.now()
        return ApprovalListing(
            instance=self.instance,
            approvals=tuple(a.listing(self.agent, now) for a in self._pending.values()),
        )

    def carry_out(self, verdict: Verdict, approval: Approval, reason: str, cause: Envelope) -> None:
        """Run the approval's handler for ``verdict`` in a tracked task, if it has one.

        In a task rather than awaited: a plan may run for minutes, and the
        operator's answer (or the timer) must not wait for it.
        """
        handler = approval.on_approve if verdict == "approve" else approval.on_reject
        if handler is not None:
            self.spawn(
                self._carry_out(verdict, approval, handler, reason, cause),
                f"{verdict}:{approval.id}",
            )

    async def _carry_out(
        self, verdict: Verdict, approval: Approval, handler: Decide, reason: str, cause: Envelope
    ) -> None:
        # Runs in the approval's chain, so what the plan does reads back with it.
        with chains.within(approval.correlation_id, cause.id):
            try:
                outcome = {"ok": True, "result": await handler(reason)}
            except asyncio.CancelledError:
                # Only a stop that waited its deadline cancels a plan: it ends
                # unrecorded, as every handler cancelled then does.
                raise
            except Exception as exc:
                logger.exception("%s of %s on agent %r failed", verdict, approval.kind, self.agent)
                outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            await self.record(
                "control",
                f"{verdict}-done",
                {"approval": approval.id, "kind": approval.kind, **outcome},
                correlation_id=approval.correlation_id,
                causation_id=cause.id,
            )

    # -- expiry ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply each approval's timeout policy when its deadline passes; until cancelled.

        With a keeper, it first adopts what nobody holds, and looks again every
        ``adopt_every`` seconds (a holder may have died since).
        """
        await self.adopt(dead_holders=True)
        next_look = clocks.now() + self.adopt_every
        while True:
            if self.keeper is not None and clocks.now() >= next_look:
                await self.adopt(dead_holders=True)
                next_look = clocks.now() + self.adopt_every
            # Cleared before the deadlines are read: a hold from here on sets it
            # again, so an earlier deadline it brings is not slept through.
            self._changed.clear()
            now = clocks.now()
            for approval in [a for a in self._pending.values() if _passed(a, now)]:
                try:
                    await self._expire(approval)
                except Exception:  # one approval's record must not stop the others' timer
                    logger.exception(
                        "agent %r: expiring approval %s failed", self.agent, approval.id
                    )
            # Read after the expiries above: an approval marked overdue has no deadline
            # any more, and one decided meanwhile is gone.
            deadlines = [d for a in self._pending.values() if (d := a.deadline()) is not None]
            if self.keeper is not None:
                deadlines.append(next_look)
            delay = max(0.0, min(deadlines) - clocks.now()) if deadlines else None
            # One sleep until the next deadline (or a new hold), on the loop's
            # clock like the deadlines: no polling, and a fake clock jumps to it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._changed.wait()

    async def _expire(self, approval: Approval) -> None:
        policy = approval.on_timeout
        if policy == "approve" and approval.lost:
            policy = "reject"  # what cannot be carried out here is not done
        # Taken (or marked) before the first await: an operator deciding it at
        # this moment finds it gone, so it is carried out or dropped once.
        if policy == "hold":
            approval.overdue = True
            self._keep(approval)
        elif self._pending.pop(approval.id, None) is None:
            return  # decided by a person meanwhile
        else:
            await self.forget(approval)
        reason = f"nobody decided within {approval.timeout:g} s"
        logger.warning(
            "agent %r: approval %s (%s) timed out; policy: %s",
            self.agent,
            approval.id,
            approval.summary,
            policy,
        )
        # In the chain of the decision that held it, as a person's decision is.
        event = await self.record(
            "control",
            "expired",
            {
                "approval": approval.id,
                "kind": approval.kind,
                "summary": approval.summary,
                "policy": policy,
                "reason": reason,
            },
            correlation_id=approval.correlation_id,
        )
        if policy != "hold":
            self.carry_out(policy, approval, reason, event)


def _passed(approval: Approval, now: float) -> bool:
    deadline = approval.deadline()
    return deadline is not None and now >= deadline


def _policy(value: str) -> OnTimeout:
    # A kept policy this version does not know falls back to the default.
    if value == "approve":
        return "approve"
    return "hold" if value == "hold" else "reject"

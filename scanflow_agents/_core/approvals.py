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
from scanflow_agents._core.ports import Record, Spawn
from scanflow_agents._kit import clocks
from scanflow_agents.errors import NotFound
from scanflow_agents.messages import (
    ApprovalListing,
    Envelope,
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

    def listing(self, agent: str, now: float) -> PendingApproval:
        waited = now - self.created_monotonic
        expires = None if self.timeout is None else round(max(0.0, self.timeout - waited), 1)
        return PendingApproval(
            id=self.id,
            agent=agent,
            kind=self.kind,
            summary=self.summary,
            details=self.details,
            correlation_id=self.correlation_id,
            created=self.created,
            waiting_s=round(waited, 1),
            expires_in_s=expires,
        )

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
    """

    def __init__(self, agent: str, *, record: Record, spawn: Spawn, instance: str = "") -> None:
        self.agent = agent
        self.instance = instance  # the replica, in every listing
        self.record = record
        self.spawn = spawn
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
        on_approve: Decide,
        *,
        on_reject: Decide | None = None,
        details: dict[str, Any] | None = None,
        approval_id: str | None = None,
        timeout: float | None = None,
        on_timeout: OnTimeout = "reject",
    ) -> Approval:
        """Hold a decision for a person; it belongs to the chain being handled now.

        Args:
            kind: what is waiting (``retrain``, ``promote``...), shown to people.
            summary: one line saying what approving would do, and why.
            on_approve: carries the decision out; called with the reason.
            on_reject: undoes any reservation; called with the reason.
            details: evidence shown with the approval.
            approval_id: the id people type (default: 8 random hex digits).
            timeout: seconds after which ``on_timeout`` applies (``None``: never).
            on_timeout: ``reject`` (default), ``approve`` or ``hold`` (keep waiting).
        """
        correlation, _ = chains.current()
        approval = Approval(
            id=approval_id or secrets.token_hex(4),  # short: people type it
            kind=kind,
            summary=summary,
            on_approve=on_approve,
            on_reject=on_reject,
            details=dict(details or {}),
            correlation_id=correlation,
            timeout=timeout,
            on_timeout=on_timeout,
        )
        self._pending[approval.id] = approval
        if timeout is not None:
            self._changed.set()
        return approval

    def take(self, approval_id: str) -> Approval:
        """Remove a waiting approval to decide it; whoever takes it decides it, once.

        Raises:
            NotFound: nothing by that id waits here.
        """
        approval = self._pending.pop(approval_id, None)
        if approval is None:
            waiting = ", ".join(self._pending) or "none"
            raise NotFound(f"no approval {approval_id!r} is waiting (waiting: {waiting})")
        return approval

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
        """Apply each approval's timeout policy when its deadline passes; until cancelled."""
        while True:
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
            deadlines = [d for a in self._pending.values() if (d := a.deadline()) is not None]
            delay = max(0.0, min(deadlines) - clocks.now()) if deadlines else None
            # One sleep until the next deadline (or a new hold), on the loop's
            # clock like the deadlines: no polling, and a fake clock jumps to it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)

    async def _expire(self, approval: Approval) -> None:
        policy = approval.on_timeout
        # Taken (or marked) before the first await: an operator deciding it at
        # this moment finds it gone, so it is carried out or dropped once.
        if policy == "hold":
            approval.overdue = True
        elif self._pending.pop(approval.id, None) is None:
            return  # decided by a person meanwhile
        reason = f"nobody decided within {approval.timeout:g} s"
        logger.warning(
            "agent %r: approval %s (%s) timed out; policy: %s",
            self.agent, approval.id, approval.summary, policy,
        )  # fmt: skip
        # In the chain of the decision that held it, as a person's decision is.
        event = await self.record(
            "control",
            "expired",
            {"approval": approval.id, "kind": approval.kind, "summary": approval.summary,
             "policy": policy, "reason": reason},
            correlation_id=approval.correlation_id,
        )  # fmt: skip
        if policy != "hold":
            self.carry_out(policy, approval, reason, event)


def _passed(approval: Approval, now: float) -> bool:
    deadline = approval.deadline()
    return deadline is not None and now >= deadline

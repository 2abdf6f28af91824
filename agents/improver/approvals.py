"""Plans that wait for a person: approve or reject, with a reason, before a timeout."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from scanflow_agents import NotFound


@dataclass
class PendingPlan:
    """A plan held for approval; ``execute`` carries it out once approved."""

    id: str
    kind: str
    workflow: str
    summary: str
    evidence: dict[str, Any]
    execute: Callable[[], Awaitable[Any]] = field(repr=False)
    created: float = field(default_factory=time.monotonic)

    def describe(self, now: float, timeout: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "workflow": self.workflow,
            "summary": self.summary,
            "evidence": self.evidence,
            "waiting_s": round(now - self.created, 1),
            "expires_in_s": round(max(0.0, self.created + timeout - now), 1),
        }


class Approvals:
    """The plans waiting for approval, by id."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pending: dict[str, PendingPlan] = {}

    def hold(self, plan: PendingPlan) -> None:
        self.pending[plan.id] = plan

    def take(self, plan_id: str) -> PendingPlan:
        plan = self.pending.pop(plan_id, None)
        if plan is None:
            waiting = ", ".join(self.pending) or "none"
            raise NotFound(f"no plan {plan_id!r} waits for approval (waiting: {waiting})")
        return plan

    def expired(self, now: float | None = None) -> list[PendingPlan]:
        now = time.monotonic() if now is None else now
        gone = [p for p in self.pending.values() if now - p.created >= self.timeout]
        for plan in gone:
            del self.pending[plan.id]
        return gone

    def listing(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [plan.describe(now, self.timeout) for plan in self.pending.values()]

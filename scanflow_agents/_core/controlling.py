"""Control messages: what an operator (the console, ``scanflow pause``...) asks of an agent.

Every agent answers on ``scanflow.<ns>.<agent>.control.<op>``:

===============  ==========================================  ==========================
op               params                                      answered by
===============  ==========================================  ==========================
``run-sensor``   ``sensor``                                  one replica (queue group)
``pause``        ``sensor`` (optional), ``reason``           every replica
``resume``       ``sensor`` (optional)                       every replica
``dry-run``      ``on`` (bool)                               every replica
``approvals``                                                every replica
``approve``      ``id``, ``reason``                          every replica (the holder acts)
``reject``       ``id``, ``reason``                          every replica (the holder acts)
===============  ==========================================  ==========================

Replies are the usual :class:`~scanflow_agents.messages.Reply`, with the
replica's instance in the result, so a caller that gathers the answers of
every replica can tell them apart. Each op that changes something is recorded
as the event ``control.<agent>.<op>`` (caller, params, reason, outcome); an
approval is recorded in the chain of the decision that asked for it.

Decisions waiting for a human are a core facility: an agent holds them with
``self.approvals.hold(...)`` and the ops above list, approve and
reject them. Who may send which op is decided by the actuators' allow-list
(``settings.agent.allow``, see ``allowing.py``) under the name
``control.<op>``, and then by :attr:`Controller.authorize` if set: given the
op and the request envelope, it returns why the op is refused, or ``None``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scanflow_agents import chains
from scanflow_agents._core import allowing
from scanflow_agents.errors import BadInput, CallError, ErrorCode, NotFound
from scanflow_agents.messages import (
    ApprovalListing,
    Envelope,
    ErrorInfo,
    PendingApproval,
    Reply,
    new_id,
    utcnow,
)
from scanflow_agents.transports.base import Message, Subscription

if TYPE_CHECKING:
    from scanflow_agents._core.running import AgentRuntime

logger = logging.getLogger("scanflow_agents.controlling")

BROADCAST_OPS = ("pause", "resume", "dry-run", "approvals", "approve", "reject")
OPS = ("run-sensor", *BROADCAST_OPS)

Decide = Callable[[str], Awaitable[Any]]
Authorize = Callable[[str, Envelope], str | None]


@dataclass
class Approval:
    """A decision waiting for a person.

    ``on_approve`` and ``on_reject`` are called with the person's reason; what
    ``on_approve`` returns is recorded as the approval's outcome.
    """

    id: str
    kind: str
    summary: str
    on_approve: Decide = field(repr=False)
    on_reject: Decide | None = field(default=None, repr=False)
    details: dict[str, Any] = field(default_factory=dict)
    correlation_id: str = field(default_factory=new_id)
    timeout: float | None = None
    created: datetime = field(default_factory=utcnow)
    created_monotonic: float = field(default_factory=time.monotonic)

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


class Approvals:
    """The approvals one agent replica holds, by id."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.pending: dict[str, Approval] = {}

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
    ) -> Approval:
        """Hold a decision for a person; it belongs to the chain being handled now.

        Args:
            kind: what is waiting (``retrain``, ``promote``...), shown to people.
            summary: one line saying what approving would do, and why.
            on_approve: carries the decision out; called with the reason.
            on_reject: undoes any reservation; called with the reason.
            details: evidence shown with the approval.
            approval_id: the id people type (default: 8 random hex digits).
            timeout: seconds after which :meth:`expired` hands the approval back.
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
        )
        self.pending[approval.id] = approval
        return approval

    def take(self, approval_id: str) -> Approval:
        approval = self.pending.pop(approval_id, None)
        if approval is None:
            waiting = ", ".join(self.pending) or "none"
            raise NotFound(f"no approval {approval_id!r} is waiting (waiting: {waiting})")
        return approval

    def expired(self) -> list[Approval]:
        """Remove and return the approvals whose timeout has passed (the agent decides)."""
        now = time.monotonic()
        gone = [
            a
            for a in self.pending.values()
            if a.timeout is not None and now - a.created_monotonic >= a.timeout
        ]
        for approval in gone:
            del self.pending[approval.id]
        return gone

    def listing(self) -> ApprovalListing:
        now = time.monotonic()
        return ApprovalListing(
            instance=self.runtime.instance,
            approvals=tuple(a.listing(self.runtime.agent.name, now) for a in self.pending.values()),
        )


class Controller:
    """Answers the control messages of one agent replica."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.approvals = Approvals(runtime)
        self.authorize: Authorize | None = None

    @property
    def paused_sensors(self) -> dict[str, str]:
        """Sensors an operator paused, with why (the reactor skips them)."""
        return self.runtime.reactor.paused_sensors

    @property
    def dry_run(self) -> bool:
        return bool(self.runtime.dispatcher.settings.dry_run)

    def sensor_paused(self, sensor_id: str) -> bool:
        return sensor_id in self.paused_sensors

    def summary(self) -> dict[str, Any]:
        """What heartbeats say about control: dry-run, paused sensors, approvals waiting."""
        return {
            "dry_run": self.dry_run,
            "paused_sensors": sorted(self.paused_sensors),
            "approvals": len(self.approvals.pending),
        }

    async def subscribe(self) -> list[Subscription]:
        """Listen for control messages: run-sensor in the queue group, the rest on every replica."""
        runtime, name = self.runtime, self.runtime.agent.name
        subjects, subscribe = runtime.subjects, runtime.transport.subscribe
        return [
            await subscribe(
                subjects.control(name, "run-sensor"),
                self._on_message,
                queue=subjects.queue(name),
            ),
            *[
                await subscribe(subjects.control(name, op), self._on_message)
                for op in BROADCAST_OPS
            ],
        ]

    async def _on_message(self, message: Message) -> None:
        # Like calls, each control message runs in its own tracked task: a sensor
        # run or an approved plan may take long, and stop() must wait for it.
        op = message.subject.rsplit(".", 1)[-1]
        self.runtime.tasks.spawn(self._serve(op, message), name=f"control:{op}")

    async def _serve(self, op: str, message: Message) -> None:
        agent = self.runtime.agent.name
        try:
            request = Envelope.decode(message.data)
            params = request.payload if isinstance(request.payload, dict) else {}
        except ValueError as exc:
            await self._respond(message, None, _failure(ErrorCode.BAD_MESSAGE, str(exc)))
            return
        # The actuators' allow-list decides for control ops too, under the name
        # `control.<op>` (e.g. `agent.allow: {"control.approve": ["operator:alice"]}`).
        allow = self.runtime.settings.agent.allow
        refusal = allowing.refusal(allow, agent, f"control.{op}", request.source)
        if refusal is None and self.authorize is not None:
            refusal = self.authorize(op, request)
        if refusal is not None:
            reply = _failure(ErrorCode.REJECTED, f"{op} on agent '{agent}' refused: {refusal}")
            await self._respond(message, request, reply)
            return
        try:
            result = await self._handle(op, params, request)
            reply = Reply(ok=True, result={"instance": self.runtime.instance, **result})
        except CallError as exc:
            reply = _failure(exc.code, exc.message, field=exc.field)
        except Exception as exc:
            logger.exception("control %s on agent %r failed", op, agent)
            reply = _failure(ErrorCode.HANDLER_FAILED, f"{op} failed: {type(exc).__name__}: {exc}")
        await self._respond(message, request, reply)

    async def _respond(self, message: Message, request: Envelope | None, reply: Reply) -> None:
        if reply.error is not None:
            reply.error.details = {"instance": self.runtime.instance}
        envelope = Envelope(
            kind="reply",
            source=self.runtime.agent.name,
            payload=reply.model_dump(exclude_none=True),
            correlation_id=request.correlation_id if request else new_id(),
            causation_id=request.id if request else None,
        )
        await message.respond(envelope.encode())

    async def _handle(self, op: str, params: dict[str, Any], request: Envelope) -> dict[str, Any]:
        if op == "run-sensor":
            return await self._run_sensor(_text(params, "sensor"))
        if op == "approvals":
            return self.approvals.listing().model_dump(mode="json")
        if op in ("approve", "reject"):
            return await self._decide(op, _text(params, "id"), _text(params, "reason"), request)
        if op == "pause":
            return await self._pause(params, request)
        if op == "resume":
            return await self._resume(params, request)
        if op == "dry-run":
            return await self._dry_run(params, request)
        raise NotFound(f"unknown control op {op!r} (ops: {', '.join(OPS)})")

    async def _run_sensor(self, sensor: str) -> dict[str, Any]:
        self._known_sensor(sensor)
        refusal = self.runtime.refusal()
        if refusal is None and self.sensor_paused(sensor):
            refusal = f"sensor '{sensor}' is paused: {self.paused_sensors[sensor]}"
        if refusal is not None:
            return {"sensor": sensor, "ran": False, "skipped": refusal}
        observation = await self.runtime.run_sensor(sensor)
        return {
            "sensor": sensor,
            "ran": True,
            "observation": None if observation is None else observation.value,
            "correlation_id": None if observation is None else observation.correlation_id,
        }

    async def _pause(self, params: dict[str, Any], request: Envelope) -> dict[str, Any]:
        reason = str(params.get("reason") or f"paused by {request.source}")
        sensor = params.get("sensor")
        if sensor:
            self._known_sensor(str(sensor))
            self.paused_sensors[str(sensor)] = reason
        else:
            self.runtime.pause(reason)
        await self._record("pause", {"sensor": sensor, "reason": reason}, request)
        return {"paused": sensor or "agent", "reason": reason}

    async def _resume(self, params: dict[str, Any], request: Envelope) -> dict[str, Any]:
        sensor = params.get("sensor")
        if sensor:
            self._known_sensor(str(sensor))
            self.paused_sensors.pop(str(sensor), None)
        else:
            self.runtime.resume()
        await self._record("resume", {"sensor": sensor}, request)
        return {"resumed": sensor or "agent"}

    async def _dry_run(self, params: dict[str, Any], request: Envelope) -> dict[str, Any]:
        on = params.get("on")
        if not isinstance(on, bool):
            raise BadInput("dry-run needs 'on' as true or false", field="on")
        # The dispatcher decides dry runs from the agent settings it was given.
        dispatcher = self.runtime.dispatcher
        dispatcher.settings = dispatcher.settings.model_copy(update={"dry_run": on})
        await self._record("dry-run", {"on": on}, request)
        return {"dry_run": on}

    async def _decide(
        self, op: str, approval_id: str, reason: str, request: Envelope
    ) -> dict[str, Any]:
        if approval_id not in self.approvals.pending:
            # Another replica may hold it: the caller merges the answers of all.
            raise NotFound(f"no approval {approval_id!r} waits on instance {self.runtime.instance}")
        approval = self.approvals.take(approval_id)
        payload: dict[str, Any] = {
            "approval": approval.id,
            "kind": approval.kind,
            "summary": approval.summary,
            "reason": reason,
            "approved": op == "approve",
        }
        event = await self._record(op, payload, request, correlation_id=approval.correlation_id)
        handler = approval.on_approve if op == "approve" else approval.on_reject
        if handler is not None:
            self.runtime.tasks.spawn(
                self._carry_out(op, approval, handler, reason, event), name=f"{op}:{approval.id}"
            )
        return {**payload, "correlation_id": approval.correlation_id}

    async def _carry_out(
        self, op: str, approval: Approval, handler: Decide, reason: str, cause: Envelope
    ) -> None:
        # Runs in the approval's chain, so what the plan does reads back with it.
        with chains.within(approval.correlation_id, cause.id):
            try:
                outcome = {"ok": True, "result": await handler(reason)}
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("%s of %s on agent %r failed", op, approval.id, approval.kind)
                outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            await self.runtime.recorder.record(
                "control",
                f"{op}-done",
                {"approval": approval.id, "kind": approval.kind, **outcome},
                correlation_id=approval.correlation_id,
                causation_id=cause.id,
            )

    async def _record(
        self,
        op: str,
        payload: dict[str, Any],
        request: Envelope,
        *,
        correlation_id: str | None = None,
    ) -> Envelope:
        logger.info("agent %r: %s by %s: %s", self.runtime.agent.name, op, request.source, payload)
        return await self.runtime.recorder.record(
            "control",
            op,
            {**payload, "caller": request.source, "instance": self.runtime.instance},
            correlation_id=correlation_id or request.correlation_id,
            causation_id=request.id,
        )

    def _known_sensor(self, sensor: str) -> None:
        if sensor not in self.runtime.agent.sensors:
            known = ", ".join(sorted(self.runtime.agent.sensors)) or "none"
            raise NotFound(
                f"agent '{self.runtime.agent.name}' has no sensor '{sensor}' (sensors: {known})",
            )


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"'{name}' is required (a non-empty text)", field=name)
    return value


def _failure(code: str, message: str, *, field: str | None = None) -> Reply:
    return Reply(ok=False, error=ErrorInfo(code=code, message=message, field=field))

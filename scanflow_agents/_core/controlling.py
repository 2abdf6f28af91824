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
``freeze``       a :class:`~scanflow_agents.messages.Freeze`  every replica of every agent
===============  ==========================================  ==========================

``freeze`` is sent once to the whole namespace (``scanflow.<ns>.control.freeze``)
and kept in its switches bucket by the operator's side, which a replica reads
at start (:meth:`Controller.restore`): one switch stops every action of the
namespace, for the day a policy misbehaves across a fleet.

Replies are the usual :class:`~scanflow_agents.messages.Reply`, with the
replica's instance in the result, so a caller that gathers the answers of
every replica can tell them apart. Each op that changes something is recorded
as the event ``control.<agent>.<op>`` (caller, params, reason, outcome); an
approval is recorded in the chain of the decision that asked for it.

Decisions waiting for a human are a core facility: an agent holds them with
``self.approvals.hold(...)`` (``approvals.py``, which also applies their
timeout policy) and the ops above list, approve and reject them. Who may
send which op is decided by the actuators' allow-list
(``settings.agent.allow``, see ``allowing.py``) under the name
``control.<op>``, and then by :attr:`Controller.authorize` if set: given the
op and the request envelope, it returns why the op is refused, or ``None``.

The Controller is the only writer of the agent's
:class:`~scanflow_agents._core.switches.ControlState` (pause, sensor pauses,
dry-run); it is built with the few ports it uses, not with the runtime.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from scanflow_agents._core import allowing
from scanflow_agents._core.approvals import Approvals, Verdict
from scanflow_agents._core.ports import AgentSpec, Record, RunSensor, Spawn
from scanflow_agents._core.switches import ControlState, Switch
from scanflow_agents._core.wire import failure as _failure
from scanflow_agents.errors import BadInput, CallError, ErrorCode, NotFound, Rejected
from scanflow_agents.messages import Envelope, Freeze, Reply, new_id
from scanflow_agents.sensors import sensor_of
from scanflow_agents.settings import AgentSettings
from scanflow_agents.transports.base import Message

logger = logging.getLogger("scanflow_agents.controlling")

BROADCAST_OPS = ("pause", "resume", "dry-run", "approvals", "approve", "reject")
NAMESPACE_OPS = ("freeze",)
OPS = ("run-sensor", *BROADCAST_OPS, *NAMESPACE_OPS)

Authorize = Callable[[str, Envelope], str | None]


class Controller:
    """Answers the control messages of one agent replica.

    Args:
        agent: the agent (its name, and its sensors' ids to check).
        instance: this replica's id, in every answer and record.
        settings: the agent settings whose allow-list decides who may send an op.
        controls: the operator's switches, which only this class changes.
        approvals: the decisions waiting for a person.
        run_sensor: runs a sensor now (``run-sensor``).
        record: records each change as a ``control`` event.
        spawn: starts a tracked task (a stopping agent waits for it).
    """

    def __init__(
        self,
        agent: AgentSpec,
        *,
        instance: str,
        settings: AgentSettings,
        controls: ControlState,
        approvals: Approvals,
        run_sensor: RunSensor,
        record: Record,
        spawn: Spawn,
    ) -> None:
        self.agent = agent
        self.instance = instance
        self.settings = settings
        self.controls = controls
        self.approvals = approvals
        self.run_sensor = run_sensor
        self.record = record
        self.spawn = spawn
        self.authorize: Authorize | None = None

    def summary(self) -> dict[str, Any]:
        """What heartbeats say about control: dry-run, freeze, paused sensors, approvals."""
        now = self.controls.snapshot()
        return {
            "dry_run": now.dry_run.on,
            "frozen": now.frozen.on,
            "paused_sensors": now.paused_sensors,
            "approvals": len(self.approvals),
        }

    async def on_message(self, message: Message) -> None:
        """The callback of the control subscriptions (``subjects.control(agent, op)``)."""
        # Like calls, each control message runs in its own tracked task: a sensor
        # run or an approved plan may take long, and stop() must wait for it.
        op = message.subject.rsplit(".", 1)[-1]
        self.spawn(self._serve(op, message), f"control:{op}")

    async def _serve(self, op: str, message: Message) -> None:
        agent = self.agent.name
        try:
            request = Envelope.decode(message.data)
            params = request.payload if isinstance(request.payload, dict) else {}
        except ValueError as exc:
            await self._respond(message, None, _failure(ErrorCode.BAD_MESSAGE, str(exc)))
            return
        # The actuators' allow-list decides for control ops too, under the name
        # `control.<op>` (e.g. `agent.allow: {"control.approve": ["operator:alice"]}`).
        refusal = allowing.refusal(self.settings.allow, agent, f"control.{op}", request.source)
        # The settings' allow-list first, then the hook: the hook can only refuse
        # more, never let in a caller the settings keep out.
        if refusal is None and self.authorize is not None:
            refusal = self.authorize(op, request)
        if refusal is not None:
            reply = _failure(ErrorCode.REJECTED, f"{op} on agent '{agent}' refused: {refusal}")
            await self._respond(message, request, reply)
            return
        try:
            result = await self._handle(op, params, request)
            reply = Reply(ok=True, result={"instance": self.instance, **result})
        except CallError as exc:
            reply = _failure(exc.code, exc.message, field=exc.field)
        except Exception as exc:
            logger.exception("control %s on agent %r failed", op, agent)
            reply = _failure(ErrorCode.HANDLER_FAILED, f"{op} failed: {type(exc).__name__}: {exc}")
        await self._respond(message, request, reply)

    async def _respond(self, message: Message, request: Envelope | None, reply: Reply) -> None:
        # Every replica answers a broadcast op: the instance says which one refused.
        if reply.error is not None:
            reply.error.details = {"instance": self.instance}
        envelope = Envelope(
            kind="reply",
            source=self.agent.name,
            payload=reply.model_dump(exclude_none=True),
            correlation_id=request.correlation_id if request else new_id(),
            causation_id=request.id if request else None,
        )
        await message.respond(envelope.encode())

    async def _handle(self, op: str, params: dict[str, Any], request: Envelope) -> dict[str, Any]:
        if op == "run-sensor":
            return await self._run_sensor(_text(params, "sensor"))
        if op in ("approvals", "approve", "reject"):
            # What a replica that stopped cleanly left is listed and decided
            # by whichever replica is asked first (one adopts each).
            await self.approvals.adopt()
        if op == "approvals":
            return self.approvals.listing().model_dump(mode="json")
        if op in ("approve", "reject"):
            verdict: Verdict = "approve" if op == "approve" else "reject"
            return await self._decide(
                verdict, _text(params, "id"), _text(params, "reason"), request
            )
        if op == "pause":
            return await self._pause(params, request)
        if op == "resume":
            return await self._resume(params, request)
        if op == "dry-run":
            return await self._dry_run(params, request)
        if op == "freeze":
            return await self._freeze(params, request)
        raise NotFound(f"unknown control op {op!r} (ops: {', '.join(OPS)})")

    async def _run_sensor(self, sensor: str) -> dict[str, Any]:
        self._known_sensor(sensor)
        # A paused sensor is not run by hand either: the pause is an operator's word,
        # and another operator's run-sensor must not bypass it unseen.
        refusal = self.controls.sensor_refusal(sensor)
        if refusal is not None:
            return {"sensor": sensor, "ran": False, "skipped": refusal}
        observation = await self.run_sensor(sensor)
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
            self.controls.pause_sensor(str(sensor), reason, by=request.source)
        else:
            self.controls.pause_agent(reason, by=request.source)
        # Switched first, recorded after: the record may wait for room in a full
        # backlog, and a pause is most wanted when an agent floods the stream.
        await self._record("pause", {"sensor": sensor, "reason": reason}, request)
        return {"paused": sensor or "agent", "reason": reason}

    async def _resume(self, params: dict[str, Any], request: Envelope) -> dict[str, Any]:
        sensor = params.get("sensor")
        if sensor:
            self._known_sensor(str(sensor))
            self.controls.resume_sensor(str(sensor), by=request.source)
        else:
            self.controls.resume_agent(by=request.source)
        await self._record("resume", {"sensor": sensor}, request)
        return {"resumed": sensor or "agent"}

    async def _dry_run(self, params: dict[str, Any], request: Envelope) -> dict[str, Any]:
        on = params.get("on")
        if not isinstance(on, bool):
            raise BadInput("dry-run needs 'on' as true or false", field="on")
        refusal = self.controls.dry_run_refusal(on)
        if refusal is not None:
            raise Rejected(refusal)
        self.controls.set_dry_run(on, by=request.source)
        await self._record("dry-run", {"on": on}, request)
        return {"dry_run": on}

    def restore(self, data: bytes | None) -> None:
        """Start frozen if the namespace's switches bucket says so (``data``: its record)."""
        if data is None:
            return
        try:
            freeze = Freeze.read(json.loads(data), agent="the switches bucket")
        except (ValueError, CallError) as exc:
            # Refusing to start would take the agent away when it is needed;
            # starting unfrozen is what the operator sees (heartbeats say it).
            logger.error(
                "agent %r cannot read the namespace's freeze (%s); not frozen", self.agent.name, exc
            )
            return
        self.controls.set_freeze(Switch(freeze.on, freeze.by, freeze.at, freeze.reason))
        if freeze.on:
            logger.warning(
                "agent %r starts frozen (by %s: %s): its actions are refused until unfrozen",
                self.agent.name,
                freeze.by,
                freeze.reason,
            )

    async def _freeze(self, params: dict[str, Any], request: Envelope) -> dict[str, Any]:
        try:
            freeze = Freeze.read(params, agent=request.source)
        except CallError as exc:
            raise BadInput(f"freeze: {exc.message}") from exc
        self.controls.set_freeze(Switch(freeze.on, freeze.by, freeze.at, freeze.reason))
        await self._record("freeze", {"on": freeze.on, "reason": freeze.reason}, request)
        return {"agent": self.agent.name, "frozen": freeze.on}

    async def _decide(
        self, verdict: Verdict, approval_id: str, reason: str, request: Envelope
    ) -> dict[str, Any]:
        if approval_id not in self.approvals:
            # Another replica may hold it: the caller merges the answers of all.
            raise NotFound(f"no approval {approval_id!r} waits on instance {self.instance}")
        # Taken before the first await: the timer (or a second operator) finds
        # it gone, so it is decided once.
        approval = self.approvals.take(approval_id, verdict)
        await self.approvals.forget(approval)
        payload: dict[str, Any] = {
            "approval": approval.id,
            "kind": approval.kind,
            "summary": approval.summary,
            "reason": reason,
            "approved": verdict == "approve",
        }
        event = await self._record(
            verdict, payload, request, correlation_id=approval.correlation_id
        )
        # Carried out after the verdict is recorded: the verdict's event is the cause
        # of what the plan does, so the chain reads back in that order.
        self.approvals.carry_out(verdict, approval, reason, event)
        return {**payload, "correlation_id": approval.correlation_id}

    async def _record(
        self,
        op: str,
        payload: dict[str, Any],
        request: Envelope,
        *,
        correlation_id: str | None = None,
    ) -> Envelope:
        logger.info("agent %r: %s by %s: %s", self.agent.name, op, request.source, payload)
        return await self.record(
            "control",
            op,
            {**payload, "caller": request.source, "instance": self.instance},
            correlation_id=correlation_id or request.correlation_id,
            causation_id=request.id,
        )

    def _known_sensor(self, sensor: str) -> None:
        sensor_of(self.agent.name, self.agent.sensors, sensor)


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    # Blank counts as missing: a reason made of spaces says nothing in the audit
    # trail, and an id of spaces names nothing.
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"'{name}' is required (a non-empty text)", field=name)
    return value

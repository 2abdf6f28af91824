"""Actuator dispatch: validate, guard, execute, record, reply.

The same path serves calls from the wire and local calls, so a local call is
validated and guarded exactly like a remote one. Every outcome, including a
refusal, is a structured :class:`~scanflow_agents.messages.Reply`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from scanflow_agents import chains
from scanflow_agents._core import allowing
from scanflow_agents._core.executing import execute
from scanflow_agents._core.guards import IdempotencyCache, Throttle
from scanflow_agents._core.instruments import NO_INSTRUMENTS, Instruments
from scanflow_agents._core.ports import Record, Refusal, never_refuse
from scanflow_agents._core.recording import jsonable
from scanflow_agents.errors import CallError, ErrorCode
from scanflow_agents.messages import Envelope, ErrorInfo, Reply
from scanflow_agents.redaction import shown_params
from scanflow_agents.settings import AgentSettings

if TYPE_CHECKING:
    from scanflow_agents.agents import Agent

logger = logging.getLogger("scanflow_agents.dispatching")


def failure(
    code: ErrorCode, message: str, *, field: str | None = None, details: Any = None
) -> Reply:
    return Reply(
        ok=False, error=ErrorInfo(code=code, message=message, field=field, details=details)
    )


class Dispatcher:
    """Serves the actuators of one agent.

    Args:
        agent: the agent whose actuators run (passed to them as ``self``).
        settings: dry-run, idempotency and handler defaults.
        record: keeps the action records (the runtime's recorder).
        refusal: why the agent refuses calls now (paused), or ``None``.
        instruments: told of every call and its reply (the pod's metrics).
    """

    def __init__(
        self,
        agent: Agent,
        settings: AgentSettings,
        *,
        record: Record,
        refusal: Refusal = never_refuse,
        instruments: Instruments = NO_INSTRUMENTS,
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.instruments = instruments
        self.record = record
        self.refusal = refusal
        self.cache = IdempotencyCache(
            size=settings.idempotency_size, window=settings.idempotency_window
        )
        self.throttles = {aid: Throttle(spec) for aid, spec in self.agent.actuators.items()}
        self.executions: dict[str, int] = {}

    async def dispatch(
        self, actuator_id: str, call: Envelope, respond: Callable[[Reply], Awaitable[None]]
    ) -> None:
        """Handle one call envelope addressed to ``actuator_id``.

        ``respond`` is given the reply as soon as it is known; the action is
        recorded after that, so recording never adds to the caller's latency.
        """
        respond = self.instruments.call_answered(self.agent.name, actuator_id, respond)
        spec = self.agent.actuators.get(actuator_id)
        body = call.payload if isinstance(call.payload, dict) else {}
        if spec is None or not spec.idempotent:
            reply, record = await self._run(actuator_id, body, call)
        else:
            earlier = self.cache.lookup(call.id)
            if earlier is not None:
                logger.info(
                    "call %s to %s of agent %r is a redelivery; answering from its first reply",
                    call.id,
                    spec,
                    self.agent.name,
                )
                await respond(await earlier)
                return
            future = self.cache.begin(call.id)
            try:
                reply, record = await self._run(actuator_id, body, call)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved here, so an unawaited future does not warn
                raise
            future.set_result(reply)
        await respond(reply)
        read_only = spec is not None and spec.read_only
        # A read changes nothing: recorded only if asked for, and marked as a read.
        if record is not None and (not read_only or self.settings.record_reads):
            await self.record(
                "action",
                actuator_id,
                {**record, "read_only": True} if read_only else record,
                correlation_id=call.correlation_id,
                causation_id=call.id,
            )

    async def _run(
        self, actuator_id: str, body: dict[str, Any], call: Envelope
    ) -> tuple[Reply, dict[str, Any] | None]:
        """The reply to a call, and the action record to keep (``None``: nothing was attempted)."""
        spec = self.agent.actuators.get(actuator_id)
        if spec is None:
            known = ", ".join(sorted(self.agent.actuators)) or "none"
            return failure(
                ErrorCode.NOT_FOUND,
                f"agent '{self.agent.name}' has no actuator '{actuator_id}' (actuators: {known})",
            ), None
        name = f"actuator '{actuator_id}' of agent '{self.agent.name}'"
        raw = body.get("params", {})
        if not isinstance(raw, dict):
            return failure(
                ErrorCode.BAD_INPUT,
                f"{name} needs params as an object, got {type(raw).__name__}",
                field="params",
            ), None
        try:
            params = spec.validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            path = ".".join(str(part) for part in first["loc"])
            return failure(
                ErrorCode.BAD_INPUT,
                f"bad argument '{path}' for {name}: {first['msg']}",
                field=path,
                details=jsonable(exc.errors(include_url=False, include_context=False)),
            ), None
        shown = shown_params(params)  # what records and echoes show: secrets masked
        # A read-only actuator changes nothing, so dry-run answers it for real.
        dry_run = (bool(body.get("dry_run")) or self.settings.dry_run) and not spec.read_only
        throttle = self.throttles[actuator_id]
        refusal = (
            self.refusal()
            or allowing.refusal(self.settings.allow, self.agent.name, actuator_id, call.source)
            or throttle.refusal(time.monotonic())
        )
        if refusal is not None:
            reply = failure(ErrorCode.REJECTED, f"{name} refused the call: {refusal}")
            return reply, _action(shown, call, reply, 0.0, dry_run)
        if dry_run:
            # Validated and guarded like a real call, but nothing is executed.
            reply = Reply(
                ok=True, result={"dry_run": True, "actuator": actuator_id, "params": shown}
            )
            return reply, _action(shown, call, reply, 0.0, True)
        arguments = {field: getattr(params, field) for field in type(params).model_fields}
        throttle.started(time.monotonic())
        self.executions[actuator_id] = self.executions.get(actuator_id, 0) + 1
        with chains.within(call.correlation_id, call.id):
            outcome = await execute(
                spec,
                self.agent.name,
                lambda: spec.fn(self.agent, **arguments),
                self.settings.handlers,
            )
        if outcome.ok:
            throttle.succeeded(time.monotonic())
            reply = Reply(ok=True, result=jsonable(outcome.result))
        elif isinstance(outcome.error, CallError):
            # The handler refused the call itself (a bad value only it can see,
            # a missing workflow): pass its code and field on unchanged.
            error = outcome.error
            reply = failure(
                error.code, f"{name}: {error.message}", field=error.field, details=error.details
            )
        elif outcome.timed_out:
            reply = failure(ErrorCode.TIMEOUT, f"{name} {outcome.error_text}")
        else:
            reply = failure(
                ErrorCode.HANDLER_FAILED,
                f"{name} failed: {type(outcome.error).__name__}: {outcome.error_text}",
            )
        return reply, _action(shown, call, reply, outcome.duration, False)


def _action(
    raw: dict[str, Any], call: Envelope, reply: Reply, duration: float, dry_run: bool
) -> dict[str, Any]:
    """The payload of an ``action`` event."""
    payload: dict[str, Any] = {
        "params": raw,
        "caller": call.source,
        "call_id": call.id,
        "ok": reply.ok,
        "duration": round(duration, 6),
        "dry_run": dry_run,
    }
    if reply.ok:
        payload["result"] = reply.result
    elif reply.error is not None:
        payload["error"] = reply.error.model_dump(exclude_none=True)
    return payload

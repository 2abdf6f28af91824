"""Actuator dispatch: admit, validate, guard, execute, record, reply.

The same path serves calls from the wire and local calls, so a local call is
validated and guarded exactly like a remote one. Every outcome, including a
refusal, is a structured :class:`~scanflow_agents.messages.Reply`. In order:

1. screening: an unreadable envelope (``bad_message``), an unknown actuator
   (``not_found``), bad arguments (``bad_input``, details bounded);
2. admission (wire calls): beyond ``max_inflight`` calls in flight, or with
   the record backlog full, a valid call is answered ``busy`` at once;
   nothing runs;
3. a keyed call (the caller chose its id) is claimed in the shared store; a
   call already done is answered from it, one started elsewhere is waited
   for while its executor lives, else answered ``in_doubt`` (see guards.py);
4. guards (paused, cooldown, rate), then the actuator itself;
5. the action record is stored (JetStream acknowledged) before the reply is
   sent; if the stream does not take it (within ``record_timeout``), the
   reply says so. With ``reply_after="sent"`` the reply only waits until the
   record is written to the connection, ahead of it;
6. a reply over the server's max payload becomes ``too_large``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from scanflow_agents import chains
from scanflow_agents._core import allowing, wire
from scanflow_agents._core.budgets import ActionBudget, BudgetUnavailable
from scanflow_agents._core.consuming import decode
from scanflow_agents._core.executing import Outcome, execute
from scanflow_agents._core.guards import CallStore, Claim, Replies, Throttle, call_key
from scanflow_agents._core.instruments import NO_INSTRUMENTS, Instruments, Respond
from scanflow_agents._core.ports import (
    AgentSpec,
    DryRun,
    Refusal,
    Spawn,
    never_dry,
    never_refuse,
)
from scanflow_agents._core.recording import NotStored, Recorder, jsonable
from scanflow_agents._core.wire import failure
from scanflow_agents._kit import clocks
from scanflow_agents.actuators import ActuatorSpec
from scanflow_agents.errors import CallError, ErrorCode
from scanflow_agents.messages import Envelope, Reply, utcnow
from scanflow_agents.redaction import shown_params
from scanflow_agents.settings import AgentSettings
from scanflow_agents.transports.base import Message, TransportError

logger = logging.getLogger("scanflow_agents.dispatching")

Alive = Callable[[str], Awaitable[bool]]
"""Whether the replica of this agent with that instance id still runs."""

# Bounds of what a refusal may carry back: never the caller's whole input.
MAX_ERRORS = 10
MAX_TEXT = 300
POLL = 0.25  # seconds between looks at a call another replica is running


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more)"


class Dispatcher:
    """Serves the actuators of one agent.

    Args:
        agent: the agent whose actuators run (passed to them as ``self``).
        settings: limits, idempotency and handler defaults. Its ``dry_run`` is
            not read here: the agent's ``ControlState`` starts from it, and
            ``dry_run`` below reads that.
        recorder: stores the action records (the reply waits for them).
        store: the shared idempotency store of keyed calls.
        spawn: starts a call's task, tracked by the runtime.
        alive: whether a replica (by instance id) of this agent still runs.
        budget: the namespace's action budget, if one is set (every action claims from it).
        refusal: why the agent refuses calls now (paused), or ``None``.
        frozen: why the namespace refuses actions now (frozen), or ``None``;
            read-only actuators still answer.
        dry_run: whether the agent is in dry-run now. Both are read from the
            agent's ``ControlState``; the dispatcher never changes them.
        instruments: told of every call and its reply (the pod's metrics).
    """

    def __init__(
        self,
        agent: AgentSpec,
        settings: AgentSettings,
        *,
        recorder: Recorder,
        store: CallStore,
        spawn: Spawn,
        alive: Alive,
        budget: ActionBudget | None = None,
        refusal: Refusal = never_refuse,
        frozen: Refusal = never_refuse,
        dry_run: DryRun = never_dry,
        instruments: Instruments = NO_INSTRUMENTS,
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.recorder = recorder
        self.store = store
        self.spawn = spawn
        self.alive = alive
        self.budget = budget
        self.refusal = refusal
        self.frozen = frozen
        self.dry_run = dry_run
        self.instruments = instruments
        self.replies = Replies(
            max_bytes=settings.idempotency_bytes, window=settings.idempotency_window
        )
        self.throttles = {aid: Throttle(spec) for aid, spec in agent.actuators.items()}
        self.executions: dict[str, int] = {}
        self.inflight = 0
        self.busy = 0  # calls refused for want of room, since start

    # -- the wire ------------------------------------------------------------------------

    async def on_call(self, message: Message) -> None:
        """The call subscription's callback: answer or admit at once, then serve in a task.

        What needs no state is answered here, one message at a time: an
        unreadable envelope, an unknown actuator, bad arguments. A valid call
        beyond the in-flight limit (or with the record backlog full) is
        answered ``busy`` before anything runs; the caller retries with backoff.
        """
        # The subject names the actuator (scanflow.<ns>.<agent>.act.<actuator>); the
        # envelope does not, so a call runs what its subject was routed to.
        actuator = message.subject.rsplit(".", 1)[-1]
        answered = self.instruments.call_answered(self.agent.name, actuator, _sent)
        try:
            call = decode(message.data, "call")
        except ValueError as exc:
            text = clip(str(exc))  # an unknown field's name may be as long as the message
            logger.warning(
                "agent %r got a malformed call on %s: %s", self.agent.name, message.subject, text
            )
            reply = failure(
                ErrorCode.BAD_MESSAGE, f"agent '{self.agent.name}' cannot read the call: {text}"
            )
            await answered(reply)
            await message.respond(self._encode(reply, None))
            return
        # Screening needs no state: done in the callback, a flood of bad calls takes
        # no task and no in-flight slot.
        screened = self._screen(actuator, call)
        if isinstance(screened, Reply):
            await answered(screened)
            await message.respond(self._encode(screened, call))
            return
        # Refused before any task exists: a task per refused call would be the very
        # load the limit sheds. With the record backlog full, a call that acted would
        # leave a record with no room to wait in: refused too, so the audit trail stays
        # whole, and the caller's backoff gives the stream time.
        if self.inflight >= self.settings.max_inflight or self.recorder.full:
            self.busy += 1
            why = (
                f"{self.inflight} calls in flight (max_inflight {self.settings.max_inflight})"
                if not self.recorder.full
                else f"{len(self.recorder.backlog)} records wait to be stored"
            )
            reply = failure(
                ErrorCode.BUSY, f"agent '{self.agent.name}' is busy: {why}; retry shortly"
            )
            await answered(reply)
            await message.respond(self._encode(reply, call))
            return
        # Counted here, not in the task: the next message, read before this task
        # starts, must already see the slot taken.
        self.inflight += 1
        self.spawn(self._serve_message(screened, call, message, answered), f"call:{actuator}")

    async def _serve_message(
        self, valid: _Valid, call: Envelope, message: Message, answered: Respond
    ) -> None:
        try:
            reply, data = await self._serve(valid, call, wire=True)
        except Exception as exc:  # a bug of ours: the caller must not wait its whole timeout
            logger.exception("agent %r failed to serve call %s", self.agent.name, call.id)
            reply = failure(
                ErrorCode.HANDLER_FAILED,
                f"agent '{self.agent.name}' failed to serve the call: {type(exc).__name__}",
            )
            data = self._encode(reply, call)
        finally:
            # A call that failed must give its slot back too, or the agent would end
            # up answering every call `busy`.
            self.inflight -= 1
        assert data is not None
        await answered(reply)
        await message.respond(data)

    def _encode(self, reply: Reply, call: Envelope | None) -> bytes:
        payload = reply.model_dump(exclude_none=True)
        # An unreadable call has no id to answer to: the reply starts a chain of its own.
        if call is None:
            return wire.dumps(wire.envelope("reply", self.agent.name, payload))
        return wire.dumps(
            wire.envelope(
                "reply",
                self.agent.name,
                payload,
                correlation_id=call.correlation_id,
                causation_id=call.id,
            )
        )

    # -- one call ------------------------------------------------------------------------

    async def call_local(self, actuator_id: str, call: Envelope) -> Reply:
        """Serve a call this agent makes to itself (no wire, same checks and records)."""
        answered = self.instruments.call_answered(self.agent.name, actuator_id, _sent)
        reply, _ = await self.serve(actuator_id, call, wire=False)
        await answered(reply)
        return reply

    async def serve(
        self, actuator_id: str, call: Envelope, *, wire: bool
    ) -> tuple[Reply, bytes | None]:
        """The reply to a call (and, for the wire, its bytes), once its record is stored."""
        screened = self._screen(actuator_id, call)
        if isinstance(screened, Reply):
            return screened, self._encode(screened, call) if wire else None
        return await self._serve(screened, call, wire=wire)

    def _screen(self, actuator_id: str, call: Envelope) -> Reply | _Valid:
        """The call's actuator and validated arguments, or the refusal (nothing recorded)."""
        spec = self.agent.actuators.get(actuator_id)
        if spec is None:
            known = ", ".join(sorted(self.agent.actuators)) or "none"
            return failure(
                ErrorCode.NOT_FOUND,
                clip(
                    f"agent '{self.agent.name}' has no actuator '{actuator_id}' "
                    f"(actuators: {known})"
                ),
            )
        name = _Name(actuator_id, self.agent.name)
        body = call.payload if isinstance(call.payload, dict) else {}
        raw = body.get("params", {})
        if not isinstance(raw, dict):
            return failure(
                ErrorCode.BAD_INPUT,
                f"{name} needs params as an object, got {type(raw).__name__}",
                field="params",
            )
        try:
            params = spec.validate(raw)
        except ValidationError as exc:
            return _bad_input(name, exc)
        return _Valid(spec, name, body, params)

    async def _serve(
        self, valid: _Valid, call: Envelope, *, wire: bool
    ) -> tuple[Reply, bytes | None]:
        spec, body = valid.spec, valid.body
        actuator_id = spec.id
        # Only a keyed call is deduplicated, and never its dry run: a dry run keyed
        # like the real call would be replayed as the real call's answer.
        key = (
            call_key(actuator_id, call.id)
            if body.get("keyed") and not body.get("dry_run")
            else None
        )
        # The replica's own runs first: a duplicate delivered here waits on the run in
        # progress without a round trip to the shared store.
        earlier = await self._earlier(key) if key else None
        if earlier is not None:
            logger.info(
                "call %s to %s of agent %r is a redelivery; answering from its first reply",
                call.id,
                spec,
                self.agent.name,
            )
            return earlier, self._encode(earlier, call) if wire else None
        if key:
            self.replies.begin(key)
        reply: Reply | None = None
        # `finish` in `finally`: a run that failed or was cancelled must still wake the
        # duplicates waiting on it (they then try for themselves); only a success is
        # kept for them to replay.
        try:
            reply, record = await self._attempt(valid, call, key)
        finally:
            if key:
                kept = reply if reply is not None and reply.ok else None
                self.replies.finish(key, kept, _size(kept) if kept else 0)
        data = self._encode(reply, call) if wire else None
        if data is not None and len(data) > (limit := self._max_payload()):
            # The action ran; its record keeps the result (shrunk if need be).
            if record is not None:
                record["reply_too_large"] = {"size": len(data), "limit": limit}
            reply = failure(
                ErrorCode.TOO_LARGE,
                f"the reply of actuator '{actuator_id}' of agent '{self.agent.name}' is "
                f"{len(data)} bytes, over the server's max payload of {limit} bytes; "
                f"the action ran and its record keeps the outcome (call id {call.id})",
                details={"size": len(data), "limit": limit},
            )
            data = self._encode(reply, call)
        # A read changes nothing: recorded only if asked for, and marked as a read.
        if record is not None and spec.read_only:
            record = {**record, "read_only": True} if self.settings.record_reads else None
        if record is not None:
            unrecorded = await self._store_record(actuator_id, record, call)
            if unrecorded is not None:
                reply = reply.model_copy(update={"unrecorded": unrecorded})
                data = self._encode(reply, call) if wire else None
        return reply, data

    def _max_payload(self) -> int:
        return self.recorder.transport.max_payload

    async def _earlier(self, key: str) -> Reply | None:
        """The kept reply of a finished duplicate, after waiting for one still running here."""
        while True:
            found = self.replies.lookup(key)
            if found is None or isinstance(found, Reply):
                return found
            # Shielded: awaiting the shared future directly, a duplicate that is
            # cancelled (its agent stopping) would cancel it for every other waiter.
            reply = await asyncio.shield(found)
            if reply is not None:
                return reply
            # The first run failed or was refused: this one tries for itself.

    async def _store_record(
        self, actuator_id: str, record: dict[str, Any], call: Envelope
    ) -> str | None:
        """Queue the action record and wait until it is stored (or sent); why not, if it was not.

        With ``reply_after="sent"`` the wait ends once the record is written to
        the connection: the server reads it before the reply that follows.
        """
        _, stored = self.recorder.enqueue(
            "action",
            actuator_id,
            record,
            correlation_id=call.correlation_id,
            causation_id=call.id,
            track=True,
            until=self.settings.reply_after,
        )
        assert stored is not None
        # No timer per call: the recorder settles the future on every attempt,
        # and bounds each attempt by its own timeout.
        try:
            await stored
        except NotStored as exc:
            return (
                f"the stream did not store the record ({exc}); it stays queued and is "
                "stored when the stream takes it"
            )
        except Exception as exc:  # refused for good (logged by the recorder)
            return f"the stream refused the record: {exc}"
        return None

    async def _attempt(
        self, valid: _Valid, call: Envelope, key: str | None
    ) -> tuple[Reply, dict[str, Any] | None]:
        """The reply to a call, and the action record to keep (``None``: nothing was attempted)."""
        spec, name, body, params = valid
        actuator_id = spec.id
        shown = shown_params(params)  # what records and echoes show: secrets masked
        # A read-only actuator changes nothing, so dry-run answers it for real.
        dry_run = (bool(body.get("dry_run")) or self.dry_run()) and not spec.read_only
        # The claim comes before every other check: a duplicate of a call that ran is
        # answered from the store even when the agent would now refuse the call.
        if key is not None:
            try:
                answer = await self._claim(spec, key, call, name)
            except TransportError as exc:
                # The shared call store is unreachable (NATS away, its bucket
                # electing a leader): acting unclaimed could run the call twice.
                reply = failure(
                    ErrorCode.UNAVAILABLE,
                    f"{name} cannot claim call {call.id} in the shared call store now "
                    f"({exc}); try again",
                )
                return reply, None
            if answer is not None:
                return answer, None
        # Checked after the claim: a duplicate of a finished call is answered from the
        # store as before; a new call is refused, and lets go of its claim so that it
        # can be sent again.
        unstored = self.recorder.unstored
        if unstored is not None and self.settings.unrecorded == "refuse" and not spec.read_only:
            # Nothing is done that the audit trail could not show: the caller
            # may try again once the stream stores (NATS back, a leader elected).
            if key is not None:
                await self.store.release(key)
            reply = failure(
                ErrorCode.UNAVAILABLE,
                f"{name} acts on nothing it cannot record, and the stream cannot store "
                f"records now ({unstored}); try again when it does "
                "(settings.agent.unrecorded='act' would act anyway)",
            )
            return reply, None
        throttle = self.throttles[actuator_id]
        # Cooldowns and rates run on the loop's clock (see _kit/clocks.py).
        clock = clocks.now
        refusal = (
            self.refusal()
            or (None if spec.read_only or dry_run else self.frozen())  # reads, trials pass
            or allowing.refusal(self.settings.allow, self.agent.name, actuator_id, call.source)
            or throttle.refusal(clock())
        )
        # A refusal is recorded as an action that did not run (operators see who was
        # turned away and why), and lets go of the key: the same call id may be sent
        # again once the cause is gone.
        if refusal is not None:
            if key is not None:
                await self.store.release(key)
            reply = failure(ErrorCode.REJECTED, f"{name} refused the call: {refusal}")
            return reply, _action(shown, call, reply, 0.0, dry_run)
        if dry_run:
            # Validated and guarded like a real call, but nothing is executed.
            reply = Reply(
                ok=True, result={"dry_run": True, "actuator": actuator_id, "params": shown}
            )
            return reply, _action(shown, call, reply, 0.0, True)
        if not spec.read_only and (spent := await self._spend(name)) is not None:
            if key is not None:
                await self.store.release(key)
            return spent, _action(shown, call, spent, 0.0, dry_run)
        arguments = params.__dict__  # the validated fields (the model forbids extras)
        # The rate counts starts, so a failing actuator is limited too; the cooldown
        # counts from the last success, so a failure may be retried at once.
        throttle.started(clock())
        self.executions[actuator_id] = self.executions.get(actuator_id, 0) + 1
        # Calls and records the handler makes join this call's chain: the audit trail
        # reads the whole story back with `history --correlation`.
        with chains.within(call.correlation_id, call.id):
            outcome = await execute(
                spec,
                self.agent.name,
                lambda: spec.fn(self.agent, **arguments),
                self.settings.handlers,
            )
        reply = _reply(name, outcome)
        if outcome.ok:
            throttle.succeeded(clock())
        if key is not None:
            await self._settle(key, call, reply)
        return reply, _action(shown, call, reply, outcome.duration, False)

    async def _spend(self, name: _Name) -> Reply | None:
        """Take one action from the namespace's budget; the refusal, if it is spent.

        Last of the guards, so that a call refused for another reason (paused,
        cooling down, not allowed) or only dry-run takes nothing from it.
        """
        if self.budget is None:
            return None
        try:
            spent = await self.budget.claim()
        except BudgetUnavailable as exc:
            return failure(ErrorCode.UNAVAILABLE, f"{name} cannot act now: {exc}; try again")
        if spent is None:
            return None
        return failure(ErrorCode.REJECTED, f"{name} refused the call: {spent}")

    async def _settle(self, key: str, call: Envelope, reply: Reply) -> None:
        """Keep a success in the shared store; forget anything else, so it may be retried."""
        try:
            if reply.ok:
                await self.store.done(key, call.id, reply, self._max_payload())
            else:
                await self.store.release(key)
        except Exception as exc:  # the reply still goes out; a retry may then be in doubt
            logger.warning(
                "agent %r could not keep the outcome of call %s in the shared store: %s",
                self.agent.name,
                call.id,
                exc,
            )

    async def _claim(
        self, spec: ActuatorSpec, key: str, call: Envelope, name: _Name
    ) -> Reply | None:
        """Claim a keyed call for this run; or the answer when another run claimed it first."""
        claim = await self.store.claim(key, call.id)
        while claim is not None:
            if claim.state == "done":
                if claim.reply is None:
                    return failure(
                        ErrorCode.TOO_LARGE,
                        f"{name} completed call {call.id} before, but its reply was too large "
                        "to keep for a redelivery; its record holds the outcome",
                    )
                return Reply.model_validate(claim.reply)
            if spec.idempotent:
                logger.warning(
                    "%s: call %s was started by instance %s and did not finish; running it "
                    "again (the actuator is declared idempotent)",
                    name,
                    call.id,
                    claim.instance,
                )
                await self.store.take_over(key, call.id)
                break
            if not await self._may_still_finish(spec, claim):
                return failure(
                    ErrorCode.IN_DOUBT,
                    f"{name}: call {call.id} was started by instance {claim.instance} at "
                    f"{claim.started} and never said how it ended (its process stopped); it was "
                    "not run again. Check the audit trail ('started' and 'action' records of "
                    "this call) before calling again with a new id",
                    details=claim.start_record(),
                )
            await asyncio.sleep(POLL)
            claim = await self.store.read(key)
            if claim is None:  # the other run failed and let go: ours to try
                claim = await self.store.claim(key, call.id)
        # Recorded once the claim is ours: with the `action` record written after the
        # run, a `started` without its `action` is a run whose process stopped mid-way,
        # what an `in_doubt` answer sends people to look for.
        self.recorder.enqueue(
            "started",
            spec.id,
            {"call_id": call.id, "caller": call.source, "instance": self.store.instance},
            correlation_id=call.correlation_id,
            causation_id=call.id,
        )
        return None

    async def _may_still_finish(self, spec: ActuatorSpec, claim: Claim) -> bool:
        """Whether the run that claimed a call could still end with an answer."""
        try:
            started = datetime.fromisoformat(claim.started)
            elapsed = (utcnow() - started).total_seconds()
        # A start time that cannot be read proves nothing: taken as long past, so
        # the call is answered in doubt rather than waited for forever.
        except ValueError:
            elapsed = float("inf")
        # Time first: past the longest run its retries allow, the other replica's
        # executor has given up on the call even if the replica lives, and no message
        # needs to ask it.
        if elapsed > _longest_run(spec, self.settings):
            return False
        return await self.alive(claim.instance)


class _Valid(NamedTuple):
    """A call that passed screening: its actuator, name, payload and validated arguments."""

    spec: ActuatorSpec
    name: _Name
    body: dict[str, Any]
    params: BaseModel


class _Name:
    """``actuator 'x' of agent 'y'``, formatted only when a message needs it (not per call)."""

    __slots__ = ("actuator", "agent")

    def __init__(self, actuator: str, agent: str) -> None:
        self.actuator, self.agent = actuator, agent

    def __str__(self) -> str:
        return f"actuator '{self.actuator}' of agent '{self.agent}'"


async def _sent(reply: Reply) -> None:
    """What the instruments wrap: nothing, the dispatcher sends the reply's bytes itself."""


def _size(reply: Reply) -> int:
    """The encoded size of a reply kept for duplicates (what the byte budget counts)."""
    return len(wire.dumps(reply.model_dump(exclude_none=True)))


def _longest_run(spec: ActuatorSpec, settings: AgentSettings) -> float:
    """How long a run of ``spec`` can last with every retry and backoff, plus a margin."""
    handlers = settings.handlers
    timeout = spec.options.timeout or handlers.timeout
    retries = spec.options.retries if spec.options.retries is not None else handlers.retries
    backoff = spec.options.backoff if spec.options.backoff is not None else handlers.backoff
    waits = sum(min(backoff * 2**i, handlers.max_backoff) for i in range(retries))
    # A run ends with its record stored, hence record_timeout; the second covers
    # the store writes around it and two replicas' clocks that differ a little.
    return float(timeout * (retries + 1) + waits + settings.record_timeout + 1.0)


def _bad_input(name: _Name, exc: ValidationError) -> Reply:
    # Without the offending input and with bounded messages: a refusal must
    # not echo a megabyte back, nor a secret.
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    first = errors[0]
    path = ".".join(str(part) for part in first["loc"])
    details = [{**jsonable(error), "msg": clip(str(error["msg"]))} for error in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        details.append({"more": len(errors) - MAX_ERRORS})
    return failure(
        ErrorCode.BAD_INPUT,
        clip(f"bad argument '{path}' for {name}: {first['msg']}"),
        field=clip(path),
        details=details,
    )


def _reply(name: _Name, outcome: Outcome) -> Reply:
    if outcome.ok:
        return Reply(ok=True, result=jsonable(outcome.result))
    error = outcome.error
    if isinstance(error, CallError) and error.agent is not None:
        # A call this handler made failed: the handler failed, not the caller's
        # request, and the cause says where.
        cause = {
            "code": str(error.code),
            "agent": error.agent,
            "actuator": error.actuator,
            "message": clip(error.message),
        }
        return failure(
            ErrorCode.HANDLER_FAILED,
            f"{name} failed: its call to actuator '{error.actuator}' of agent '{error.agent}' "
            f"failed ({error.code}): {clip(error.message)}",
            details={"cause": cause},
        )
    if isinstance(error, CallError):
        # The handler refused the call itself (a bad value only it can see,
        # a missing workflow): pass its code and field on unchanged.
        return failure(
            error.code, f"{name}: {error.message}", field=error.field, details=error.details
        )
    if outcome.timed_out:
        return failure(ErrorCode.TIMEOUT, f"{name} {outcome.error_text}")
    return failure(
        ErrorCode.HANDLER_FAILED,
        f"{name} failed: {type(error).__name__}: {outcome.error_text}",
    )


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

"""The caller's side of an actuator call: envelope out, structured reply (or error) back.

Within the caller's timeout a call is sent again, with the same id, when
nothing ran and another try can succeed:

- the agent answered ``busy`` (at its limit of calls in flight): after a
  short backoff, doubled each time;
- nobody answered right after our connection came back from a loss: the
  agents are resubscribing, they are not gone. Otherwise a call to an agent
  that is not running fails at once with :class:`Unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from scanflow_agents._core import wire
from scanflow_agents.errors import (
    BadMessage,
    Busy,
    CallError,
    CallTimeout,
    ErrorCode,
    TooLarge,
    Unavailable,
)
from scanflow_agents.messages import Reply
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import (
    NoResponders,
    Refused,
    RequestTimeout,
    Transport,
    TransportError,
)

logger = logging.getLogger("scanflow_agents.calling")

# Seconds after our connection was restored during which "no responders" means
# "agents still resubscribing", not "no such agent".
RECONNECT_GRACE = 10.0
# `busy` ends as soon as one call in flight ends: the first retry comes after
# milliseconds, the backoff doubles from there.
FIRST_BACKOFF = 0.005
MAX_ID = 128  # the envelope's limit on ids
MAX_BACKOFF = 0.5


def call_envelope(
    source: str,
    target: str,
    actuator: str,
    params: dict[str, Any],
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    call_id: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The envelope of one call, as a mapping; ``call_id`` fixes the message id.

    A call with a ``call_id`` (the idempotency key) says so in its payload
    (``keyed``): the callee then keeps its outcome in the namespace's shared
    store, so that a retry with the same id is answered from it on any
    replica, even after a restart. Calls without one get a fresh id each and
    need no such bookkeeping.

    Raises:
        ValueError: a ``call_id`` or ``correlation_id`` that is empty or over 128 characters.
    """
    for label, value in (("call_id", call_id), ("correlation_id", correlation_id)):
        if value is not None and not 0 < len(value) <= MAX_ID:
            raise ValueError(f"{label} must have 1 to {MAX_ID} characters, got {len(value)}")
    payload: dict[str, Any] = {"params": params}
    if dry_run:
        payload["dry_run"] = True
    if call_id:
        payload["keyed"] = True
    return wire.envelope(
        "call",
        source,
        payload,
        target=f"{target}.{actuator}",
        correlation_id=correlation_id,
        causation_id=causation_id,
        id=call_id,
    )


async def remote_call(
    transport: Transport, subjects: Subjects, envelope: dict[str, Any], timeout: float
) -> Any:
    """Send a call envelope and return the result; raise the matching :class:`CallError`.

    Errors of the callee carry ``agent`` and ``actuator``, so a handler that
    lets one escape is told apart from a refusal of its own.
    """
    target, _, actuator = envelope["target"].partition(".")
    subject = subjects.act(target, actuator)
    data = wire.dumps(envelope)
    # Refused before sending, with both sizes: the caller learns what to shrink
    # rather than meeting a transport error.
    if len(data) > transport.max_payload:
        raise _origin(
            TooLarge(
                f"the call to '{actuator}' of agent '{target}' is {len(data)} bytes, over the "
                f"server's max payload of {transport.max_payload} bytes",
                details={"size": len(data), "limit": transport.max_payload},
            ),
            target,
            actuator,
        )
    deadline = time.monotonic() + timeout
    backoff = FIRST_BACKOFF
    while True:
        remaining = deadline - time.monotonic()
        try:
            reply = await _request(transport, subject, data, max(remaining, 0.001), target)
            result = result_of(reply)
        except (Busy, Unavailable) as exc:
            # The callee said so before acting: full, or unable to record or claim
            # the call now (its stream or call store electing a leader). Asking
            # again within the timeout is safe, and a failover is seconds.
            if remaining <= backoff:
                raise _origin(exc, target, actuator) from None
        except NoResponders:
            if not _reconnecting(transport) or remaining <= backoff:
                raise _origin(
                    Unavailable(
                        f"no agent '{target}' is running in namespace '{subjects.namespace}' "
                        f"(nobody answers on {subject})"
                    ),
                    target,
                    actuator,
                ) from None
        except RequestTimeout:
            # Not retried: the callee may have run the call, and sending it again
            # could act twice.
            raise _origin(
                CallTimeout(
                    f"agent '{target}' did not answer the call to '{actuator}' within {timeout:g} s"
                ),
                target,
                actuator,
            ) from None
        except Refused as exc:
            raise _origin(TooLarge(str(exc)), target, actuator) from None
        except TransportError as exc:  # not connected: wait for the reconnect
            if remaining <= backoff:
                raise _origin(
                    Unavailable(f"cannot reach agent '{target}': {exc}"), target, actuator
                ) from None
        except CallError as exc:
            raise _origin(exc, target, actuator) from None
        else:
            return result
        # Jittered, so that callers pushed back together do not return together.
        await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
        backoff = min(backoff * 2, MAX_BACKOFF)


class _ReplyEnvelope(BaseModel):
    """What a caller reads of a reply envelope: its payload, validated in the same pass."""

    payload: Reply


async def _request(
    transport: Transport, subject: str, data: bytes, timeout: float, target: str
) -> Reply:
    raw = await transport.request(subject, data, timeout)
    try:
        return _ReplyEnvelope.model_validate_json(raw).payload
    except ValidationError as exc:
        raise BadMessage(f"agent '{target}' sent a malformed reply: {exc}") from None


def _reconnecting(transport: Transport) -> bool:
    last = transport.last_reconnect
    return not transport.connected or (
        last is not None and time.monotonic() - last < RECONNECT_GRACE
    )


def _origin(error: CallError, agent: str, actuator: str) -> CallError:
    error.agent, error.actuator = agent, actuator
    return error


def result_of(reply: Reply) -> Any:
    """The result of a reply, or its error raised as the matching :class:`CallError`."""
    if reply.ok:
        if reply.unrecorded:
            logger.warning("the action's record is not stored yet: %s", reply.unrecorded)
        return reply.result
    error = reply.error
    if error is None:
        raise CallError("the reply says the call failed but carries no error")
    raise CallError.from_code(error.code, error.message, field=error.field, details=error.details)


TEMPORARY_CODES = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT, ErrorCode.BUSY})
"""Codes of a downstream call that another try may cure (retried by the handler's knobs)."""

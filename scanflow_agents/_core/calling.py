"""The caller's side of an actuator call: envelope out, structured reply (or error) back."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from scanflow_agents.errors import BadMessage, CallError, CallTimeout, Unavailable
from scanflow_agents.messages import Envelope, Reply
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import NoResponders, RequestTimeout, Transport


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
) -> Envelope:
    """The envelope of one call; ``call_id`` fixes the message id (the idempotency key)."""
    extra: dict[str, Any] = {}
    if correlation_id:
        extra["correlation_id"] = correlation_id
    if call_id:
        extra["id"] = call_id
    return Envelope(
        kind="call",
        source=source,
        target=f"{target}.{actuator}",
        causation_id=causation_id,
        payload={"params": params, "dry_run": True} if dry_run else {"params": params},
        **extra,
    )


async def remote_call(
    transport: Transport, subjects: Subjects, envelope: Envelope, timeout: float
) -> Any:
    """Send a call envelope and return the result; raise the matching :class:`CallError`."""
    target, _, actuator = (envelope.target or "").partition(".")
    subject = subjects.act(target, actuator)
    try:
        data = await transport.request(subject, envelope.encode(), timeout)
    except NoResponders:
        raise Unavailable(
            f"no agent '{target}' is running in namespace '{subjects.namespace}' "
            f"(nobody answers on {subject})"
        ) from None
    except RequestTimeout:
        raise CallTimeout(
            f"agent '{target}' did not answer the call to '{actuator}' within {timeout:g} s"
        ) from None
    try:
        reply = Reply.model_validate(Envelope.decode(data).payload)
    except ValidationError as exc:
        raise BadMessage(f"agent '{target}' sent a malformed reply: {exc}") from None
    return result_of(reply)


def result_of(reply: Reply) -> Any:
    """The result of a reply, or its error raised as the matching :class:`CallError`."""
    if reply.ok:
        return reply.result
    error = reply.error
    if error is None:
        raise CallError("the reply says the call failed but carries no error")
    raise CallError.from_code(error.code, error.message, field=error.field, details=error.details)
